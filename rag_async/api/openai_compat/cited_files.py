"""What a /v1 answer or search says of the files its passages come from: a source's file id
and name (`file_of`), and the Responses API's `file_search_call` item (file_search.py runs the
tool; wire.py and response_events.py put the item in the output)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rag_async.domain.job import JobRecord
from rag_async.domain.sources import Source

CALL_PREFIX = "fs_"
FILE_PREFIX = "file-"


def file_of(source: Source) -> tuple[str, str]:
    """The file id and file name a source is cited by: a vector store file's own (its chunks
    are sourced from its `file-…` id and titled with its name, attaching.py), else the
    document's id and its name."""
    if is_file(source) and source.source is not None:
        return source.source, source.title
    return source.document_id, source.source or source.title


def is_file(source: Source) -> bool:
    """Whether the source is a chunk of a /v1 file (attached to a vector store)."""
    return bool(source.source and source.source.startswith(FILE_PREFIX))


def searched(record: JobRecord) -> bool:
    return bool(record.v1.get("file_search"))


def call_item(record: JobRecord, sources: Sequence[Source], *, done: bool) -> dict[str, Any]:
    """The `file_search_call` output item: the query searched, and the passages found when
    the request included them (and the search has ended)."""
    results = None
    if done and record.v1.get("file_search_results"):
        results = [_result(source) for source in sources]
    return {
        "id": f"{CALL_PREFIX}{record.job_id}",
        "type": "file_search_call",
        "status": "completed" if done else "in_progress",
        "queries": [record.query or ""],
        "results": results,
    }


def _result(source: Source) -> dict[str, Any]:
    file_id, filename = file_of(source)
    return {
        "file_id": file_id,
        "filename": filename,
        "score": source.relevance or 0.0,
        "text": source.text,
        "attributes": source.attributes or {},
    }
