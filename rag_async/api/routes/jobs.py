"""Reading a job: poll its record, or stream its events."""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Query, Response
from sse_starlette import EventSourceResponse

from ...errors import BadRequest, Conflict, NotFound
from ...jobrecord import JobRecord, is_job_id
from ...schemas import ErrorBody, JobCancelled, JobView
from ..state import AppState, State
from ..stream import follow_job
from ..views import job_view

router = APIRouter(tags=["jobs"])

_EVENT_ID = re.compile(r"[0-9]{1,18}")
_NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": ErrorBody}}


async def _load(state: AppState, job_id: str) -> JobRecord:
    if not is_job_id(job_id):
        raise NotFound(f"{job_id[:80]!r} is not a job id (job ids are 32 hex characters)")
    record = await state.jobs.get(job_id)
    if record is None:
        raise NotFound(f"no job {job_id}: it never existed, or its result has expired")
    return record


@router.get("/job-status", response_model=JobView, responses=_NOT_FOUND)
async def job_status(state: State, job_id: Annotated[str, Query()]) -> JobView:
    """Status, stage, partial or final answer, sources, timings, attempts and error."""
    return await job_view(state, await _load(state, job_id))


@router.get("/jobs/{job_id}", response_model=JobView, responses=_NOT_FOUND)
async def get_job(state: State, job_id: Annotated[str, Path()]) -> JobView:
    return await job_view(state, await _load(state, job_id))


@router.delete(
    "/jobs/{job_id}",
    response_model=JobCancelled,
    responses={**_NOT_FOUND, 409: {"model": ErrorBody}},
)
async def cancel_job(state: State, job_id: Annotated[str, Path()]) -> JobCancelled:
    """Cancel a job: a queued one at once (`cancelled`), a running one within a poll of its
    worker (`cancelling`; its stream then ends with a `cancelled` event and its LLM stream is
    closed). A client that merely disconnects cancels nothing."""
    record = await _load(state, job_id)
    if record.status.ended:
        raise Conflict(f"job {job_id} has already ended: {record.status}", code="job_ended")
    return JobCancelled(job_id=job_id, status=await state.cancellation.cancel(record))


@router.get(
    "/jobs/{job_id}/events",
    responses={200: {"content": {"text/event-stream": {}}}, 204: {}, **_NOT_FOUND},
)
async def job_events(
    state: State,
    job_id: Annotated[str, Path()],
    last_event_id_header: Annotated[str | None, Header(alias="last-event-id")] = None,
    last_event_id: Annotated[str | None, Query()] = None,
) -> Response:
    """The job's events as Server-Sent Events, from after Last-Event-ID (header, or the
    `last_event_id` query parameter for EventSource), then live until the job ends."""
    record = await _load(state, job_id)
    after = _parse_last_event_id(last_event_id_header or last_event_id)
    if record.status.ended and after >= record.last_event_id:
        # The client has everything. 204 also tells EventSource to stop reconnecting.
        return Response(status_code=204)
    return EventSourceResponse(
        follow_job(state, job_id, after),
        ping=int(max(1, state.settings.sse_ping_interval)),
        headers={"Cache-Control": "no-store"},
    )


def _parse_last_event_id(value: str | None) -> int:
    if value is None or value == "":
        return 0
    # ASCII digits only (str.isdigit() accepts "²", which int() refuses), and few enough to
    # fit a Redis stream id.
    if _EVENT_ID.fullmatch(value) is None:
        raise BadRequest(f"Last-Event-ID must be a whole number, not {value[:40]!r}")
    return int(value)
