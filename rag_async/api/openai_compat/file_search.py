"""The Responses API's `file_search` tool, run by the answer job: its sources are searched for
in the tool's vector stores (each the caller's, else 404), with its `filters`, at most its
`max_num_results`, none under its `ranking_options.score_threshold` (a relevance, 0..1:
domain/relevance.py). The response's output then holds a `file_search_call` item before the
message (its query, and with `include=["file_search_call.results"]` the passages found), and
the message cites the files (`file_citation`, wire.py).

The tool is checked in tools.py; `tool_choice: "none"` leaves it unused (the answer is then
written from the request's collection, as without tools).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import TypeAdapter

from rag_async.api.openai_compat.cited_files import CALL_PREFIX, call_item
from rag_async.api.openai_compat.inputs import ResponsesRequest
from rag_async.api.openai_compat.tools import accepted_tools
from rag_async.api.openai_compat.vector_stores import owned_store
from rag_async.api.state import AppState
from rag_async.domain.filters import Filter
from rag_async.domain.identity import Principal
from rag_async.domain.job import JobRecord
from rag_async.domain.sources import Source

RESULTS = "file_search_call.results"
_FILTER: TypeAdapter[Filter] = TypeAdapter(Filter)


def used_tool(body: ResponsesRequest) -> dict[str, Any] | None:
    """The request's file_search tool, as tools.py keeps it, unless `tool_choice` is none."""
    if body.tool_choice == "none":
        return None
    return next((t for t in accepted_tools(body.tools) if t["type"] == "file_search"), None)


async def search_bounds(state: AppState, caller: Principal, tool: dict[str, Any]) -> dict[str, Any]:
    """What the answer's question searches with the tool (`Question`'s fields): its vector
    stores, each the caller's (404 otherwise), its filters and bounds."""
    stores = [await owned_store(state, caller, store_id) for store_id in tool["vector_store_ids"]]
    filters: Filter | None = None
    if "filters" in tool:
        filters = _FILTER.validate_python(tool["filters"])
    ranking = tool.get("ranking_options") or {}
    return {
        "collection": stores[0].store_id,
        "more_collections": tuple(store.store_id for store in stores[1:]),
        "filters": filters,
        "top_k": tool.get("max_num_results"),
        "min_relevance": ranking.get("score_threshold"),
    }


def echo(body: ResponsesRequest, tool: dict[str, Any] | None) -> dict[str, Any]:
    """What the response object says of the tools, kept with the job (wire.py `echoed`)."""
    return {
        "tools": accepted_tools(body.tools),
        "tool_choice": body.tool_choice if body.tool_choice is not None else "auto",
        "file_search": tool is not None,
        "file_search_results": RESULTS in (body.include or ()),
    }


def call_events(record: JobRecord, sources: Sequence[Source]) -> list[dict[str, Any]]:
    """The stream's events of the search, as OpenAI sends them (output index 0)."""
    item_id = f"{CALL_PREFIX}{record.job_id}"
    at = {"output_index": 0, "item_id": item_id}
    return [
        {
            "type": "response.output_item.added",
            "output_index": 0,
            "item": call_item(record, sources, done=False),
        },
        {"type": "response.file_search_call.in_progress", **at},
        {"type": "response.file_search_call.searching", **at},
        {"type": "response.file_search_call.completed", **at},
        {
            "type": "response.output_item.done",
            "output_index": 0,
            "item": call_item(record, sources, done=True),
        },
    ]
