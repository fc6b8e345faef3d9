"""POST /v1/vector_stores/{id}/search in OpenAI's shape: the request and the page of results.

The search itself is a retrieval-only job (no answer), over the store's collection, with the
metadata `filters` applied in the store: until that job exists the route checks the request
and the store, then answers 501.

Wiring it (the `search` branch's routes/search.py): `submit_search(submission,
VectorStoreSearchRequest(query=…, collection=store.store_id, top_k=max_num_results,
score_threshold=ranking_options.score_threshold, filters=…))` then `wait_for_end`, and each
`Source` found becomes a `SearchResult`: file id its `source`, file name its `title`, text its
`text`, score its `score`, attributes the attachment's (store/vector_stores.py), its
`document_id` being `attaching.document_id_of(store, file)`. A list `query` is several
searches, merged by score.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StringConstraints

from rag_async.api.auth import Caller
from rag_async.api.openai_compat.vector_stores import ERRORS, owned_store
from rag_async.api.state import State
from rag_async.domain.errors import RagError
from rag_async.store.vector_stores import Attributes

router = APIRouter(prefix="/v1", tags=["openai"])

_Query = Annotated[str, StringConstraints(min_length=1, max_length=4000)]


class SearchUnavailable(RagError):
    status_code = 501
    code = "not_implemented"


class RankingOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ranker: Literal["none", "auto", "default-2024-11-15"] | None = None
    score_threshold: float | None = Field(default=None, strict=True, ge=0, le=1)


class VectorStoreSearchRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"query": "How do I brew tea?"}]}
    )

    query: _Query | Annotated[list[_Query], Field(min_length=1, max_length=10)]
    # OpenAI's comparison and compound filters: checked by domain/filters.py when wired.
    filters: dict[str, Any] | None = None
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
    responses={**ERRORS, 501: {"model": ERRORS[400]["model"]}},
)
async def search_vector_store(
    vector_store_id: str, body: VectorStoreSearchRequest, state: State, caller: Caller
) -> SearchPage:
    """The store's chunks nearest the query, best first (at most `max_num_results`, none
    scoring under `ranking_options.score_threshold`), filtered on their attributes."""
    await owned_store(state, caller, vector_store_id)
    raise SearchUnavailable(
        "searching a vector store is not available yet: ask a question of it with "
        f"POST /chat and collection {vector_store_id!r}"
    )
