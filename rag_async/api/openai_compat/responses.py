"""OpenAI's Responses API over the job lifecycle: POST /v1/responses (background, stream, or
wait for the answer), GET /v1/responses/{id} (poll, or stream with `starting_after`), and
POST /v1/responses/{id}/cancel. The same keys, limits, checks and queue as POST /chat."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Query, Request, Response

from rag_async.api.auth import Caller
from rag_async.api.enqueue import Submission
from rag_async.api.errors import json_response
from rag_async.api.openai_compat.answers import owned_answer, wait_for_end, wait_holding
from rag_async.api.openai_compat.file_search import echo as tools_echo
from rag_async.api.openai_compat.file_search import search_bounds, used_tool
from rag_async.api.openai_compat.honoured import (
    refuse_unhonoured_response,
    response_echo,
    response_generation,
)
from rag_async.api.openai_compat.inputs import ResponsesRequest, conversation_of
from rag_async.api.openai_compat.items import input_items, resolved_items
from rag_async.api.openai_compat.pages import PageQuery, list_object, page
from rag_async.api.openai_compat.response_events import first_logged, response_stream
from rag_async.api.openai_compat.wire import response_id as response_id_of
from rag_async.api.openai_compat.wire import response_object, response_status
from rag_async.api.questions import Question, submit_question
from rag_async.api.state import AppState, State
from rag_async.api.stream import counted_stream, given_back_on_error, stream_slot
from rag_async.api.turns import ask_after, ask_in_conversation
from rag_async.api.views import job_view
from rag_async.domain.errors import Conflict, NotFound
from rag_async.domain.job import JOB_ID_HEADER, JobRecord, JobStatus
from rag_async.domain.schemas import ErrorBody
from rag_async.store.conversations import Turn
from rag_async.store.fair_share import Priority
from rag_async.worker.ends import cancel

router = APIRouter(prefix="/v1", tags=["openai"])

# How long a cancel waits for a running answer's worker to stop it, so that the response it
# returns usually says `cancelled` already.
CANCEL_WAIT = 5.0
_SSE: dict[int | str, dict[str, Any]] = {
    200: {"content": {"application/json": {}, "text/event-stream": {}}}
}
_ERRORS: dict[int | str, dict[str, Any]] = {s: {"model": ErrorBody} for s in (404, 409, 422)}


@router.post(
    "/responses",
    responses={**_SSE, **_ERRORS, **{s: {"model": ErrorBody} for s in (400, 504)}},
)
async def create_response(
    body: ResponsesRequest,
    request: Request,
    state: State,
    caller: Caller,
    idempotency_key: Annotated[str | None, Header(alias="idempotency-key")] = None,
) -> Response:
    """Ask a question. `background: true`: the response at once, `queued` (poll or stream it
    by id). `stream: true`: its events as they come. Neither: the completed response. The
    answer runs on a worker either way: a client that leaves loses nothing."""
    refuse_unhonoured_response(body)
    # A background response is nobody's wait: interactive questions go first (fair_share.py).
    priority: Priority = "background" if body.background else "interactive"
    submission = Submission(state, request, caller, priority=priority)
    if body.background:
        job_id = await _ask(submission, body, idempotency_key)
        record = await owned_answer(state, caller, job_id)
        response = response_object(record, state.settings)
        return json_response(response, headers={JOB_ID_HEADER: job_id})
    release = stream_slot(state, caller)  # before the job: a refused request leaves none
    job_id = await given_back_on_error(release, _ask(submission, body, idempotency_key))
    headers = {JOB_ID_HEADER: job_id}
    if body.stream:
        record = await given_back_on_error(release, owned_answer(state, caller, job_id))
        return _event_source(state, record, None, headers, release)
    record = await wait_holding(state, job_id, release, f"GET /v1/responses/{job_id}")
    response = response_object(record, state.settings)
    return json_response(response, headers=headers)


async def _ask(submission: Submission, body: ResponsesRequest, idempotency_key: str | None) -> str:
    """Queue the request's question with the turns before it: its input messages', and the
    previous response's own history and turn, or its conversation's (a `conversation`, or the
    previous response's). A response that continues one still answering goes in turn, as
    `multitask` says (api/turns.py). The job's id."""
    state, caller = submission.state, submission.caller
    history: list[Turn] = []
    if isinstance(body.input, str):
        text = body.input
    else:
        text, history = conversation_of(await resolved_items(state, caller, body.input))
    tool = used_tool(body)
    where = await search_bounds(state, caller, tool) if tool is not None else {}
    echo = {**response_echo(body), **tools_echo(body, tool), "input_turns": len(history)}

    def asked(text: str, history: list[Turn]) -> Question:
        generation = response_generation(body)
        question = Question(text, body.collection, history, generation=generation, v1=echo)
        return dataclasses.replace(question, **where)  # the file_search tool's stores'

    conversation_id = body.conversation_id
    if body.previous_response_id is not None:
        previous = await owned_answer(state, caller, body.previous_response_id)
        conversation_id = conversation_id or previous.conversation_id
        if conversation_id is None and not previous.status.ended:
            question = asked(text, history=history)
            return await ask_after(submission, question, previous, body.multitask, idempotency_key)
        if previous.status.ended and previous.status is not JobStatus.COMPLETE:
            raise Conflict(
                f"response {body.previous_response_id} is {response_status(previous.status)}: "
                "only a completed response can be followed up",
                code="previous_response_not_completed",
            )
        if conversation_id is None:
            turn = Turn(question=previous.query or "", answer=previous.answer or "")
            history = [*previous.history, turn, *history]
    question = asked(text, history=history)
    if conversation_id is not None:
        return await ask_in_conversation(
            submission, question, conversation_id, body.multitask, idempotency_key
        )
    return await submit_question(submission, question, idempotency_key)


@router.get("/responses/{response_id}", responses={**_SSE, **_ERRORS})
async def get_response(
    state: State,
    caller: Caller,
    response_id: str,
    stream: bool = False,
    starting_after: Annotated[int | None, Query(ge=0, le=2**53)] = None,
) -> Response:
    """The response as it stands (a running one with its text so far), or with
    `stream=true` its events after `starting_after` (a sequence number), then live."""
    record = await owned_answer(state, caller, response_id)
    if stream:
        return _event_source(state, record, starting_after, {}, stream_slot(state, caller))
    view = await job_view(state, record)  # the answer so far, by the transcript's rule
    return json_response(response_object(record, state.settings, text=view.answer))


@router.post("/responses/{response_id}/cancel", responses=_ERRORS)
async def cancel_response(state: State, caller: Caller, response_id: str) -> Response:
    """Cancel a queued or running response; it is returned as it then stands (`cancelled`,
    once its worker has stopped it). A completed or failed one cannot be cancelled (409)."""
    record = await owned_answer(state, caller, response_id)
    if record.status in (JobStatus.COMPLETE, JobStatus.FAILED):
        raise Conflict(
            f"response {response_id} has already ended: {response_status(record.status)}",
            code="response_ended",
        )
    if not record.status.ended:
        await cancel(state.ends, record)
        # Briefly, and holding no stream slot: a cancel must get through.
        waited = await wait_for_end(state, record.job_id, CANCEL_WAIT)
        record = waited or record
    view = await job_view(state, record)  # what it had written, as GET shows it
    return json_response(response_object(record, state.settings, text=view.answer))


@router.delete("/responses/{response_id}", responses=_ERRORS)
async def delete_response(state: State, caller: Caller, response_id: str) -> Response:
    """Delete a response: one still answering is cancelled first; then nobody can read it
    again (this route, its events, `previous_response_id`, `item_reference`, /jobs/{id})."""
    record = await owned_answer(state, caller, response_id)
    if not record.status.ended:
        await cancel(state.ends, record)
    if not await state.jobs.hide(record.job_id):
        raise NotFound(f"no response {response_id[:80]!r}: it has expired")
    return json_response(
        {"id": response_id_of(record.job_id), "object": "response", "deleted": True}
    )


@router.get("/responses/{response_id}/input_items", responses=_ERRORS)
async def list_input_items(
    state: State,
    caller: Caller,
    response_id: str,
    order: Literal["asc", "desc"] = "desc",
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    after: Annotated[str | None, Query(max_length=200)] = None,
) -> Response:
    """The response's input messages (its question, and the turns given with it), in
    OpenAI's list shape, paged by `after` an item id."""
    record = await owned_answer(state, caller, response_id)
    oldest_first = input_items(record)[::-1]
    query = PageQuery(limit, order, after, None)
    data, more = page(oldest_first, query, lambda item: str(item["id"]))
    return json_response(list_object(data, more))


def _event_source(
    state: AppState,
    record: JobRecord,
    starting_after: int | None,
    headers: dict[str, str],
    release: Callable[[], None],
) -> Response:
    """The job's events after `starting_after`, as a stream holding the slot `release` gives
    back."""
    after = -1 if starting_after is None else starting_after
    if record.status.ended and first_logged(after) > record.last_event_id:
        # Everything sent already; an empty stream rather than one waiting for nothing.
        release()
        return Response(status_code=200, media_type="text/event-stream", headers=headers)
    return counted_stream(state, response_stream(state, record, starting_after), release, headers)
