"""How a job attempt ends when it fails, the same for every kind of job.

A retryable failure with tries left is handed back to arq with a backoff; anything else ends
the job: an `error` event, the record marked failed. Unexpected exceptions count as retryable
(they may be transient), so a job never stays "in progress" forever because of a bug.
"""

from __future__ import annotations

import time

import structlog
from arq import Retry

from ..activity import record_failure
from ..deadletters import DeadLetters
from ..errors import RagError
from ..events import CancelledEvent, ErrorEvent
from .context import WorkerContext

log = structlog.get_logger(__name__)


async def retry_or_fail(ctx: WorkerContext, job_id: str, error: Exception) -> None:
    """Raise `arq.Retry` if another try may help; otherwise record the failure."""
    services = ctx["services"]
    job_try = ctx.get("job_try", 1)
    if isinstance(error, RagError):
        message, code, retryable = error.message, error.code, error.retryable
    else:
        log.exception("unexpected error in a job")
        message, code, retryable = f"internal error: {type(error).__name__}", "internal_error", True
    if retryable and job_try < services.settings.job_max_tries:
        log.warning("attempt failed, will retry", error=message, job_try=job_try)
        raise Retry(defer=job_try * 2) from error
    if retryable:
        # Every try failed with an error that might pass: keep it for a person to requeue.
        await DeadLetters(ctx["redis"], services.keys).add(job_id)
        message = f"gave up after {job_try} tries, kept in the dead-letter queue: {message}"
        code = "dead_lettered"
    log.error("job failed", error=message, job_try=job_try)
    await record_failure(ctx["redis"], services.keys, job_id, message)
    await services.events.append(
        job_id,
        ErrorEvent(message=message, code=code),
        {"status": "failed", "error": message, "finished_at": f"{time.time():.6f}"},
    )
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
    )
    await services.jobs.keep(job_id)
