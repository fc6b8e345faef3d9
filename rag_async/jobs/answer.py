"""Answer one question: retrieve, stream the LLM, and tell the story as events. The job's
life around this work (attempts, retries, the end) is jobs/lifecycle.py's."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterable

from ..breaker import guarded, guarded_stream
from ..events import SourcesEvent, TokenEvent
from ..llm import screen
from .context import Services
from .lifecycle import Finished, JobSpec, Run
from .qdrant_calls import qdrant_call


async def _answer(run: Run) -> Finished:
    services, record = run.services, run.record
    retriever, breakers = services.retriever, services.breakers
    query = record.query or ""
    dense = None
    if retriever.embeds_queries:
        since = time.time()
        dense = await guarded(breakers["embedder"], retriever.embed_query(query))
        run.lap("embedding", since)
        await run.stage("retrieving")
    since = time.time()  # each stage's timing is its own work, not the events that tell it
    collection = record.collection or services.settings.default_collection
    search = retriever.search(query, services.settings.top_k, dense=dense, collection=collection)
    sources = await guarded(breakers["qdrant"], qdrant_call(search))
    since = run.lap("retrieval", since)
    await run.emit(SourcesEvent(sources=sources), sources=sources)
    await run.stage("generating")

    parts: list[str] = []
    answer = services.llm.stream(query, sources, collection=collection)
    answer_stream = guarded_stream(breakers["llm"], answer)
    batches = coalesce(answer_stream, services.settings.token_flush_interval)
    async for batch in screen(batches, sources):  # what the answer must not carry (llm/safety)
        if not parts:
            run.lap("time_to_first_token", record.created_at or run.started)
        parts.append(batch)
        await run.emit(TokenEvent(text=batch))
    run.lap("generation", since)
    return Finished(answer="".join(parts), providers=services.providers)


def _first_stage(services: Services) -> str:
    return "embedding" if services.retriever.embeds_queries else "retrieving"


def _providers(services: Services) -> Iterable[str]:
    return ("llm", "qdrant", "embedder") if services.retriever.embeds_queries else ("llm", "qdrant")


ANSWER = JobSpec(work=_answer, first_stage=_first_stage, providers=_providers)


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
