"""Attaching a file to a vector store: the file's bytes ingested into the store's collection
by the same job as POST /documents (routes/documents.py `enqueue_ingest`), as one document of
the caller's, and the attachment recorded (store/vector_stores.py). Detaching queues the
removal of that document; the file stays.

A vector store `vs_…` is the caller's collection of that name (`Principal.collection`): the
native API reaches it too (POST /chat with `collection: "vs_…"`, GET /documents). The file
`file-…` attached to it is the document `vs_….file-…` (scoped to its key like any id a
client chooses, api/document_ids.py), titled with the file's name and sourced from its id,
so that a chunk found by a search names both.
"""

from __future__ import annotations

import time

from rag_async.api.document_ids import scoped_id
from rag_async.api.enqueue import Submission
from rag_async.api.openai_compat.files import owned_file
from rag_async.api.openai_compat.vector_store_bodies import BatchFile, chunk_sizes
from rag_async.api.routes.documents import attribute_fields, enqueue_deletion, enqueue_ingest
from rag_async.api.storage import within_storage_quota
from rag_async.domain.errors import NotFound, RagError
from rag_async.domain.job import new_job_id
from rag_async.store.files import StoredFile
from rag_async.store.vector_stores import Attachment, Attributes, VectorStore


def document_id_of(submission: Submission, store_id: str, file_id: str) -> str:
    return scoped_id(submission.caller, f"{store_id}.{file_id}")


async def attach(
    submission: Submission, store: VectorStore, wanted: BatchFile, batch_id: str | None = None
) -> Attachment:
    """Queue the ingestion of the caller's file into the store, and record it. Refused as
    an upload is: an unknown file (404), the storage quota (413), the caller's or the
    service's limits on jobs and pending uploads (429, 507)."""
    state = submission.state
    tokens, overlap, own = chunk_sizes(state.settings, wanted.chunking_strategy)
    file = await owned_file(state, submission.caller, wanted.file_id)
    content = await state.file_bytes.read(file.file_id)
    if content is None:
        raise NotFound(f"the bytes of {file.file_id} are gone", code="file_not_found")
    document_id = document_id_of(submission, store.store_id, file.file_id)
    await within_storage_quota(state, submission.caller, len(content), replacing=document_id)
    job_id = new_job_id()
    fields = _ingest_fields(submission, store, file, document_id)
    if own:
        fields |= {"chunk_tokens": str(tokens), "chunk_overlap": str(overlap)}
    attributes: Attributes = dict(wanted.attributes or {})
    # Carried into each chunk's payload, as POST /documents' attributes, for `filters`.
    fields |= attribute_fields(attributes)
    await enqueue_ingest(submission, job_id, content, fields)
    attachment = Attachment(
        file_id=file.file_id,
        document_id=document_id,
        job_id=job_id,
        created_at=int(time.time()),
        attached_at=time.time(),
        attributes=attributes,
        max_chunk_size_tokens=tokens,
        chunk_overlap_tokens=overlap,
        batch_id=batch_id,
    )
    await state.vector_stores.attach(store.store_id, attachment)
    return attachment


def _ingest_fields(
    submission: Submission, store: VectorStore, file: StoredFile, document_id: str
) -> dict[str, str]:
    return {
        "document_id": document_id,
        "title": file.filename,
        "source": file.file_id,
        "filename": file.filename,
        "format": file.format,
        "collection": submission.caller.collection(store.store_id),
    }


async def detach(submission: Submission, store: VectorStore, attachment: Attachment) -> None:
    """Queue the removal of the attachment's document (if it is still there), then forget
    the attachment: a removal refused (429) leaves both as they were."""
    state = submission.state
    document = await state.registry.get(attachment.document_id)
    queued = attachment.refused is None and document is not None
    if queued and document is not None and submission.caller.may_see(document.owner):
        await enqueue_deletion(submission, attachment.document_id)
    await state.vector_stores.detach(store.store_id, attachment.file_id)


async def check_files(submission: Submission, wanted: list[BatchFile]) -> None:
    """Refuse the request, before anything is attached, if a file is not the caller's (404)
    or asks for chunking that cannot be honoured (400)."""
    for one in wanted:
        chunk_sizes(submission.state.settings, one.chunking_strategy)
        await owned_file(submission.state, submission.caller, one.file_id)


async def attach_all(
    submission: Submission,
    store: VectorStore,
    wanted: list[BatchFile],
    batch_id: str | None = None,
) -> list[Attachment]:
    """Attach every file (`check_files` first). A file refused on the way (a limit reached)
    is attached as failed, with why: the files before it are queued already, and the store
    says which did not make it."""
    attached = []
    for one in wanted:
        try:
            attached.append(await attach(submission, store, one, batch_id))
        except RagError as error:
            attached.append(await _refused(submission, store, one, batch_id, error))
    return attached


async def _refused(
    submission: Submission,
    store: VectorStore,
    wanted: BatchFile,
    batch_id: str | None,
    error: RagError,
) -> Attachment:
    tokens, overlap, _ = chunk_sizes(submission.state.settings, wanted.chunking_strategy)
    attachment = Attachment(
        file_id=wanted.file_id,
        document_id=document_id_of(submission, store.store_id, wanted.file_id),
        job_id="",
        created_at=int(time.time()),
        attached_at=time.time(),
        attributes=dict(wanted.attributes or {}),
        max_chunk_size_tokens=tokens,
        chunk_overlap_tokens=overlap,
        batch_id=batch_id,
        refused={"code": "server_error", "message": f"{error.code}: {error.message}"},
    )
    await submission.state.vector_stores.attach(store.store_id, attachment)
    return attachment
