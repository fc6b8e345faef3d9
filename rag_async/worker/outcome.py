"""The one decision on how a failed attempt ends, the same for every kind of job.

A provider known to be down defers the job without spending a try; a retryable failure with
tries left is handed back to arq with a backoff; a retryable failure on the last try goes to
the dead-letter queue, where a person can requeue it; anything else fails the job. Unexpected
exceptions count as retryable (they may be transient), so a bug never leaves a job "in
progress" forever. Pure, so every branch is testable without a worker.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from rag_async.domain.errors import RagError
from rag_async.providers.breaker import BreakerOpen
from rag_async.providers.retry import backoff

Action = Literal["defer", "retry", "dead_letter", "fail"]


@dataclass(frozen=True, slots=True)
class Outcome:
    action: Action
    message: str  # for people: the job's `error`
    code: str  # for machines: the `error` event's code
    delay: float = 0.0  # seconds before the next try (defer, retry)


def decide(error: Exception, job_try: int, max_tries: int) -> Outcome:
    """How an attempt that raised `error` on arq's try `job_try` of `max_tries` ends."""
    if isinstance(error, RagError):
        message, code, retryable = error.message, error.code, error.retryable
    else:
        message, code, retryable = f"internal error: {type(error).__name__}", "internal_error", True
    if isinstance(error, BreakerOpen):
        return Outcome("defer", message, code, error.retry_after)
    if not retryable:
        return Outcome("fail", message, code)
    if job_try < max_tries:
        return Outcome(
            "retry", message, code, backoff(job_try, getattr(error, "retry_after", None))
        )
    return given_up(f"gave up after {job_try} tries: {message}")


def given_up(message: str) -> Outcome:
    """The end of a job whose every try failed with an error that might have passed."""
    return Outcome("dead_letter", f"{message} (kept in the dead-letter queue)", "dead_lettered")
