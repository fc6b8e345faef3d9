"""Search: a question's retrieval alone, no LLM (POST /search, `rag-async eval`). Its sources
are its result, in the record and the `sources` event like an answer's; its `done` says how
many. The job's life around this work is lifecycle.py's."""

from __future__ import annotations

from rag_async.domain.events import SourcesEvent
from rag_async.worker.jobs.retrieval import Lookup, first_stage, retrieval_providers, retrieve
from rag_async.worker.lifecycle import Finished, JobSpec, Run


async def _search(run: Run) -> Finished:
    settings, record = run.services.settings, run.record
    lookup = Lookup(
        query=record.query or "",
        collection=record.collection or settings.default_collection,
        top_k=record.top_k or settings.top_k,
        score_threshold=record.score_threshold,
        filters=record.filters,
        also=tuple(record.more_collections),
        min_relevance=record.min_relevance,
    )
    sources = await retrieve(run, lookup)
    await run.emit(SourcesEvent(sources=sources), sources=sources)
    found = f"found {len(sources)} source{'' if len(sources) == 1 else 's'}"
    return Finished(answer=found, providers={"retrieval": run.services.retriever.name})


SEARCH = JobSpec(work=_search, first_stage=first_stage, providers=retrieval_providers)
