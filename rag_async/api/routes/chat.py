"""POST /chat: accept a question, enqueue it, answer 202 at once."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Request

from rag_async.api.auth import Caller
from rag_async.api.bodies import require_utf8
from rag_async.api.enqueue import Submission
from rag_async.api.questions import Question, submit_question
from rag_async.api.state import AppState, State
from rag_async.domain.errors import NotFound
from rag_async.domain.job import new_job_id
from rag_async.domain.schemas import ChatRequest, ErrorBody, QuestionAccepted
from rag_async.worker.answering import refuse_if_busy, still_answering, stop_earlier

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
    if body.conversation_id is None:
        job_id = await submit_question(
            submission, Question(body.query, body.collection), idempotency_key
        )
        return submission.accepted(QuestionAccepted, job_id)
    job_id = await ask_in_turn(state, submission, body.conversation_id, body, idempotency_key)
    return submission.accepted(QuestionAccepted, job_id, conversation_id=body.conversation_id)


async def ask_in_turn(
    state: AppState,
    submission: Submission,
    conversation_id: str,
    body: ChatRequest,
    idempotency_key: str | None,
) -> str:
    """Ask within a conversation, in turn with its questions still answering, as the body's
    `multitask` says (worker/answering.py); the job's id."""
    multitask = body.multitask
    job_id = new_job_id()
    conversation = await state.conversations.join(conversation_id, submission.caller, job_id)
    if conversation is None:
        raise NotFound(f"no conversation {conversation_id}")
    grace = state.settings.worker_dead_after
    try:
        answering = await still_answering(
            state.ends, conversation_id, conversation.answering, grace=grace
        )
        if multitask == "reject":
            refuse_if_busy(conversation_id, answering)
        question = Question(body.query, body.collection, conversation.turns, conversation_id)
        asked = await submit_question(submission, question, idempotency_key, job_id)
    except BaseException:
        await state.conversations.finished(conversation_id, job_id)
        raise
    if asked != job_id:  # a repeat of an Idempotency-Key: its job took its turn already
        await state.conversations.finished(conversation_id, job_id)
        return asked
    await stop_earlier(state.ends, conversation_id, answering, multitask)
    return job_id
