"""POST /chat: accept a question, enqueue it, answer 202 at once."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Request

from rag_async.api.auth import Caller
from rag_async.api.bodies import require_utf8
from rag_async.api.enqueue import Submission
from rag_async.api.questions import Question, submit_question
from rag_async.api.state import State
from rag_async.api.turns import ask_in_conversation
from rag_async.domain.schemas import ChatRequest, ErrorBody, QuestionAccepted

router = APIRouter(tags=["questions"])


@router.post(
    "/chat",
    status_code=202,
    response_model=QuestionAccepted,
    response_model_exclude_none=True,
    responses={
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
) -> QuestionAccepted:
    """Queue a question. Follow it at `events_url` (SSE) or poll `status_url`. A repeat with
    the same `Idempotency-Key` (within the result TTL) returns the same job. With a
    `conversation_id`, the answer knows the conversation's latest turns (another key's
    conversation is not found); `multitask` says what happens to an earlier question of the
    conversation still answering."""
    require_utf8(body)
    submission = Submission(state, request, caller, webhook_url=body.webhook_url)
    question = Question(body.query, body.collection, filters=body.filters)
    if body.conversation_id is None:
        job_id = await submit_question(submission, question, idempotency_key)
        return submission.accepted(QuestionAccepted, job_id)
    job_id = await ask_in_conversation(
        submission, question, body.conversation_id, body.multitask, idempotency_key
    )
    return submission.accepted(QuestionAccepted, job_id, conversation_id=body.conversation_id)
