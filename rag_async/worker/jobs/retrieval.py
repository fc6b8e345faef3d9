"""The retrieval step of a job, the one way an answer and a search both find their sources:
the query embedded (a stage of its own, timed), the store searched through its breakers, the
passages bounded, each step's time in the job's timings."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

from rag_async.domain.filters import Filter
from rag_async.domain.relevance import at_least, with_relevance
from rag_async.domain.sources import Source, clip_sources, renumbered
from rag_async.providers.breaker import guarded
from rag_async.providers.retrieval.qdrant_calls import qdrant_call
from rag_async.worker.lifecycle import Run
from rag_async.worker.services import Services


@dataclass(frozen=True, slots=True)
class Lookup:
    """What to look for, and where: the query, the stored collection name (and `also` those
    searched with it: their results merged by score), how many sources, the lowest score kept
    (none: RAG_SCORE_THRESHOLD's, if set) and the lowest relevance (domain/relevance.py), and
    which documents' chunks (`filters` on their attributes; none: all)."""

    query: str
    collection: str
    top_k: int
    score_threshold: float | None = None
    filters: Filter | None = None
    also: tuple[str, ...] = ()
    min_relevance: float | None = None


async def retrieve(run: Run, lookup: Lookup) -> list[Source]:
    """The sources for `lookup`, numbered 1..n, each passage within the service's bound."""
    services = run.services
    retriever, breakers = services.retriever, services.breakers
    dense = None
    if retriever.embeds_queries:
        since = time.time()
        dense = await guarded(breakers["embedder"], retriever.embed_query(lookup.query))
        run.lap("embedding", since)
        await run.stage("retrieving")
    since = time.time()  # each stage's timing is its own work, not the events that tell it
    found: list[Source] = []
    for collection in (lookup.collection, *lookup.also):
        search = retriever.search(
            lookup.query,
            lookup.top_k,
            dense=dense,
            collection=collection,
            filters=lookup.filters,
            score_threshold=lookup.score_threshold,
        )
        found += await guarded(breakers["qdrant"], qdrant_call(search))
    if lookup.also:
        found = _merged(found, lookup.top_k)
    found = at_least(with_relevance(found, retriever.best_score), lookup.min_relevance)
    # One bound for every copy of a passage: the record, the event, the stream, the prompt.
    sources = clip_sources(found, services.settings.max_source_chars)
    run.lap("retrieval", since)
    return sources


def _merged(found: list[Source], top_k: int) -> list[Source]:
    """The best `top_k` of several collections' results, by score (the scale is the same:
    one retriever's), numbered 1..k."""
    ranked = sorted(found, key=lambda source: source.score, reverse=True)[:top_k]
    return renumbered(ranked)


def first_stage(services: Services) -> str:
    return "embedding" if services.retriever.embeds_queries else "retrieving"


def retrieval_providers(services: Services) -> Iterable[str]:
    """The providers a search calls, whose breakers must be closed for it to start."""
    return ("qdrant", "embedder") if services.retriever.embeds_queries else ("qdrant",)
