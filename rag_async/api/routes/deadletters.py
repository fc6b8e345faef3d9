"""The dead-letter queue: list the jobs that gave up, requeue or drop them."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Response

from rag_async.api.auth import admin
from rag_async.api.enqueue import accepted, enqueue_again
from rag_async.api.state import State
from rag_async.domain.errors import NotFound
from rag_async.domain.job import is_job_id
from rag_async.domain.schemas import ErrorBody, JobAccepted
from rag_async.store.webhooks import Webhooks

# Dead letters are anyone's failed jobs: an operator's business, so admin keys only.
router = APIRouter(tags=["dead letters"], dependencies=[Depends(admin)])

_NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": ErrorBody}}


@router.get("/dead-letters")
async def list_dead_letters(state: State) -> dict[str, list[dict[str, Any]]]:
    """Jobs that failed every try, newest first: request, last error, attempts, times; and
    under `webhooks`, the jobs whose webhook failed every try (their jobs stand as they ended)."""
    webhooks = await Webhooks(state.redis, state.keys).dead_letters()
    return {"dead_letters": await state.dead_letters.entries(), "webhooks": webhooks}


@router.post(
    "/dead-letters/{job_id}/requeue",
    status_code=202,
    response_model=JobAccepted,
    responses=_NOT_FOUND,
)
async def requeue(state: State, job_id: Annotated[str, Path()]) -> JobAccepted:
    """Run the job again, with all its tries; its event stream continues where it ended."""
    record = await state.jobs.get(job_id) if is_job_id(job_id) else None
    if record is None or not await state.dead_letters.contains(job_id):
        raise NotFound(f"no dead letter {job_id[:80]!r}")
    await enqueue_again(state, record)
    await state.dead_letters.remove(job_id)
    return accepted(state, JobAccepted, job_id, record.owner)


@router.delete("/dead-letters/{job_id}", status_code=204, responses=_NOT_FOUND)
async def drop(state: State, job_id: Annotated[str, Path()]) -> Response:
    """Forget a dead letter (its job stays failed), and the upload it kept for a requeue."""
    if not await state.dead_letters.remove(job_id):
        raise NotFound(f"no dead letter {job_id[:80]!r}")
    await state.uploads.drop(job_id)
    return Response(status_code=204)
