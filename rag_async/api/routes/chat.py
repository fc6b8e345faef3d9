"""POST /chat: accept a question, enqueue it, and answer 202 at once, or, asked for
`text/event-stream`, answer with the job's event stream on the same request."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Request, Response

from rag_async.api.auth import Caller
from rag_async.api.bodies import require_utf8
from rag_async.api.enqueue import Submission
from rag_async.api.questions import Question, submit_question
from rag_async.api.state import State
from rag_async.api.stream import (
    counted_stream,
    follow_job,
    given_back_on_error,
    stream_slot,
    wants_event_stream,
)
from rag_async.api.turns import ask_in_conversation
from rag_async.domain.job import JOB_ID_HEADER
from rag_async.domain.schemas import ChatRequest, ErrorBody, QuestionAccepted

router = APIRouter(tags=["questions"])


@router.post(
    "/chat",
    status_code=202,
    response_model=QuestionAccepted,
    response_model_exclude_none=True,
    responses={
        200: {"content": {"text/event-stream": {}}},  # with `Accept: text/event-stream`
        400: {"model": ErrorBody},  # a webhook_url refused
        404: {"model": ErrorBody},
        409: {"model": ErrorBody},  # multitask 'reject', an earlier question still answering
        422: {"model": ErrorBody},
        429: {"model": ErrorBody},
        503: {"model": ErrorBody},
        507: {"model": ErrorBody},  # Valkey nearly full
    },
)
async def chat(
    body: ChatRequest,
    request: Request,
    state: State,
    caller: Caller,
    idempotency_key: Annotated[str | None, Header(alias="idempotency-key")] = None,
) -> QuestionAccepted | Response:
    """Queue a question. Follow it at `events_url` (SSE) or poll `status_url`. A repeat with
    the same `Idempotency-Key` (within the result TTL) returns the same job. With a
    `conversation_id`, the answer knows the conversation's latest turns (another key's
    conversation is not found); `multitask` says what happens to an earlier question of the
    conversation still answering.

    With `Accept: text/event-stream`, the answer is the job's event stream itself (200, as
    `GET /jobs/{id}/events` sends it, from its first event), with the job's id in the
    `x-rag-job-id` header: one request instead of two. The job does not depend on the request:
    a client that leaves resumes at `/jobs/{id}/events` with its Last-Event-ID. The stream
    counts against `RAG_MAX_STREAMS_PER_KEY`, checked before the question is queued."""
    require_utf8(body)
    submission = Submission(state, request, caller, webhook_url=body.webhook_url)
    question = Question(body.query, body.collection, filters=body.filters)
    if not wants_event_stream(request):
        job_id = await _submit(submission, question, body, idempotency_key)
        return submission.accepted(QuestionAccepted, job_id, conversation_id=body.conversation_id)
    release = stream_slot(state, caller)  # before the job: a refused request leaves none
    submitting = _submit(submission, question, body, idempotency_key)
    job_id = await given_back_on_error(release, submitting)
    return counted_stream(state, follow_job(state, job_id, 0), release, {JOB_ID_HEADER: job_id})


async def _submit(
    submission: Submission, question: Question, body: ChatRequest, idempotency_key: str | None
) -> str:
    if body.conversation_id is None:
        return await submit_question(submission, question, idempotency_key)
    return await ask_in_conversation(
        submission, question, body.conversation_id, body.multitask, idempotency_key
    )
