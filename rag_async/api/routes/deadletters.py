"""The dead-letter queues: list the jobs that gave up, and the webhooks that did; requeue or
drop either."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Response

from rag_async.api.auth import admin
from rag_async.api.enqueue import accepted
from rag_async.api.state import State
from rag_async.domain.errors import NotFound
from rag_async.domain.job import is_job_id
from rag_async.domain.schemas import ErrorBody, JobAccepted, WebhookRequeued
from rag_async.worker.ends import forget, requeue

# Dead letters are anyone's failed jobs: an operator's business, so admin keys only.
router = APIRouter(tags=["dead letters"], dependencies=[Depends(admin)])

_NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": ErrorBody}}


@router.get("/dead-letters")
async def list_dead_letters(state: State) -> dict[str, list[dict[str, Any]]]:
    """Jobs that failed every try, newest first: request, last error, attempts, times; and
    under `webhooks`, the jobs whose webhook failed every try (their jobs stand as they ended)."""
    webhooks = await state.webhooks.dead_letters()
    return {"dead_letters": await state.dead_letters.entries(), "webhooks": webhooks}


@router.post(
    "/dead-letters/{job_id}/requeue",
    status_code=202,
    response_model=JobAccepted,
    responses=_NOT_FOUND,
)
async def requeue_job(state: State, job_id: Annotated[str, Path()]) -> JobAccepted:
    """Run the job again, with all its tries; its event stream continues where it ended."""
    record = await state.jobs.get(job_id) if is_job_id(job_id) else None
    if record is None or not await state.dead_letters.contains(job_id):
        raise NotFound(f"no dead letter {job_id[:80]!r}")
    await requeue(state.ends, record)
    return accepted(state, JobAccepted, job_id, record.owner)


@router.delete("/dead-letters/{job_id}", status_code=204, responses=_NOT_FOUND)
async def drop_job(state: State, job_id: Annotated[str, Path()]) -> Response:
    """Forget a dead letter (its job stays failed), and the upload it kept for a requeue."""
    if not await forget(state.ends, job_id):
        raise NotFound(f"no dead letter {job_id[:80]!r}")
    return Response(status_code=204)


@router.post(
    "/dead-letters/webhooks/{job_id}/requeue",
    status_code=202,
    response_model=WebhookRequeued,
    responses=_NOT_FOUND,
)
async def requeue_webhook(state: State, job_id: Annotated[str, Path()]) -> WebhookRequeued:
    """Deliver the job's webhook again, with all its tries: the same message (`webhook-id`),
    so a receiver that did get an earlier try can drop the repeat. The job is not run again."""
    message_id = await state.webhooks.requeue(job_id) if is_job_id(job_id) else None
    if message_id is None:
        raise NotFound(f"no webhook dead letter {job_id[:80]!r}")
    status_url = f"/job-status?job_id={job_id}"
    return WebhookRequeued(job_id=job_id, webhook_id=message_id, status_url=status_url)


@router.delete("/dead-letters/webhooks/{job_id}", status_code=204, responses=_NOT_FOUND)
async def drop_webhook(state: State, job_id: Annotated[str, Path()]) -> Response:
    """Forget a webhook dead letter (the delivery stays failed on its job)."""
    if not await state.webhooks.drop(job_id):
        raise NotFound(f"no webhook dead letter {job_id[:80]!r}")
    return Response(status_code=204)
