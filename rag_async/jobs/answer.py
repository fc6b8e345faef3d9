"""Answer one question: retrieve, stream the LLM, and tell the story as events."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import structlog

from ..breaker import guarded, guarded_stream
from ..events import TERMINAL_STATUSES, DoneEvent, SourcesEvent, StatusEvent, TokenEvent
from ..jobstore import dumps
from .attempt import AttemptEvents
from .context import Services, WorkerContext
from .outcome import note_cancellation, retry_or_fail
from .qdrant_calls import qdrant_call

log = structlog.get_logger(__name__)


async def answer_question(ctx: WorkerContext, job_id: str) -> None:
    """The arq job. arq delivers at least once: an attempt on a finished job does nothing."""
    services = ctx["services"]
    record = await services.jobs.get(job_id)
    if record is None:
        log.warning("job record missing (expired?), dropping", job_id=job_id)
        return
    if record.status in TERMINAL_STATUSES:
        return
    created_at = record.number("created_at") or time.time()
    query = record.text("query") or ""
    structlog.contextvars.bind_contextvars(job_id=job_id, request_id=record.text("request_id"))
    try:
        # A provider known to be down: wait before starting (no attempt counted, no events).
        services.breakers["llm"].check()
        services.breakers["qdrant"].check()
        if services.retriever.embeds_queries:
            services.breakers["embedder"].check()
        ctx["attempt"] = await services.jobs.start_attempt(job_id)
        if not ctx["attempt"]:
            return  # it ended meanwhile: a late write of an older attempt finished it
        events = AttemptEvents(services.events, job_id, ctx["attempt"])
        await _answer(services, events, query, created_at, record.text("collection"))
    except Exception as error:
        await retry_or_fail(ctx, job_id, error)
    except asyncio.CancelledError:
        await note_cancellation(ctx, job_id)
        raise
    finally:
        structlog.contextvars.unbind_contextvars("job_id", "request_id")


async def _answer(
    services: Services,
    events: AttemptEvents,
    query: str,
    created_at: float,
    collection: str | None,
) -> None:
    job_id, attempt = events.job_id, events.attempt
    started = time.time()
    timings = {"queue_wait": started - created_at}
    retriever = services.retriever
    first_stage = "embedding" if retriever.embeds_queries else "retrieving"
    await events.append(
        StatusEvent(status="in_progress", stage=first_stage, attempt=attempt),
        {
            "status": "in_progress",
            "stage": first_stage,
            "started_at": f"{started:.6f}",
            "worker": services.worker,
        },
    )
    dense = None
    if retriever.embeds_queries:
        dense = await guarded(services.breakers["embedder"], retriever.embed_query(query))
        timings["embedding"] = time.time() - started
        await events.append(
            StatusEvent(status="in_progress", stage="retrieving", attempt=attempt),
            {"stage": "retrieving"},
        )
    retrieval_started = time.time()
    search = retriever.search(
        query,
        services.settings.top_k,
        dense=dense,
        collection=collection or services.settings.default_collection,
    )
    sources = await guarded(services.breakers["qdrant"], qdrant_call(search))
    timings["retrieval"] = time.time() - retrieval_started
    await events.append(
        SourcesEvent(sources=sources),
        {"sources": dumps([s.model_dump() for s in sources])},
    )
    await events.append(
        StatusEvent(status="in_progress", stage="generating", attempt=attempt),
        {"stage": "generating"},
    )

    generation_started = time.time()
    parts: list[str] = []
    answer_stream = guarded_stream(services.breakers["llm"], services.llm.stream(query, sources))
    async for batch in coalesce(answer_stream, services.settings.token_flush_interval):
        if not parts:
            timings["time_to_first_token"] = time.time() - created_at
        parts.append(batch)
        await events.append(TokenEvent(text=batch))

    finished = time.time()
    timings["generation"] = finished - generation_started
    timings["total"] = finished - created_at
    answer = "".join(parts)
    await events.append(
        DoneEvent(answer=answer, timings=timings, providers=services.providers),
        {
            "status": "complete",
            "stage": "done",
            "answer": answer,
            "timings": dumps(timings),
            "providers": dumps(services.providers),
            "finished_at": f"{finished:.6f}",
        },
    )
    await services.jobs.keep(job_id)
    log.info("answered", total_ms=round(timings["total"] * 1000, 1), chars=len(answer))


async def coalesce(pieces: AsyncIterator[str], interval: float) -> AsyncIterator[str]:
    """Join streamed pieces into batches at most one per `interval` seconds.

    The first piece goes out at once (time to first token is what users feel); later ones
    wait until `interval` has passed since the last batch. A piece is only ever held until the
    next one arrives or the stream ends, so nothing is delayed by more than one gap.
    """
    buffer: list[str] = []
    last_flush = 0.0
    async for piece in pieces:
        buffer.append(piece)
        now = time.monotonic()
        if now - last_flush >= interval:
            yield "".join(buffer)
            buffer.clear()
            last_flush = now
    if buffer:
        yield "".join(buffer)
