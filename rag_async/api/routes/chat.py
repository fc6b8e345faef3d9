"""POST /chat: accept a question, enqueue it, answer 202 at once."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Request

from ...errors import BadRequest
from ...jobrecord import new_job_id
from ...schemas import ChatRequest, ErrorBody, JobAccepted
from ..bodies import require_utf8
from ..enqueue import accepted, enqueue
from ..state import State

router = APIRouter(tags=["questions"])


@router.post(
    "/chat",
    status_code=202,
    response_model=JobAccepted,
    responses={422: {"model": ErrorBody}, 429: {"model": ErrorBody}, 503: {"model": ErrorBody}},
)
async def chat(
    body: ChatRequest,
    request: Request,
    state: State,
    idempotency_key: Annotated[str | None, Header(alias="idempotency-key")] = None,
) -> JobAccepted:
    """Queue a question. Follow it at `events_url` (SSE) or poll `status_url`. A repeat with
    the same `Idempotency-Key` (within the result TTL) returns the same job."""
    require_utf8(body)
    query = body.query.strip()
    limit = state.settings.max_query_chars
    if not query:
        raise BadRequest("query is empty: ask a question", code="empty_query")
    if len(query) > limit:
        raise BadRequest(
            f"query is {len(query)} characters long; the limit is {limit}", code="query_too_long"
        )
    job_id = new_job_id()
    claimed = await state.idempotency.claim(idempotency_key, query.encode(), job_id)
    if claimed != job_id:
        return accepted(JobAccepted, claimed)
    fields = {"query": query, "collection": body.collection or state.settings.default_collection}
    await enqueue(state, request, job_id, "chat", fields)
    return accepted(JobAccepted, job_id)
