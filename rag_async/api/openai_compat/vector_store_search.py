"""POST /v1/vector_stores/{id}/search in OpenAI's shape: the request and the page of results.

The search is a retrieval-only job (routes/search.py's, no answer) over the store's collection,
with the metadata `filters` applied in the store and at most `max_num_results` results. Each
result's `score` is the chunk's relevance, from 0 to 1 (domain/relevance.py, the one rule), and
`ranking_options.score_threshold` is compared with it. A list `query` is one search per query,
merged by score. A result names the file its chunk is of (file id, name, and the attributes it
was attached with, which the chunk's payload carries).
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StringConstraints

from rag_async.api.auth import Caller
from rag_async.api.enqueue import Submission
from rag_async.api.openai_compat.answers import StillRunning, wait_for_end
from rag_async.api.openai_compat.cited_files import file_of
from rag_async.api.openai_compat.vector_stores import ERRORS, owned_store
from rag_async.api.routes.search import search_results, submit_search
from rag_async.api.state import State
from rag_async.api.stream import stream_slot
from rag_async.domain.filters import FILTERS_DESCRIPTION, Filter
from rag_async.domain.schemas import SearchRequest
from rag_async.domain.sources import Source
from rag_async.store.vector_stores import Attributes

router = APIRouter(prefix="/v1", tags=["openai"])

_Query = Annotated[str, StringConstraints(min_length=1, max_length=4000)]


class RankingOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ranker: Literal["none", "auto", "default-2024-11-15"] | None = None
    score_threshold: float | None = Field(default=None, strict=True, ge=0, le=1)


class VectorStoreSearchRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"query": "How do I brew tea?"}]}
    )

    query: _Query | Annotated[list[_Query], Field(min_length=1, max_length=10)]
    filters: Filter | None = Field(default=None, description=FILTERS_DESCRIPTION)
    max_num_results: int = Field(default=10, strict=True, ge=1, le=50)
    ranking_options: RankingOptions | None = None
    rewrite_query: StrictBool = False


class TextContent(BaseModel):
    type: Literal["text"] = "text"
    text: str


class SearchResult(BaseModel):
    file_id: str
    filename: str
    score: float
    attributes: Attributes | None = None
    content: list[TextContent]


class SearchPage(BaseModel):
    object: Literal["vector_store.search_results.page"] = "vector_store.search_results.page"
    search_query: list[str]
    data: list[SearchResult]
    has_more: bool = False
    next_page: str | None = None


@router.post(
    "/vector_stores/{vector_store_id}/search",
    response_model=SearchPage,
    responses={
        **ERRORS,
        502: {"model": ERRORS[400]["model"]},
        504: {"model": ERRORS[400]["model"]},
    },
)
async def search_vector_store(
    vector_store_id: str,
    body: VectorStoreSearchRequest,
    request: Request,
    state: State,
    caller: Caller,
) -> SearchPage:
    """The store's chunks nearest the query, best first (at most `max_num_results`, none
    scoring under `ranking_options.score_threshold`), filtered on their attributes."""
    store = await owned_store(state, caller, vector_store_id)
    queries = [body.query] if isinstance(body.query, str) else body.query
    threshold = body.ranking_options.score_threshold if body.ranking_options else None
    submission = Submission(state, request, caller)
    release = stream_slot(state, caller)  # one, as one request waits for its searches
    try:
        found = await asyncio.gather(
            *(_search(submission, store.store_id, query, body, threshold) for query in queries)
        )
    finally:
        release()
    best = sorted(
        (source for sources in found for source in sources),
        key=lambda source: source.relevance or 0.0,
        reverse=True,
    )[: body.max_num_results]
    return SearchPage(search_query=queries, data=[_result(source) for source in best])


async def _search(
    submission: Submission,
    store_id: str,
    query: str,
    body: VectorStoreSearchRequest,
    threshold: float | None,
) -> list[Source]:
    asked = SearchRequest(
        query=query, collection=store_id, top_k=body.max_num_results, filters=body.filters
    )
    job_id = await submit_search(submission, asked, min_relevance=threshold)
    state = submission.state
    record = await wait_for_end(state, job_id, state.settings.search_wait)
    if record is None:
        raise StillRunning(f"the search is still queued: its results will be at /jobs/{job_id}")
    return search_results(state, record).results


def _result(source: Source) -> SearchResult:
    file_id, filename = file_of(source)
    return SearchResult(
        file_id=file_id,
        filename=filename,
        score=source.relevance or 0.0,
        attributes=source.attributes,
        content=[TextContent(text=source.text)],
    )
