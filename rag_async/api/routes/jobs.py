"""Reading a job: poll its record, or stream its events."""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Path, Query, Response

from rag_async.api.auth import Caller, optional_caller
from rag_async.api.state import AppState, State
from rag_async.api.stream import counted_stream, follow_job, stream_slot
from rag_async.api.views import job_view
from rag_async.domain.errors import BadRequest, Conflict, NotFound, Unauthorized
from rag_async.domain.identity import Principal
from rag_async.domain.job import JobRecord, is_job_id
from rag_async.domain.schemas import ErrorBody, JobCancelled, JobView
from rag_async.worker.ends import cancel

router = APIRouter(tags=["jobs"])

_EVENT_ID = re.compile(r"[0-9]{1,18}")
_NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": ErrorBody}}


async def _load(state: AppState, job_id: str, caller: Principal) -> JobRecord:
    """The caller's job: another key's is not found, exactly like one that never existed."""
    record = await _record(state, job_id)
    if not caller.may_see(record.owner):
        raise _not_found(job_id)
    return record


async def _record(state: AppState, job_id: str) -> JobRecord:
    if not is_job_id(job_id):
        raise NotFound(f"{job_id[:80]!r} is not a job id (job ids are 32 hex characters)")
    record = await state.jobs.get(job_id)
    if record is None or record.deleted:  # deleted as a /v1 response: gone for every reader
        raise _not_found(job_id)
    return record


def _not_found(job_id: str) -> NotFound:
    return NotFound(f"no job {job_id}: it never existed, or its result has expired")


@router.get("/job-status", response_model=JobView, responses=_NOT_FOUND)
async def job_status(state: State, caller: Caller, job_id: Annotated[str, Query()]) -> JobView:
    """Status, stage, partial or final answer, sources, timings, attempts and error."""
    return await job_view(state, await _load(state, job_id, caller))


@router.get("/jobs/{job_id}", response_model=JobView, responses=_NOT_FOUND)
async def get_job(state: State, caller: Caller, job_id: Annotated[str, Path()]) -> JobView:
    return await job_view(state, await _load(state, job_id, caller))


@router.delete(
    "/jobs/{job_id}",
    response_model=JobCancelled,
    responses={**_NOT_FOUND, 409: {"model": ErrorBody}},
)
async def cancel_job(state: State, caller: Caller, job_id: Annotated[str, Path()]) -> JobCancelled:
    """Cancel a job: a queued one at once (`cancelled`), a running one as soon as its worker
    hears of it (`cancelling`; its stream then ends with a `cancelled` event and its LLM stream is
    closed). A client that merely disconnects cancels nothing."""
    record = await _load(state, job_id, caller)
    if record.status.ended:
        raise Conflict(f"job {job_id} has already ended: {record.status}", code="job_ended")
    return JobCancelled(job_id=job_id, status=await cancel(state.ends, record))


@router.get(
    "/jobs/{job_id}/events",
    responses={
        200: {"content": {"text/event-stream": {}}},
        204: {},
        **_NOT_FOUND,
        429: {"model": ErrorBody},
    },
)
async def job_events(
    state: State,
    caller: Annotated[Principal | None, Depends(optional_caller)],
    job_id: Annotated[str, Path()],
    last_event_id_header: Annotated[str | None, Header(alias="last-event-id")] = None,
    last_event_id: Annotated[str | None, Query()] = None,
    token: Annotated[str | None, Query(max_length=200)] = None,
) -> Response:
    """The job's events as Server-Sent Events, from after Last-Event-ID (header, or the
    `last_event_id` query parameter for EventSource), then live until the job ends.
    With API keys, either the key or the `token` of the job's `events_url` lets one in; the
    stream counts as the key's against `RAG_MAX_STREAMS_PER_KEY`, or, with a token, as the
    job's owner's against `RAG_MAX_TOKEN_STREAMS_PER_KEY` (apart, so that a token that leaked
    cannot take the key's own streams)."""
    if caller is not None:
        record = await _load(state, job_id, caller)
    elif token is None:
        raise Unauthorized("an API key, or the token of the job's events_url, is needed")
    else:
        record = await _record(state, job_id)
        if not state.tokens.valid(token, job_id, record.owner or ""):
            raise Unauthorized(
                "this events token is not valid or has expired: "
                f"GET /jobs/{job_id} gives a fresh events_url"
            )
    after = _parse_last_event_id(last_event_id_header or last_event_id)
    if record.status.ended and after >= record.last_event_id:
        # The client has everything. 204 also tells EventSource to stop reconnecting.
        return Response(status_code=204)
    if caller is None:  # an events token: counted apart from the owner's own streams
        release = state.token_streams.take(record.owner or "")
    else:
        release = stream_slot(state, caller)
    return counted_stream(state, follow_job(state, job_id, after), release)


def _parse_last_event_id(value: str | None) -> int:
    if value is None or value == "":
        return 0
    # ASCII digits only (str.isdigit() accepts "²", which int() refuses), and few enough to
    # fit a Redis stream id.
    if _EVENT_ID.fullmatch(value) is None:
        raise BadRequest(f"Last-Event-ID must be a whole number, not {value[:40]!r}")
    return int(value)
