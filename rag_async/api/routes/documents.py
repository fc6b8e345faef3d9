"""POST /documents: accept a document's text and enqueue its ingestion."""

from __future__ import annotations

import hashlib
from typing import Annotated

from fastapi import APIRouter, Header

from ...errors import BadRequest, TooLarge
from ...jobstore import new_job_id
from ...schemas import DocumentAccepted, DocumentIn, ErrorBody
from ..enqueue import accepted, claim_idempotency_key, enqueue
from ..state import State

router = APIRouter(tags=["documents"])


@router.post(
    "/documents",
    status_code=202,
    response_model=DocumentAccepted,
    responses={413: {"model": ErrorBody}, 422: {"model": ErrorBody}, 429: {"model": ErrorBody}},
)
async def add_document(
    body: DocumentIn,
    state: State,
    idempotency_key: Annotated[str | None, Header(alias="idempotency-key")] = None,
) -> DocumentAccepted:
    """Queue a document for ingestion; its progress streams at `events_url`. A repeat with
    the same `Idempotency-Key` (within the result TTL) returns the same job."""
    if not body.text.strip():
        raise BadRequest("the document has no text", code="empty_document")
    size = len(body.text.encode())
    if size > state.settings.max_document_bytes:
        raise TooLarge(
            f"the document is {size} bytes; the limit is {state.settings.max_document_bytes}",
            code="document_too_large",
        )
    title = (body.title or body.source or "untitled").strip() or "untitled"
    document_id = body.document_id or _document_id(body.source or title)
    job_id = new_job_id()
    claimed = await claim_idempotency_key(
        state, idempotency_key, body.model_dump_json().encode(), job_id
    )
    if claimed != job_id:
        return accepted(DocumentAccepted, claimed, document_id=document_id)
    # The text waits in Redis for the worker, and expires with the job if nobody takes it.
    await state.redis.set(state.keys.upload(job_id), body.text, ex=state.settings.result_ttl)
    fields = {"document_id": document_id, "title": title, "source": body.source or ""}
    await enqueue(state, job_id, "ingest", fields)
    return accepted(DocumentAccepted, job_id, document_id=document_id)


def _document_id(name: str) -> str:
    """Stable per source, so ingesting the same file again replaces it rather than adding."""
    return hashlib.sha256(name.encode()).hexdigest()[:24]
