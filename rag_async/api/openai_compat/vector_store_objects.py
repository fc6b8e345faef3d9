"""Vector stores, their files and file batches as OpenAI shows them. A file's status is read
from its document (the registry) when asked, never stored twice: queued or ingesting is
`in_progress`, indexed `completed`, failed `failed` with `last_error`, cancelled `cancelled`.
A store's `file_counts`, `usage_bytes` and status add its files' up."""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass
from typing import Any, Literal

from rag_async.api.state import AppState
from rag_async.domain.document import DocumentRecord, DocumentStatus
from rag_async.store.vector_stores import Attachment, FileBatch, VectorStore

FileStatus = Literal["in_progress", "completed", "failed", "cancelled"]
STATUSES: tuple[FileStatus, ...] = ("in_progress", "completed", "failed", "cancelled")
_STATUS: dict[DocumentStatus, FileStatus] = {
    DocumentStatus.QUEUED: "in_progress",
    DocumentStatus.INGESTING: "in_progress",
    DocumentStatus.DELETING: "in_progress",
    DocumentStatus.INDEXED: "completed",
    DocumentStatus.FAILED: "failed",
    DocumentStatus.CANCELLED: "cancelled",
}


@dataclass(frozen=True, slots=True)
class FileState:
    """Where one attached file stands."""

    attachment: Attachment
    status: FileStatus
    usage_bytes: int
    last_error: dict[str, str] | None


async def file_states(state: AppState, attachments: list[Attachment]) -> list[FileState]:
    """The state of each attachment, read from its document (and, for a failure, its job)."""
    documents = await asyncio.gather(*(state.registry.get(a.document_id) for a in attachments))
    return list(
        await asyncio.gather(
            *(_file_state(state, a, d) for a, d in zip(attachments, documents, strict=True))
        )
    )


async def _file_state(
    state: AppState, attachment: Attachment, document: DocumentRecord | None
) -> FileState:
    if attachment.refused is not None:
        return FileState(attachment, "failed", 0, attachment.refused)
    if document is None:
        # Removed by the native API (DELETE /documents/{id}): nothing of it is searchable.
        error = {"code": "server_error", "message": "its document was deleted"}
        return FileState(attachment, "failed", 0, error)
    status = _STATUS[document.status]
    if status == "completed":
        return FileState(attachment, status, document.size or 0, None)
    if status != "failed":
        return FileState(attachment, status, 0, None)
    job = await state.jobs.get(attachment.job_id)
    # A job that failed outright failed for its file (a parser's refusal); one that used up
    # its tries (a dead letter) for the service's reasons.
    code = "invalid_file" if job is not None and job.outcome == "failed" else "server_error"
    message = document.error or (job.error if job else None) or "the ingestion failed"
    return FileState(attachment, status, 0, {"code": code, "message": message})


def file_counts(states: list[FileState]) -> dict[str, int]:
    counts = Counter(s.status for s in states)
    return {**{status: counts[status] for status in STATUSES}, "total": len(states)}


def vector_store_object(store: VectorStore, states: list[FileState]) -> dict[str, Any]:
    busy = any(s.status == "in_progress" for s in states)
    return {
        "id": store.store_id,
        "object": "vector_store",
        "created_at": store.created_at,
        "name": store.name,
        "usage_bytes": sum(s.usage_bytes for s in states),
        "file_counts": file_counts(states),
        "status": "in_progress" if busy else "completed",
        "expires_after": None,
        "expires_at": None,
        "last_active_at": store.last_active_at,
        "metadata": store.metadata,
    }


def vector_store_file_object(store_id: str, state: FileState) -> dict[str, Any]:
    attachment = state.attachment
    return {
        "id": attachment.file_id,
        "object": "vector_store.file",
        "created_at": attachment.created_at,
        "vector_store_id": store_id,
        "status": state.status,
        "last_error": state.last_error,
        "usage_bytes": state.usage_bytes,
        "chunking_strategy": {
            "type": "static",
            "static": {
                "max_chunk_size_tokens": attachment.max_chunk_size_tokens,
                "chunk_overlap_tokens": attachment.chunk_overlap_tokens,
            },
        },
        "attributes": attachment.attributes,
    }


def batch_object(batch: FileBatch, states: list[FileState]) -> dict[str, Any]:
    """A batch is `cancelled` once cancelled and none of its files is still on its way
    (`cancelling` until then), else `in_progress` until every file has ended."""
    busy = any(s.status == "in_progress" for s in states)
    if batch.cancelled:
        status = "cancelling" if busy else "cancelled"
    else:
        status = "in_progress" if busy else "completed"
    return {
        "id": batch.batch_id,
        "object": "vector_store.files_batch",
        "created_at": batch.created_at,
        "vector_store_id": batch.store_id,
        "status": status,
        "file_counts": file_counts(states),
    }
