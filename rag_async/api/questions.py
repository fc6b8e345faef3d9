"""Accepting a question, the one way for every route that asks one (POST /chat and the OpenAI
routes): its checks, its Idempotency-Key, and its job on the queue (enqueue.py)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from rag_async.api.enqueue import Submission, enqueue
from rag_async.api.idempotent import create_once
from rag_async.domain.errors import BadRequest
from rag_async.domain.filters import Filter
from rag_async.domain.generation import Generation
from rag_async.domain.job import new_job_id, record_fields
from rag_async.domain.schemas import Multitask
from rag_async.domain.text import utf8_problem
from rag_async.store.conversations import Turn, recent_turns


@dataclass(frozen=True, slots=True)
class Question:
    """What a client asks: the question, where to search, and what came before it."""

    text: str
    collection: str | None = None
    history: Sequence[Turn] = ()
    conversation_id: str | None = None
    # A /v1 response it follows that was still answering when it was asked, and what it asked
    # of it (worker/answering.py): `history` is then the turns given after that one's.
    follows: str | None = None
    multitask: Multitask | None = None
    # What the client asks of the generation, and what a /v1 response echoes (job.py).
    generation: Generation | None = None
    v1: Mapping[str, Any] | None = None
    # What the search keeps to: documents whose attributes match.
    filters: Filter | None = None
    # A /v1 file_search's: the collections searched with `collection`, how many sources, and
    # the lowest relevance kept (domain/relevance.py); without them, the settings'.
    more_collections: Sequence[str] = ()
    top_k: int | None = None
    min_relevance: float | None = None


def checked_query(text: str, limit: int) -> str:
    """The question without its surrounding blanks; 422 when empty, too long or not UTF-8."""
    query = text.strip()
    if not query:
        raise BadRequest("query is empty: ask a question", code="empty_query")
    if len(query) > limit:
        raise BadRequest(
            f"query is {len(query)} characters long; the limit is {limit}", code="query_too_long"
        )
    problem = utf8_problem(query)
    if problem is not None:
        raise BadRequest(f"query {problem}")
    return query


async def submit_question(
    submission: Submission,
    question: Question,
    idempotency_key: str | None,
    job_id: str | None = None,
) -> str:
    """Queue the question's answer job (or find the one its Idempotency-Key stands for) and
    return its id (`job_id`, when the caller chose it). The history kept is the latest that
    fits the prompt's budget."""
    state, caller = submission.state, submission.caller
    query = checked_query(question.text, state.settings.max_query_chars)
    collection = caller.collection(question.collection or state.settings.default_collection)
    history = recent_turns(question.history)
    fields = {"query": query, "collection": collection}
    fingerprint = f"{collection}\x00{query}"
    if question.filters is not None:
        fields |= record_fields(filters=question.filters)
        fingerprint += "\x00" + fields["filters"]
    if question.more_collections or question.top_k or question.min_relevance is not None:
        bounds = record_fields(
            more_collections=[caller.collection(name) for name in question.more_collections],
            top_k=question.top_k,
            min_relevance=question.min_relevance,
        )
        fields |= bounds
        fingerprint += "\x00" + orjson.dumps(bounds).decode()
    if history or question.conversation_id or question.follows or question.generation:
        context = record_fields(
            history=history,
            conversation_id=question.conversation_id,
            follows=question.follows,
            multitask=question.multitask,
            generation=question.generation,
        )
        fields.update(context)
        fingerprint += "\x00" + orjson.dumps(context).decode()
    if question.v1:
        # Echoed only: a retry with other metadata is still the same question.
        fields.update(record_fields(v1=dict(question.v1)))
    job_id = job_id or new_job_id()

    async def create() -> None:
        await enqueue(submission, job_id, "answer", fields)

    return await create_once(submission, idempotency_key, fingerprint.encode(), job_id, create)
