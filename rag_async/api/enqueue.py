"""Writing a job record and putting the job on the queue, shared by every accepting route."""

from __future__ import annotations

import hashlib
from typing import Any, TypeVar

from ..errors import BadRequest, Conflict, Overloaded
from ..queues import JOB_KINDS
from ..schemas import JobAccepted
from .state import AppState

A = TypeVar("A", bound=JobAccepted)


async def enqueue(state: AppState, job_id: str, kind: str, fields: dict[str, str]) -> None:
    """Record the job, then enqueue it (a worker may pick it up at once, so record first)."""
    queue = state.keys.queue(JOB_KINDS[kind].lane)
    depth = await state.redis.zcard(queue)
    if depth >= state.settings.max_queue_depth:
        raise Overloaded(
            f"the queue holds {depth} jobs, more than this service takes on; retry shortly",
            retry_after=5,
        )
    await state.jobs.create(job_id, kind, fields)
    await put_on_queue(state, job_id, kind)


async def put_on_queue(state: AppState, job_id: str, kind: str) -> None:
    """Hand an already recorded job to arq, on its kind's queue."""
    job_kind = JOB_KINDS[kind]
    await state.redis.enqueue_job(
        job_kind.function, job_id, _job_id=job_id, _queue_name=state.keys.queue(job_kind.lane)
    )


def accepted(model: type[A], job_id: str, **extra: Any) -> A:
    return model(
        job_id=job_id,
        status_url=f"/job-status?job_id={job_id}",
        events_url=f"/jobs/{job_id}/events",
        **extra,
    )


async def claim_idempotency_key(
    state: AppState, key: str | None, request: bytes, job_id: str
) -> str:
    """The job this request stands for: `job_id` for a new Idempotency-Key (or none), the
    earlier job for a repeat of the same request, 409 for the key reused on another request."""
    if key is None:
        return job_id
    if not 0 < len(key) <= 255:
        raise BadRequest("Idempotency-Key must be 1 to 255 characters", code="bad_idempotency_key")
    redis_key = state.keys.idempotency(hashlib.sha256(key.encode()).hexdigest())
    fingerprint = hashlib.sha256(request).hexdigest()
    claimed = await state.redis.set(
        redis_key, f"{job_id} {fingerprint}", nx=True, ex=state.settings.result_ttl
    )
    if claimed:
        return job_id
    earlier: bytes | None = await state.redis.get(redis_key)
    if earlier is None:  # expired a moment ago: the key is new again
        return await claim_idempotency_key(state, key, request, job_id)
    earlier_job, _, earlier_fingerprint = earlier.decode().partition(" ")
    if earlier_fingerprint != fingerprint:
        raise Conflict(
            "this Idempotency-Key was already used for a different request",
            code="idempotency_key_reused",
        )
    return earlier_job
