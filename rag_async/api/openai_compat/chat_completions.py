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
from rag_async.api.openai_compat.answers import wait_holding
from rag_async.api.openai_compat.honoured import chat_generation, refuse_unhonoured_chat
from rag_async.api.openai_compat.inputs import (
    ChatCompletionsRequest,
    conversation_of,
    instructions_of,
)
from rag_async.api.openai_compat.wire import (
    COMPLETION_PREFIX,
    chat_citations,
    chat_usage,
    served_model,
)
from rag_async.api.questions import Question, submit_question
from rag_async.api.state import AppState, State
from rag_async.api.stream import counted_stream, follow_job, given_back_on_error, stream_slot
from rag_async.domain.errors import Conflict, RagError
from rag_async.domain.events import (
    CancelledEvent,
    DoneEvent,
    ErrorEvent,
    SourcesEvent,
    TokenEvent,
    decode_event,
)
from rag_async.domain.job import JOB_ID_HEADER, JobRecord, JobStatus
from rag_async.domain.schemas import ErrorBody
from rag_async.domain.sources import Source

router = APIRouter(prefix="/v1", tags=["openai"])

# The finish reason of an answer, by why it stopped short (if it did).
_FINISH: dict[str | None, str] = {None: "stop", "max_output_tokens": "length"}


class AnswerFailed(RagError):
    status_code = 502
    code = "answer_failed"


@router.post(
    "/chat/completions",
    responses={
        200: {"content": {"application/json": {}, "text/event-stream": {}}},
        **{status: {"model": ErrorBody} for status in (400, 409, 422, 502, 504)},
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
    refuse_unhonoured_chat(body)
    text, history = conversation_of(body.messages)
    generation = chat_generation(body, instructions_of(body.messages))
    question = Question(text, body.collection, history, generation=generation)
    release = stream_slot(state, caller)  # before the job: a refused request leaves none
    submitting = submit_question(Submission(state, request, caller), question, idempotency_key)
    job_id = await given_back_on_error(release, submitting)
    headers = {JOB_ID_HEADER: job_id}
    if body.stream:
        with_usage = body.stream_options is not None and body.stream_options.include_usage
        chunks = completion_chunks(state, job_id, str(request.base_url), with_usage=with_usage)
        return counted_stream(state, chunks, release, headers)
    record = await wait_holding(state, job_id, release, f"follow /jobs/{job_id}/events")
    return json_response(_completion(state, record, str(request.base_url)), headers=headers)


def _completion(state: AppState, record: JobRecord, base_url: str) -> dict[str, Any]:
    if record.status is JobStatus.CANCELLED:
        raise Conflict(f"job {record.job_id} was cancelled", code="cancelled")
    if record.status is not JobStatus.COMPLETE:
        raise AnswerFailed(record.error or "the answer failed")
    text = record.answer or ""
    cited = chat_citations(text, record.sources, base_url)
    message = {"role": "assistant", "content": text, "refusal": None, "annotations": cited}
    finish = _FINISH[record.incomplete]
    return {
        "id": f"{COMPLETION_PREFIX}{record.job_id}",
        "object": "chat.completion",
        "created": int(record.created_at or time.time()),
        "model": served_model(state.settings),
        "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
        "usage": chat_usage(record.usage),
    }


async def completion_chunks(
    state: AppState, job_id: str, base_url: str, *, with_usage: bool = False
) -> AsyncIterator[ServerSentEvent]:
    """The job's answer as chunks: the assistant's role first, a chunk per batch of text, the
    finish (with the answer's citations), the usage when asked, then `[DONE]`; a failed or
    cancelled job ends with an error, as OpenAI's do."""
    base = {
        "id": f"{COMPLETION_PREFIX}{job_id}",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": served_model(state.settings),
    }

    def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> ServerSentEvent:
        choice = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
        return ServerSentEvent(data=orjson.dumps({**base, "choices": [choice], **extra}).decode())

    yield chunk({"role": "assistant", "content": ""})
    sources: list[Source] = []
    async for logged in follow_job(state, job_id, 0):
        event = decode_event(logged.data or "{}")
        if isinstance(event, SourcesEvent):
            sources = list(event.sources)
        elif isinstance(event, TokenEvent):
            yield chunk({"content": event.text})
        elif isinstance(event, DoneEvent):
            cited = chat_citations(event.answer, sources, base_url)
            yield chunk({"annotations": cited} if cited else {}, _FINISH[event.incomplete])
            if with_usage:
                usage = chat_usage(event.usage)
                yield ServerSentEvent(
                    data=orjson.dumps({**base, "choices": [], "usage": usage}).decode()
                )
            yield ServerSentEvent(data="[DONE]")
        elif isinstance(event, ErrorEvent | CancelledEvent):
            error = {"message": event.message, "type": "server_error", "code": event.type}
            yield ServerSentEvent(data=orjson.dumps({"error": error}).decode())
