"""How a job attempt ends when it fails, the same for every kind of job.

A retryable failure with tries left is handed back to arq with a backoff; anything else ends
the job: an `error` event, the record marked failed. Unexpected exceptions count as retryable
(they may be transient), so a job never stays "in progress" forever because of a bug.
"""

from __future__ import annotations

import time

import structlog
from arq import Retry
from arq.constants import retry_key_prefix

from ..activity import record_failure
from ..breaker import BreakerOpen
from ..deadletters import DeadLetters
from ..errors import RagError
from ..eventlog import Superseded
from ..events import CancelledEvent, ErrorEvent
from ..retry import backoff
from .context import WorkerContext

log = structlog.get_logger(__name__)


async def retry_or_fail(ctx: WorkerContext, job_id: str, error: Exception) -> None:
    """Raise `arq.Retry` if another try may help; otherwise record the failure."""
    services = ctx["services"]
    job_try = ctx.get("job_try", 1)
    if isinstance(error, Superseded):
        raise error  # not a failure: jobs/limits.py ends the attempt quietly
    if isinstance(error, RagError):
        message, code, retryable = error.message, error.code, error.retryable
    else:
        log.exception("unexpected error in a job")
        message, code, retryable = f"internal error: {type(error).__name__}", "internal_error", True
    if isinstance(error, BreakerOpen):
        # The provider is known to be down: wait for it without spending a try (arq counts
        # every start, so take this one back).
        await ctx["redis"].decr(retry_key_prefix + job_id)
        log.info("provider paused, job deferred", error=message, defer=error.retry_after)
        raise Retry(defer=error.retry_after) from error
    if retryable and job_try < services.settings.job_max_tries:
        defer = backoff(job_try, getattr(error, "retry_after", None))
        log.warning("attempt failed, will retry", error=message, job_try=job_try, defer=defer)
        raise Retry(defer=defer) from error
    if retryable:
        # Every try failed with an error that might pass: keep it for a person to requeue.
        await give_up(ctx, job_id, f"gave up after {job_try} tries: {message}")
        return
    await fail(ctx, job_id, message, code)


async def give_up(ctx: WorkerContext, job_id: str, message: str) -> None:
    """End the job as failed and keep it in the dead-letter queue, where it can be requeued."""
    await DeadLetters(ctx["redis"], ctx["services"].keys).add(job_id)
    await fail(ctx, job_id, f"{message} (kept in the dead-letter queue)", "dead_lettered")


async def fail(ctx: WorkerContext, job_id: str, message: str, code: str) -> None:
    """The job's last word: an `error` event, and the record marked failed."""
    services = ctx["services"]
    log.error("job failed", error=message, job_try=ctx.get("job_try", 1))
    await record_failure(ctx["redis"], services.keys, job_id, message)
    try:
        await services.events.append(
            job_id,
            ErrorEvent(message=message, code=code),
            {"status": "failed", "error": message, "finished_at": f"{time.time():.6f}"},
            attempt=ctx.get("attempt", 0),
        )
    except Superseded:
        return  # a newer attempt owns the job and will end it
    await services.jobs.keep(job_id)


async def note_cancellation(ctx: WorkerContext, job_id: str) -> None:
    """Called as a job's task is being cancelled. If someone asked for it (DELETE /jobs/{id}),
    end the job as cancelled; otherwise the worker is stopping and the job will run again."""
    services = ctx["services"]
    record = await services.jobs.get(job_id)
    if record is None or not record.text("cancel_requested"):
        return
    await services.events.append(
        job_id,
        CancelledEvent(),
        {"status": "cancelled", "stage": "cancelled", "finished_at": f"{time.time():.6f}"},
        attempt=ctx.get("attempt", 0),
    )
    await services.jobs.keep(job_id)
