"""Ingest one uploaded document (parse, chunk, encode, upsert, with progress events), and
delete one. Both keep the document registry (store/documents.py) up to date; the job's life
around this work (attempts, retries, the end) is worker/lifecycle.py's, and what a document
job's failed end does to the registry is worker/kinds.py's."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable

from rag_async.domain.errors import RagError
from rag_async.domain.events import ProgressEvent
from rag_async.domain.job import IngestProgress, JobRecord
from rag_async.providers.breaker import guarded
from rag_async.providers.parsing import ParsedDocument
from rag_async.providers.retrieval.qdrant_calls import qdrant_call
from rag_async.worker.lifecycle import Finished, JobSpec, Run
from rag_async.worker.services import Services


class UploadExpired(RagError):
    code = "expired"  # the bytes are gone: no try can bring them back


async def _ingest(run: Run) -> Finished:
    services, record = run.services, run.record
    document_id = _document_id(record)
    raw = await services.uploads.get(run.job_id)
    if raw is None:
        raise UploadExpired("the uploaded text expired before it was ingested")
    size = len(raw)
    content_sha256 = hashlib.sha256(raw).hexdigest()
    fingerprint = _fingerprint(content_sha256, record, services.retriever.signature)
    unchanged = await _unchanged(services, document_id, fingerprint)
    if unchanged is not None:
        # The same version is indexed already: nothing is written, the job says so.
        await services.registry.put(document_id, {"status": "indexed", "error": ""})
        await _progress(run, "unchanged", unchanged, unchanged)
        summary, chunks = f"unchanged: {unchanged} chunks already indexed", unchanged
    else:
        # Until this version is indexed in full, no fingerprint vouches for its chunks.
        await services.registry.put(document_id, {"status": "ingesting", "fingerprint": ""})
        document = await _parse(services, record, raw)
        # A big document is from here on held as its text and its chunks, not as its bytes
        # too (and the retriever writes vectors and points a batch at a time).
        del raw
        await _progress(run, "parsed", 1, 1)
        chunks = await _index(run, document_id, document)
        await services.registry.put(
            document_id,
            {
                "title": _title(record, document),
                "status": "indexed",
                "chunks": chunks,
                "size": size,
                "format": document.format,
                "content_sha256": content_sha256,
                "fingerprint": fingerprint,
                "ingested_at": time.time(),
                "error": "",
            },
        )
        summary = f"indexed {chunks} chunks"
    return Finished(answer=summary, providers=_retrieval(services), chunks=chunks)


async def _index(run: Run, document_id: str, document: ParsedDocument) -> int:
    services, record = run.services, run.record

    async def on_progress(stage: str, done: int, total: int) -> None:
        await _progress(run, stage, done, total)

    indexing = services.retriever.index(
        document_id=document_id,
        title=_title(record, document),
        source=record.source,
        text=document.text,
        on_progress=on_progress,
        collection=record.collection or services.settings.default_collection,
        page_starts=document.page_starts,
    )
    return await guarded(services.breakers["qdrant"], qdrant_call(indexing))


async def _progress(run: Run, stage: str, done: int, total: int) -> None:
    # The latest progress goes on the record too, for /job-status.
    progress = IngestProgress(stage=stage, done=done, total=total)
    await run.emit(ProgressEvent(stage=stage, done=done, total=total), progress=progress)


def _fingerprint(content_sha256: str, record: JobRecord, signature: str) -> str:
    """What the stored chunks of a document follow from: its bytes, how they are read (the
    file name's extension picks the parser), the title and source they are cited by, and
    how the retriever chunks and encodes."""
    named = (record.filename, record.title, record.source, record.collection)
    parts = [content_sha256, signature, *(value or "" for value in named)]
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()


async def _unchanged(services: Services, document_id: str, fingerprint: str) -> int | None:
    """The chunk count, if this very version of the document is indexed in full already."""
    indexed = await services.registry.indexed(document_id)
    if indexed is None or indexed[0] != fingerprint:
        return None
    # Trust, but check that the chunks are still there (a Qdrant emptied under the registry).
    return indexed[1] if await services.retriever.holds(document_id, indexed[1]) else None


async def _parse(services: Services, record: JobRecord, raw: bytes) -> ParsedDocument:
    if not record.filename:  # a JSON body: Markdown text, checked by the API already
        return ParsedDocument(title=None, text=raw.decode("utf-8"), format="markdown")
    # In a parse process, within the time, memory, page and text limits: a hostile file
    # costs its own process, not this loop (parsing/isolated.py).
    return await services.parser.parse(record.filename, raw)


def _title(record: JobRecord, document: ParsedDocument) -> str:
    filename = (record.filename or "").replace("\\", "/").rsplit("/", 1)[-1]
    return record.title or document.title or filename.rsplit(".", 1)[0] or "untitled"


async def _delete(run: Run) -> Finished:
    """Remove every chunk of a document, then its registry entry."""
    services = run.services
    document_id = _document_id(run.record)
    deleting = services.retriever.delete(document_id)
    removed = await guarded(services.breakers["qdrant"], qdrant_call(deleting))
    await services.registry.remove(document_id)
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
