"""OpenAI's vector stores: create (with files), list, retrieve, update, delete. A vector
store is a collection of its key's, named by its id (attaching.py says how its files become
documents); another key's is a 404, as an unknown one."""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request

from rag_async.api.auth import Caller
from rag_async.api.enqueue import Submission
from rag_async.api.openai_compat.attaching import attach_all, check_files, detach
from rag_async.api.openai_compat.pages import PageQuery, list_object, page, page_query
from rag_async.api.openai_compat.vector_store_bodies import (
    BatchFile,
    VectorStoreCreate,
    VectorStoreUpdate,
    refuse_expiry,
)
from rag_async.api.openai_compat.vector_store_objects import file_states, vector_store_object
from rag_async.api.state import AppState, State
from rag_async.api.storage import store_full
from rag_async.domain.errors import NotFound
from rag_async.domain.identity import Principal
from rag_async.domain.schemas import ErrorBody
from rag_async.store.vector_stores import VectorStore, new_vector_store_id

router = APIRouter(prefix="/v1", tags=["openai"])

ERRORS: dict[int | str, dict[str, Any]] = {
    s: {"model": ErrorBody} for s in (400, 404, 413, 422, 429, 507)
}


@router.post("/vector_stores", responses=ERRORS)
async def create_vector_store(
    body: VectorStoreCreate, request: Request, state: State, caller: Caller
) -> dict[str, Any]:
    """A new vector store; its `file_ids` are ingested into it, each by its own job."""
    refuse_expiry(body.expires_after)
    wanted = [
        BatchFile(file_id=file_id, chunking_strategy=body.chunking_strategy)
        for file_id in body.file_ids
    ]
    now = int(time.time())
    store = VectorStore(
        store_id=new_vector_store_id(),
        owner=caller.name,
        name=body.name,
        metadata=body.metadata or {},
        created_at=now,
        last_active_at=now,
    )
    submission = Submission(state, request, caller)
    await check_files(submission, wanted)  # before the store exists
    if not await state.vector_stores.put(store):
        raise store_full()
    attached = await attach_all(submission, store, wanted)
    return vector_store_object(store, await file_states(state, attached))


@router.get("/vector_stores", responses=ERRORS)
async def list_vector_stores(
    state: State, caller: Caller, query: Annotated[PageQuery, Depends(page_query)]
) -> dict[str, Any]:
    """The key's vector stores, newest first unless `order=asc`."""
    found = await asyncio.gather(*(state.vector_stores.get(i) for i in await _ids(state, caller)))
    stores = [store for store in found if store is not None]
    chosen, more = page(stores, query, lambda s: s.store_id)
    return list_object([await shown(state, store) for store in chosen], more)


async def _ids(state: AppState, caller: Principal) -> list[str]:
    return await state.vector_stores.ids(caller.name)


@router.get("/vector_stores/{vector_store_id}", responses=ERRORS)
async def retrieve_vector_store(
    vector_store_id: str, state: State, caller: Caller
) -> dict[str, Any]:
    return await shown(state, await owned_store(state, caller, vector_store_id))


@router.post("/vector_stores/{vector_store_id}", responses=ERRORS)
async def update_vector_store(
    vector_store_id: str, body: VectorStoreUpdate, state: State, caller: Caller
) -> dict[str, Any]:
    """Change the name or the metadata (replaced whole, as OpenAI does); what is not given
    stays."""
    refuse_expiry(body.expires_after)
    store = await owned_store(state, caller, vector_store_id)
    changes: dict[str, Any] = {"last_active_at": int(time.time())}
    if "name" in body.model_fields_set:
        changes["name"] = body.name
    if "metadata" in body.model_fields_set:
        changes["metadata"] = body.metadata or {}
    store = store.model_copy(update=changes)
    if not await state.vector_stores.put(store):
        raise store_full()
    return await shown(state, store)


@router.delete("/vector_stores/{vector_store_id}", responses=ERRORS)
async def delete_vector_store(
    vector_store_id: str, request: Request, state: State, caller: Caller
) -> dict[str, Any]:
    """The store goes, and the removal of each of its files' documents is queued; the files
    stay."""
    store = await owned_store(state, caller, vector_store_id)
    submission = Submission(state, request, caller)
    for attachment in await state.vector_stores.attachments(store.store_id):
        await detach(submission, store, attachment)
    await state.vector_stores.remove(store)
    return {"id": store.store_id, "object": "vector_store.deleted", "deleted": True}


async def shown(state: AppState, store: VectorStore) -> dict[str, Any]:
    attachments = await state.vector_stores.attachments(store.store_id)
    return vector_store_object(store, await file_states(state, attachments))


async def owned_store(state: AppState, caller: Principal, store_id: str) -> VectorStore:
    """The caller's vector store: another key's is not found, exactly like an unknown one."""
    store = await state.vector_stores.get(store_id)
    if store is None or not caller.may_see(store.owner):
        raise NotFound(f"no vector store {store_id[:80]!r}", code="vector_store_not_found")
    return store
