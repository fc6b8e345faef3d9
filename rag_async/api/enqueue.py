"""Writing a job record and putting the job on the queue, shared by every accepting route."""

from __future__ import annotations

from typing import TypeVar

from ..errors import Overloaded
from ..schemas import JobAccepted
from .state import AppState

A = TypeVar("A", bound=JobAccepted)


async def enqueue(
    state: AppState, function: str, job_id: str, kind: str, fields: dict[str, str]
) -> None:
    """Record the job, then enqueue it (a worker may pick it up at once, so record first)."""
    depth = await state.redis.zcard(state.keys.queue)
    if depth >= state.settings.max_queue_depth:
        raise Overloaded(
            f"the queue holds {depth} jobs, more than this service takes on; retry shortly",
            retry_after=5,
        )
    await state.jobs.create(job_id, kind, fields)
    await state.redis.enqueue_job(function, job_id, _job_id=job_id)


def accepted(model: type[A], job_id: str, **extra: str) -> A:
    return model(
        job_id=job_id,
        status_url=f"/job-status?job_id={job_id}",
        events_url=f"/jobs/{job_id}/events",
        **extra,
    )
