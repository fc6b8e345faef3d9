"""Ingest one uploaded document: parse, chunk, encode, upsert, with progress events; and
delete one. Both keep the document registry (`registry.py`) up to date."""

from __future__ import annotations

import asyncio
import hashlib
import time

import structlog

from ..breaker import guarded
from ..errors import RagError
from ..eventlog import Superseded
from ..events import TERMINAL_STATUSES, DoneEvent, ErrorEvent, ProgressEvent, StatusEvent
from ..jobstore import JobRecord, dumps
from ..parsing import ParsedDocument, parse
from ..registry import DocumentRegistry
from .attempt import AttemptEvents
from .context import Services, WorkerContext
from .outcome import note_cancellation, retry_or_fail
from .qdrant_calls import qdrant_call

log = structlog.get_logger(__name__)


async def ingest_document(ctx: WorkerContext, job_id: str) -> None:
    services = ctx["services"]
    record = await services.jobs.get(job_id)
    if record is None or record.status in TERMINAL_STATUSES:
        return
    events = services.events
    registry = DocumentRegistry(ctx["redis"], services.keys)
    document_id = record.text("document_id") or job_id
    upload_key = services.keys.upload(job_id)
    raw = await ctx["redis"].get(upload_key)
    if raw is None:
        await events.append(
            job_id,
            ErrorEvent(message="the uploaded text expired before it was ingested", code="expired"),
            {"status": "failed", "error": "upload expired"},
        )
        await registry.put(document_id, {"status": "failed", "error": "upload expired"})
        return
    ctx["attempt"] = attempt = await services.jobs.start_attempt(job_id)
    if not attempt:
        return  # it ended meanwhile: a late write of an older attempt finished it
    structlog.contextvars.bind_contextvars(job_id=job_id)
    attempt_events = AttemptEvents(services.events, job_id, attempt)
    started = time.time()
    await attempt_events.append(
        StatusEvent(status="in_progress", stage="ingesting", attempt=attempt),
        {
            "status": "in_progress",
            "stage": "ingesting",
            "started_at": f"{started:.6f}",
            "worker": services.worker,
        },
    )
    timings = {"queue_wait": started - (record.number("created_at") or started)}
    size = len(raw)
    content_sha256 = hashlib.sha256(raw).hexdigest()
    fingerprint = _fingerprint(content_sha256, record, services.retriever.signature)

    async def on_progress(stage: str, done: int, total: int) -> None:
        # The latest progress goes on the record too, for /job-status.
        progress = dumps({"stage": stage, "done": done, "total": total})
        await attempt_events.append(
            ProgressEvent(stage=stage, done=done, total=total), {"progress": progress}
        )

    try:
        unchanged = await _unchanged(services, registry, document_id, fingerprint)
        if unchanged is None:
            # Until this version is indexed in full, no fingerprint vouches for its chunks.
            await registry.put(document_id, {"status": "ingesting", "fingerprint": ""})
            document = await _parse(ctx, record, raw)
            # A big document is from here on held as its text and its chunks, not as its
            # bytes too (and the retriever writes vectors and points a batch at a time).
            del raw
            await on_progress("parsed", 1, 1)
            title = record.text("title") or document.title or _stem(record) or "untitled"
            indexing = services.retriever.index(
                document_id=document_id,
                title=title,
                source=record.text("source"),
                text=document.text,
                on_progress=on_progress,
                collection=record.text("collection") or services.settings.default_collection,
                page_starts=document.page_starts,
            )
            chunks = await guarded(services.breakers["qdrant"], qdrant_call(indexing))
    except Superseded:
        raise  # a newer attempt owns the document now (jobs/limits.py ends this one quietly)
    except Exception as error:
        if _is_final(ctx, error):
            message = error.message if isinstance(error, RagError) else type(error).__name__
            await registry.put(document_id, {"status": "failed", "error": message})
        await retry_or_fail(ctx, job_id, error)
        return
    except asyncio.CancelledError:
        await note_cancellation(ctx, job_id)
        raise
    finally:
        structlog.contextvars.unbind_contextvars("job_id")
    if unchanged is not None:
        # The same version is indexed already: nothing is written, the job says so.
        await registry.put(document_id, {"status": "indexed", "error": ""})
        await on_progress("unchanged", unchanged, unchanged)
        summary, chunks = f"unchanged: {unchanged} chunks already indexed", unchanged
    else:
        await registry.put(
            document_id,
            {
                "title": title,
                "status": "indexed",
                "chunks": chunks,
                "size": size,
                "format": document.format,
                "content_sha256": content_sha256,
                "fingerprint": fingerprint,
                "ingested_at": f"{time.time():.6f}",
                "error": "",
            },
        )
        summary = f"indexed {chunks} chunks"
    finished = time.time()
    timings["total"] = finished - started
    await _finish(services, attempt_events, summary, chunks, timings, finished)
    await ctx["redis"].delete(upload_key)
    await services.jobs.keep(job_id)
    log.info("ingested", job_id=job_id, chunks=chunks, unchanged=unchanged is not None)


def _fingerprint(content_sha256: str, record: JobRecord, signature: str) -> str:
    """What the stored chunks of a document follow from: its bytes, how they are read (the
    file name's extension picks the parser), the title and source they are cited by, and
    how the retriever chunks and encodes."""
    parts = [content_sha256, signature]
    parts += [record.text(field) or "" for field in ("filename", "title", "source", "collection")]
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()


async def _unchanged(
    services: Services, registry: DocumentRegistry, document_id: str, fingerprint: str
) -> int | None:
    """The chunk count, if this very version of the document is indexed in full already."""
    indexed = await registry.indexed(document_id)
    if indexed is None or indexed[0] != fingerprint:
        return None
    # Trust, but check that the chunks are still there (a Qdrant emptied under the registry).
    return indexed[1] if await services.retriever.holds(document_id, indexed[1]) else None


async def _parse(ctx: WorkerContext, record: JobRecord, raw: bytes) -> ParsedDocument:
    filename = record.text("filename")
    if not filename:  # a JSON body: Markdown text, checked by the API already
        return ParsedDocument(title=None, text=raw.decode("utf-8"), format="markdown")
    # HTML and PDF parsing are CPU-bound (a big PDF takes seconds): keep the loop free.
    limit = ctx["services"].settings.max_document_bytes
    return await asyncio.to_thread(parse, filename, raw, max_bytes=limit)


def _stem(record: JobRecord) -> str | None:
    filename = record.text("filename") or ""
    return filename.replace("\\", "/").rsplit("/", 1)[-1].rsplit(".", 1)[0] or None


def _is_final(ctx: WorkerContext, error: Exception) -> bool:
    """Whether `retry_or_fail` will end the job (rather than hand it back to arq)."""
    retryable = error.retryable if isinstance(error, RagError) else True
    return not retryable or ctx.get("job_try", 1) >= ctx["services"].settings.job_max_tries


async def delete_document(ctx: WorkerContext, job_id: str) -> None:
    """Remove every chunk of a document, then its registry entry."""
    services = ctx["services"]
    record = await services.jobs.get(job_id)
    if record is None or record.status in TERMINAL_STATUSES:
        return
    document_id = record.text("document_id") or ""
    ctx["attempt"] = attempt = await services.jobs.start_attempt(job_id)
    if not attempt:
        return  # it ended meanwhile
    events = AttemptEvents(services.events, job_id, attempt)
    started = time.time()
    await events.append(
        StatusEvent(status="in_progress", stage="deleting", attempt=attempt),
        {"status": "in_progress", "stage": "deleting", "started_at": f"{started:.6f}"},
    )
    try:
        removed = await guarded(
            services.breakers["qdrant"], qdrant_call(services.retriever.delete(document_id))
        )
    except Exception as error:
        await retry_or_fail(ctx, job_id, error)
        return
    await DocumentRegistry(ctx["redis"], services.keys).remove(document_id)
    finished = time.time()
    timings = {"total": finished - started}
    await _finish(services, events, f"deleted {removed} chunks", removed, timings, finished)
    await services.jobs.keep(job_id)
    log.info("deleted document", document_id=document_id, chunks=removed)


async def _finish(
    services: Services,
    events: AttemptEvents,
    summary: str,
    chunks: int,
    timings: dict[str, float],
    finished: float,
) -> None:
    """End a document job: its `done` event and the record marked complete, in one step."""
    await events.append(
        DoneEvent(
            answer=summary,
            timings=timings,
            chunks=chunks,
            providers={"retrieval": services.retriever.name},
        ),
        {
            "status": "complete",
            "stage": "done",
            "chunks": chunks,
            "timings": dumps(timings),
            "finished_at": f"{finished:.6f}",
        },
    )
