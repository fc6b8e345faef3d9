"""A vector store's file batches: attach many files at once (each its own ingestion job),
follow them together, list them, cancel those not yet ingested."""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from rag_async.api.auth import Caller
from rag_async.api.enqueue import Submission
from rag_async.api.errors import json_response
from rag_async.api.openai_compat.attaching import attach_all, check_files
from rag_async.api.openai_compat.pages import PageQuery, page_query
from rag_async.api.openai_compat.vector_store_bodies import FileBatchCreate
from rag_async.api.openai_compat.vector_store_files import POLL_AFTER, listed
from rag_async.api.openai_compat.vector_store_objects import (
    FileState,
    FileStatus,
    batch_object,
    file_states,
)
from rag_async.api.openai_compat.vector_stores import ERRORS, owned_store
from rag_async.api.state import AppState, State
from rag_async.domain.errors import NotFound
from rag_async.domain.identity import Principal
from rag_async.store.vector_stores import FileBatch, VectorStore, new_batch_id
from rag_async.worker.ends import cancel

router = APIRouter(prefix="/v1", tags=["openai"])


@router.post("/vector_stores/{vector_store_id}/file_batches", responses=ERRORS)
async def create_file_batch(
    vector_store_id: str, body: FileBatchCreate, request: Request, state: State, caller: Caller
) -> dict[str, Any]:
    """Attach every file of the batch (`file_ids` sharing `attributes` and
    `chunking_strategy`, or `files` each with its own)."""
    store = await owned_store(state, caller, vector_store_id)
    wanted = body.each()
    submission = Submission(state, request, caller)
    await check_files(submission, wanted)
    batch = FileBatch(
        batch_id=new_batch_id(),
        store_id=store.store_id,
        file_ids=list(dict.fromkeys(one.file_id for one in wanted)),
        created_at=int(time.time()),
    )
    # As long as the results of the jobs it ran: what it would report is theirs.
    await state.vector_stores.put_batch(batch, state.settings.result_ttl)
    await attach_all(submission, store, wanted, batch.batch_id)
    return batch_object(batch, await _states(state, batch))


@router.get("/vector_stores/{vector_store_id}/file_batches/{batch_id}", responses=ERRORS)
async def retrieve_file_batch(
    vector_store_id: str, batch_id: str, state: State, caller: Caller
) -> Response:
    _, batch = await _owned(state, caller, vector_store_id, batch_id)
    shown = batch_object(batch, await _states(state, batch))
    return json_response(shown, headers=POLL_AFTER)


@router.post("/vector_stores/{vector_store_id}/file_batches/{batch_id}/cancel", responses=ERRORS)
async def cancel_file_batch(
    vector_store_id: str, batch_id: str, state: State, caller: Caller
) -> dict[str, Any]:
    """Cancel the ingestion of the batch's files still on their way; those ingested stay."""
    _, batch = await _owned(state, caller, vector_store_id, batch_id)
    await state.vector_stores.cancel_batch(batch)
    batch = batch.model_copy(update={"cancelled": True})
    for one in await _states(state, batch):
        if one.status != "in_progress" or not one.attachment.job_id:
            continue
        job = await state.jobs.get(one.attachment.job_id)
        if job is not None and not job.status.ended:
            await cancel(state.ends, job)
    return batch_object(batch, await _states(state, batch))


@router.get("/vector_stores/{vector_store_id}/file_batches/{batch_id}/files", responses=ERRORS)
async def list_file_batch_files(
    vector_store_id: str,
    batch_id: str,
    state: State,
    caller: Caller,
    query: Annotated[PageQuery, Depends(page_query)],
    filter: FileStatus | None = None,
) -> dict[str, Any]:
    store, batch = await _owned(state, caller, vector_store_id, batch_id)
    return listed(store, await _states(state, batch), query, filter)


async def _states(state: AppState, batch: FileBatch) -> list[FileState]:
    """The batch's files that are still attached through it."""
    attachments = await state.vector_stores.attachments(batch.store_id)
    ours = [a for a in attachments if a.batch_id == batch.batch_id]
    return await file_states(state, ours)


async def _owned(
    state: AppState, caller: Principal, store_id: str, batch_id: str
) -> tuple[VectorStore, FileBatch]:
    store = await owned_store(state, caller, store_id)
    batch = await state.vector_stores.batch(batch_id)
    if batch is None or batch.store_id != store.store_id:
        raise NotFound(
            f"no file batch {batch_id[:80]!r} in vector store {store_id}",
            code="file_batch_not_found",
        )
    return store, batch
