"""Ingest one uploaded document (parse and chunk in a parse process, then encode and upsert,
with progress events), and
delete one. Both keep the document registry (store/documents.py) up to date; the job's life
around this work (attempts, retries, the end) is worker/lifecycle.py's, and what a document
job's failed end does to the registry is worker/kinds.py's.

A document has one current version (domain/document.py). An ingestion writes its chunks as
its own version, beside the current one, and only if it still owns the document when they
are all written does the registry switch to it; then the other versions' chunks go. A job
that loses the document to a newer upload or a deletion stops (`VersionSuperseded`), and a
version that fails, is cancelled or is superseded deletes what it wrote.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable, Sequence
from dataclasses import replace

import orjson
import structlog

from rag_async.domain.errors import RagError
from rag_async.domain.events import ProgressEvent
from rag_async.domain.job import IngestProgress, JobRecord, stored_value
from rag_async.providers.breaker import guarded
from rag_async.providers.parsing.chunking import Chunking
from rag_async.providers.parsing.parsed import ChunkedDocument
from rag_async.providers.retrieval.qdrant_calls import qdrant_call
from rag_async.store.documents import Fields
from rag_async.store.events import Superseded
from rag_async.worker.lifecycle import Finished, JobSpec, Replaced, Run
from rag_async.worker.services import Services

log = structlog.get_logger(__name__)


class UploadExpired(RagError):
    code = "expired"  # the bytes are gone: no try can bring them back


class VersionSuperseded(Replaced):
    """A newer job (an upload of the same document, or its deletion) owns the document: this
    one's work is moot, and it ends cancelled."""


async def _ingest(run: Run) -> Finished:
    services, record = run.services, run.record
    document_id = _document_id(record)
    raw = await services.uploads.get(run.job_id)
    if raw is None:
        raise UploadExpired("the uploaded text expired before it was ingested")
    size = len(raw)
    content_sha256 = hashlib.sha256(raw).hexdigest()
    fingerprint = _fingerprint(content_sha256, record, _signature(services, record))
    unchanged = await _unchanged(services, document_id, fingerprint)
    if unchanged is not None:
        # The same version is indexed already: nothing is written, the job says so.
        if not await services.registry.keep_version(document_id, run.job_id):
            raise _superseded(document_id)
        await _progress(run, "unchanged", unchanged, unchanged)
        summary = f"unchanged: {unchanged} chunks already indexed"
        return Finished(answer=summary, providers=_retrieval(services), chunks=unchanged)
    document = await _parse(services, record, raw)
    # A big document is from here on held as its chunks, not as its bytes too (and the
    # retriever writes vectors and points a batch at a time).
    del raw
    await _progress(run, "parsed", 1, 1)
    facts: Fields = {
        "title": _title(record, document),
        "size": size,
        "format": document.format,
        "content_sha256": content_sha256,
        "fingerprint": fingerprint,
        # The version's own, even none: a new version drops the attributes of the old.
        "attributes": stored_value(record.attributes or {}),
    }
    chunks = await _write_version(run, document_id, document, facts)
    return Finished(
        answer=f"indexed {chunks} chunks", providers=_retrieval(services), chunks=chunks
    )


async def _write_version(
    run: Run, document_id: str, document: ChunkedDocument, facts: Fields
) -> int:
    """Write the job's version of the document and make it the current one, if the job
    still owns the document; else (or if anything fails) delete what it wrote."""
    registry, job_id = run.services.registry, run.job_id
    try:
        if not await registry.begin_version(document_id, job_id):
            raise _superseded(document_id)
        chunks = await _index(run, document_id, document)
        facts = {**facts, "chunks": chunks, "ingested_at": time.time()}
        stale = await registry.switch_version(document_id, job_id, facts)
        if stale is None:
            raise _superseded(document_id)
    except Superseded:
        raise  # a newer attempt of this job writes the same version: its chunks stay
    except BaseException:  # a failure, a cancel, the worker stopping: a retry rewrites it
        await _drop_own_version(run.services, document_id, job_id)
        raise
    try:
        await _drop_versions(run.services, document_id, stale)
    except Exception as error:
        # The switch is made: this version is the document. The old ones stay marked in the
        # registry, so the next version or the deletion removes them.
        log.warning("old versions not removed", document_id=document_id, error=str(error))
    return chunks


async def _drop_own_version(services: Services, document_id: str, job_id: str) -> None:
    """Delete the chunks a job wrote, unless they are the current version (an earlier
    attempt of the job switched to them). Never masks the error that got here."""
    try:
        document = await services.registry.get(document_id)
        if document is None or document.version != job_id:
            await _drop_versions(services, document_id, [job_id])
    except Exception as error:
        # Still marked in the registry: the next version or the deletion removes them.
        log.warning("version not removed", document_id=document_id, error=str(error))


async def _drop_versions(services: Services, document_id: str, versions: Sequence[str]) -> None:
    if not versions:
        return
    deleting = services.retriever.delete_versions(document_id, versions)
    await guarded(services.breakers["qdrant"], qdrant_call(deleting))
    await services.registry.forget_versions(document_id, versions)


def _superseded(document_id: str) -> VersionSuperseded:
    return VersionSuperseded(
        f"superseded: document {document_id} was uploaded again or deleted since this job "
        "was accepted, and the newer job owns it"
    )


async def _index(run: Run, document_id: str, document: ChunkedDocument) -> int:
    services, record = run.services, run.record

    async def on_progress(stage: str, done: int, total: int) -> None:
        # Once a batch is written: a job that lost the document stops here, not at the end.
        if stage == "upserted" and not await services.registry.owns(document_id, run.job_id):
            raise _superseded(document_id)
        await _progress(run, stage, done, total)

    indexing = services.retriever.index_chunks(
        document_id=document_id,
        title=_title(record, document),
        source=record.source,
        chunks=document.chunks,
        on_progress=on_progress,
        collection=record.collection or services.settings.default_collection,
        version=run.job_id,
        attributes=record.attributes,
    )
    return await guarded(services.breakers["qdrant"], qdrant_call(indexing))


async def _progress(run: Run, stage: str, done: int, total: int) -> None:
    # The latest progress goes on the record too, for /job-status.
    progress = IngestProgress(stage=stage, done=done, total=total)
    await run.emit(ProgressEvent(stage=stage, done=done, total=total), progress=progress)


def _fingerprint(content_sha256: str, record: JobRecord, signature: str) -> str:
    """What the stored chunks of a document follow from: its bytes, how they are read (the
    file name's extension picks the parser), the title and source they are cited by, the
    attributes they carry, and how the retriever chunks and encodes."""
    named = (record.filename, record.title, record.source, record.collection)
    parts = [content_sha256, signature, *(value or "" for value in named)]
    if record.attributes:  # none: the fingerprint of a version written before attributes
        parts.append(orjson.dumps(record.attributes, option=orjson.OPT_SORT_KEYS).decode())
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()


async def _unchanged(services: Services, document_id: str, fingerprint: str) -> int | None:
    """The chunk count, if this very content of the document is its current version."""
    current = await services.registry.get(document_id)
    if current is None or current.fingerprint != fingerprint or current.chunks is None:
        return None
    # Trust, but check that the chunks are still there (a Qdrant emptied under the registry).
    version = current.version or ""  # none: indexed before versions existed
    held = await services.retriever.holds(document_id, current.chunks, version=version)
    return current.chunks if held else None


async def _parse(services: Services, record: JobRecord, raw: bytes) -> ChunkedDocument:
    # In a parse process, within the time, memory, page, text and chunk limits, a file and a
    # JSON body (Markdown text, checked by the API already) alike: a hostile document costs
    # its own process, not this loop (parsing/isolated.py).
    name = record.filename or record.source or record.title or "document"
    return await services.parser.parse(record.filename, raw, _chunking(services, record), name=name)


def _chunking(services: Services, record: JobRecord) -> Chunking:
    """The retriever's chunking, with the document's own size and overlap if it has them."""
    chunking = services.retriever.chunking
    if record.chunk_tokens is None:
        return chunking
    overlap = chunking.overlap if record.chunk_overlap is None else record.chunk_overlap
    return replace(chunking, max_tokens=record.chunk_tokens, overlap=overlap)


def _signature(services: Services, record: JobRecord) -> str:
    """The retriever's signature, and the document's own chunking if it has one: the same
    content chunked otherwise is another version."""
    signature = services.retriever.signature
    if record.chunk_tokens is None:
        return signature
    chunking = _chunking(services, record)
    return f"{signature}; own chunks {chunking.max_tokens}/{chunking.overlap} tokens"


def _title(record: JobRecord, document: ChunkedDocument) -> str:
    filename = (record.filename or "").replace("\\", "/").rsplit("/", 1)[-1]
    return record.title or document.title or filename.rsplit(".", 1)[0] or "untitled"


async def _delete(run: Run) -> Finished:
    """Remove every version's chunks of a document, then its registry entry, while the job
    owns the document (an upload accepted since owns it instead, and replaces them)."""
    services, registry = run.services, run.services.registry
    document_id = _document_id(run.record)
    versions = await registry.begin_deletion(document_id, run.job_id)
    if versions is None:
        raise _superseded(document_id)
    removed = await services.retriever.count(document_id)
    await _drop_versions(services, document_id, versions)
    if not await registry.remove(document_id, run.job_id):
        raise _superseded(document_id)
    return Finished(
        answer=f"deleted {removed} chunks", providers=_retrieval(services), chunks=removed
    )


def _document_id(record: JobRecord) -> str:
    return record.document_id or record.job_id


def _retrieval(services: Services) -> dict[str, str]:
    return {"retrieval": services.retriever.name}


def _qdrant(_: Services) -> Iterable[str]:
    return ("qdrant",)


INGEST = JobSpec(
    work=_ingest,
    first_stage=lambda _: "ingesting",
    providers=_qdrant,
)
DELETE = JobSpec(
    work=_delete,
    first_stage=lambda _: "deleting",
    providers=_qdrant,
)
