"""POST /chat: accept a question, enqueue it, answer 202 at once."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Request

from ...errors import BadRequest, RagError
from ...jobrecord import new_job_id
from ...schemas import ChatRequest, ErrorBody, JobAccepted
from ..auth import Caller
from ..bodies import require_utf8
from ..enqueue import Submission, enqueue
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
    caller: Caller,
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
    collection = caller.collection(body.collection or state.settings.default_collection)
    job_id = new_job_id()
    fingerprint = f"{collection}\x00{query}".encode()
    claimed = await state.idempotency.claim(idempotency_key, caller, fingerprint, job_id)
    submission = Submission(state, request, caller)
    if claimed == job_id:
        try:
            await enqueue(submission, job_id, "chat", {"query": query, "collection": collection})
        except RagError:  # refused (a 429): a retry with the same key must not find this job
            await state.idempotency.release(idempotency_key, caller, job_id)
            raise
    return submission.accepted(JobAccepted, claimed)
