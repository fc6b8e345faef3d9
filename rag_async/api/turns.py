"""Asking in turn: a question that follows one still answering (a conversation's, or a /v1
response's), as its `multitask` choice says (worker/answering.py): POST /chat and
POST /v1/responses alike."""

from __future__ import annotations

import dataclasses

from rag_async.api.enqueue import Submission
from rag_async.api.questions import Question, submit_question
from rag_async.domain.errors import NotFound
from rag_async.domain.job import JobRecord, new_job_id
from rag_async.domain.schemas import Multitask
from rag_async.worker.answering import (
    refuse_if_busy,
    refuse_if_follows_busy,
    still_answering,
    stop_earlier,
)
from rag_async.worker.ends import cancel


async def ask_in_conversation(
    submission: Submission,
    question: Question,
    conversation_id: str,
    multitask: Multitask,
    idempotency_key: str | None,
) -> str:
    """Ask `question` within the caller's conversation `conversation_id` (begun if new; 404
    if another key's), after the questions of it still answering; the job's id. The turns
    the question was given go after the conversation's."""
    state = submission.state
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
        history = [*conversation.turns, *question.history]
        joined = dataclasses.replace(question, history=history, conversation_id=conversation_id)
        asked = await submit_question(submission, joined, idempotency_key, job_id)
    except BaseException:
        await state.conversations.finished(conversation_id, job_id)
        raise
    if asked != job_id:  # a repeat of an Idempotency-Key: its job took its turn already
        await state.conversations.finished(conversation_id, job_id)
        return asked
    await stop_earlier(state.ends, conversation_id, answering, multitask)
    return job_id


async def ask_after(
    submission: Submission,
    question: Question,
    previous: JobRecord,
    multitask: Multitask,
    idempotency_key: str | None,
) -> str:
    """Ask `question` after `previous`, a response of no conversation that has not ended:
    its worker waits for it, then reads its turn (worker/answering.py `followed_turns`);
    `interrupt` and `rollback` cancel it first. The job's id."""
    refuse_if_follows_busy(previous, multitask)
    follows = dataclasses.replace(question, follows=previous.job_id, multitask=multitask)
    job_id = await submit_question(submission, follows, idempotency_key)
    if multitask in ("interrupt", "rollback"):
        await cancel(submission.state.ends, previous)
    return job_id
