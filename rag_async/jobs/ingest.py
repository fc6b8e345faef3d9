"""Ingest one uploaded document: chunk, encode, upsert, with progress events."""

from __future__ import annotations

import asyncio
import time

import structlog

from ..events import TERMINAL_STATUSES, DoneEvent, ErrorEvent, ProgressEvent, StatusEvent
from ..jobstore import dumps
from .context import WorkerContext
from .outcome import note_cancellation, retry_or_fail

log = structlog.get_logger(__name__)


async def ingest_document(ctx: WorkerContext, job_id: str) -> None:
    services = ctx["services"]
    record = await services.jobs.get(job_id)
    if record is None or record.status in TERMINAL_STATUSES:
        return
    events = services.events
    upload_key = services.keys.upload(job_id)
    raw = await ctx["redis"].get(upload_key)
    if raw is None:
        await events.append(
            job_id,
            ErrorEvent(message="the uploaded text expired before it was ingested", code="expired"),
            {"status": "failed", "error": "upload expired"},
        )
        return
    structlog.contextvars.bind_contextvars(job_id=job_id)
    attempt = await services.jobs.start_attempt(job_id)
    started = time.time()
    await events.append(
        job_id,
        StatusEvent(status="in_progress", stage="ingesting", attempt=attempt),
        {
            "status": "in_progress",
            "stage": "ingesting",
            "started_at": f"{started:.6f}",
            "worker": services.worker,
        },
    )

    async def on_progress(stage: str, done: int, total: int) -> None:
        await events.append(job_id, ProgressEvent(stage=stage, done=done, total=total))

    try:
        chunks = await services.retriever.index(
            document_id=record.text("document_id") or job_id,
            title=record.text("title") or "untitled",
            source=record.text("source"),
            text=raw.decode("utf-8"),
            on_progress=on_progress,
        )
    except Exception as error:
        await retry_or_fail(ctx, job_id, error)
        return
    except asyncio.CancelledError:
        await note_cancellation(ctx, job_id)
        raise
    finally:
        structlog.contextvars.unbind_contextvars("job_id")
    finished = time.time()
    timings = {
        "queue_wait": started - (record.number("created_at") or started),
        "total": finished - started,
    }
    await events.append(
        job_id,
        DoneEvent(
            answer=f"indexed {chunks} chunks",
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
    await ctx["redis"].delete(upload_key)
    await services.jobs.keep(job_id)
    log.info("ingested", job_id=job_id, chunks=chunks)
