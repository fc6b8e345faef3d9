"""A vector store's files: attach one (its ingestion queued, as POST /documents queues one),
list, retrieve (its status, read from its document), update its attributes, delete (its
document removed from the store; the file stays)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from rag_async.api.auth import Caller
from rag_async.api.enqueue import Submission
from rag_async.api.errors import json_response
from rag_async.api.openai_compat.attaching import attach, check_files, detach
from rag_async.api.openai_compat.pages import PageQuery, list_object, page, page_query
from rag_async.api.openai_compat.vector_store_bodies import (
    BatchFile,
    VectorStoreFileCreate,
    VectorStoreFileUpdate,
)
from rag_async.api.openai_compat.vector_store_objects import (
    FileState,
    FileStatus,
    file_states,
    vector_store_file_object,
)
from rag_async.api.openai_compat.vector_stores import ERRORS, owned_store
from rag_async.api.state import AppState, State
from rag_async.domain.errors import NotFound
from rag_async.domain.identity import Principal
from rag_async.store.vector_stores import Attachment, VectorStore

router = APIRouter(prefix="/v1", tags=["openai"])

# How often the SDKs' `*_and_poll` helpers should look again at a file still in progress
# (they read this header, and wait a second without it): an ingestion takes about that long.
POLL_AFTER = {"openai-poll-after-ms": "250"}


@router.post("/vector_stores/{vector_store_id}/files", responses=ERRORS)
async def create_vector_store_file(
    vector_store_id: str,
    body: VectorStoreFileCreate,
    request: Request,
    state: State,
    caller: Caller,
) -> dict[str, Any]:
    """Attach a file: its ingestion into the store is queued; its status tells when it is
    searchable (`completed`) or why not (`failed`, `last_error`)."""
    store = await owned_store(state, caller, vector_store_id)
    wanted = BatchFile.model_validate(body.model_dump())
    submission = Submission(state, request, caller)
    await check_files(submission, [wanted])
    attachment = await attach(submission, store, wanted)
    return await _shown(state, store, attachment)


@router.get("/vector_stores/{vector_store_id}/files", responses=ERRORS)
async def list_vector_store_files(
    vector_store_id: str,
    state: State,
    caller: Caller,
    query: Annotated[PageQuery, Depends(page_query)],
    filter: FileStatus | None = None,
) -> dict[str, Any]:
    store = await owned_store(state, caller, vector_store_id)
    attachments = await state.vector_stores.attachments(store.store_id)
    return listed(store, await file_states(state, attachments), query, filter)


def listed(
    store: VectorStore, states: list[FileState], query: PageQuery, status: FileStatus | None
) -> dict[str, Any]:
    """A page of a store's files (those of one `status`, if given)."""
    chosen = [s for s in states if status in (None, s.status)]
    shown, more = page(chosen, query, lambda s: s.attachment.file_id)
    return list_object([vector_store_file_object(store.store_id, s) for s in shown], more)


@router.get("/vector_stores/{vector_store_id}/files/{file_id}", responses=ERRORS)
async def retrieve_vector_store_file(
    vector_store_id: str, file_id: str, state: State, caller: Caller
) -> Response:
    store, attachment = await _owned(state, caller, vector_store_id, file_id)
    return json_response(await _shown(state, store, attachment), headers=POLL_AFTER)


@router.post("/vector_stores/{vector_store_id}/files/{file_id}", responses=ERRORS)
async def update_vector_store_file(
    vector_store_id: str,
    file_id: str,
    body: VectorStoreFileUpdate,
    state: State,
    caller: Caller,
) -> dict[str, Any]:
    """Replace the file's attributes."""
    store, attachment = await _owned(state, caller, vector_store_id, file_id)
    attachment = attachment.model_copy(update={"attributes": dict(body.attributes or {})})
    # ATTRIBUTES: once chunks carry attributes, the stored chunks' payloads change here too.
    await state.vector_stores.attach(store.store_id, attachment)
    return await _shown(state, store, attachment)


@router.delete("/vector_stores/{vector_store_id}/files/{file_id}", responses=ERRORS)
async def delete_vector_store_file(
    vector_store_id: str, file_id: str, request: Request, state: State, caller: Caller
) -> dict[str, Any]:
    """Remove the file's document from the store (a deletion job); the file itself stays."""
    store, attachment = await _owned(state, caller, vector_store_id, file_id)
    await detach(Submission(state, request, caller), store, attachment)
    return {"id": attachment.file_id, "object": "vector_store.file.deleted", "deleted": True}


async def _owned(
    state: AppState, caller: Principal, store_id: str, file_id: str
) -> tuple[VectorStore, Attachment]:
    store = await owned_store(state, caller, store_id)
    attachment = await state.vector_stores.attachment(store.store_id, file_id)
    if attachment is None:
        raise NotFound(
            f"no file {file_id[:80]!r} in vector store {store_id}", code="file_not_found"
        )
    return store, attachment


async def _shown(state: AppState, store: VectorStore, attachment: Attachment) -> dict[str, Any]:
    (one,) = await file_states(state, [attachment])
    return vector_store_file_object(store.store_id, one)
