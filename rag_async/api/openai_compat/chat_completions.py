"""OpenAI's chat completions over the job lifecycle: POST /v1/chat/completions.

The last message is the question and the messages before it its conversation. The answer runs
on a worker like any other: streamed as `chat.completion.chunk`s ending in `data: [DONE]`, or
returned whole once the job has ended. The job's id is in the `x-rag-job-id` header, so a
client that dropped the stream can resume at /jobs/{id}/events without losing a word.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Header, Request, Response
from sse_starlette import ServerSentEvent

from rag_async.api.auth import Caller
from rag_async.api.enqueue import Submission
from rag_async.api.errors import json_response
from rag_async.api.openai_compat.answers import StillRunning, wait_for_end, wait_limit
from rag_async.api.openai_compat.inputs import ChatCompletionsRequest, conversation_of
from rag_async.api.openai_compat.wire import COMPLETION_PREFIX, citations, served_model
from rag_async.api.questions import Question, submit_question
from rag_async.api.state import AppState, State
from rag_async.api.stream import CountedEventSource, follow_job
from rag_async.domain.errors import Conflict, RagError
from rag_async.domain.events import CancelledEvent, DoneEvent, ErrorEvent, TokenEvent, decode_event
from rag_async.domain.job import JobRecord, JobStatus
from rag_async.domain.schemas import ErrorBody

router = APIRouter(prefix="/v1", tags=["openai"])


class AnswerFailed(RagError):
    status_code = 502
    code = "answer_failed"


@router.post(
    "/chat/completions",
    responses={
        200: {"content": {"application/json": {}, "text/event-stream": {}}},
        **{status: {"model": ErrorBody} for status in (409, 422, 502, 504)},
    },
)
async def chat_completions(
    body: ChatCompletionsRequest,
    request: Request,
    state: State,
    caller: Caller,
    idempotency_key: Annotated[str | None, Header(alias="idempotency-key")] = None,
) -> Response:
    """Answer the last user message from the documents, with the messages before it as the
    conversation; `stream: true` streams the answer as chunks."""
    text, history = conversation_of(body.messages)
    question = Question(text, body.collection, history)
    job_id = await submit_question(Submission(state, request, caller), question, idempotency_key)
    headers = {"x-rag-job-id": job_id}
    if body.stream:
        return CountedEventSource(
            completion_chunks(state, job_id),
            release=state.streams.take(caller.name),
            ping=int(max(1, state.settings.sse_ping_interval)),
            headers={"Cache-Control": "no-store", **headers},
        )
    record = await wait_for_end(state, caller, job_id, wait_limit(state))
    if record is None:
        raise StillRunning(f"the answer is still being written: follow /jobs/{job_id}/events")
    return json_response(_completion(state, record), headers=headers)


def _completion(state: AppState, record: JobRecord) -> dict[str, Any]:
    if record.status is JobStatus.CANCELLED:
        raise Conflict(f"job {record.job_id} was cancelled", code="cancelled")
    if record.status is not JobStatus.COMPLETE:
        raise AnswerFailed(record.error or "the answer failed")
    text = record.answer or ""
    cited = [
        {"type": "url_citation", "url_citation": {k: v for k, v in a.items() if k != "type"}}
        for a in citations(text, record.sources)
        if a["type"] == "url_citation"
    ]
    message = {"role": "assistant", "content": text, "refusal": None, "annotations": cited}
    return {
        "id": f"{COMPLETION_PREFIX}{record.job_id}",
        "object": "chat.completion",
        "created": int(record.created_at or time.time()),
        "model": served_model(state.settings),
        "choices": [{"index": 0, "message": message, "finish_reason": "stop", "logprobs": None}],
        "usage": None,
    }


async def completion_chunks(state: AppState, job_id: str) -> AsyncIterator[ServerSentEvent]:
    """The job's answer as chunks: the assistant's role first, a chunk per batch of text, the
    finish, then `[DONE]`; a failed or cancelled job ends with an error, as OpenAI's do."""
    base = {
        "id": f"{COMPLETION_PREFIX}{job_id}",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": served_model(state.settings),
    }

    def chunk(delta: dict[str, str], finish: str | None = None) -> ServerSentEvent:
        choice = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
        return ServerSentEvent(data=orjson.dumps({**base, "choices": [choice]}).decode())

    yield chunk({"role": "assistant", "content": ""})
    async for logged in follow_job(state, job_id, 0):
        event = decode_event(logged.data or "{}")
        if isinstance(event, TokenEvent):
            yield chunk({"content": event.text})
        elif isinstance(event, DoneEvent):
            yield chunk({}, "stop")
            yield ServerSentEvent(data="[DONE]")
        elif isinstance(event, ErrorEvent | CancelledEvent):
            error = {"message": event.message, "type": "server_error", "code": event.type}
            yield ServerSentEvent(data=orjson.dumps({"error": error}).decode())
