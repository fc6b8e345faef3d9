"""OpenAI's cursor pages: `{"object": "list", "data", "first_id", "last_id", "has_more"}`,
read with `limit`, `order` (by creation) and `after`/`before` (an id of the list), as the SDKs'
auto-paging iterators ask for the next page."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal, TypeVar

from fastapi import Query

from rag_async.domain.errors import BadRequest

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class PageQuery:
    limit: int
    order: Literal["asc", "desc"]
    after: str | None
    before: str | None


def page_query(
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    order: Literal["asc", "desc"] = "desc",
    after: Annotated[str | None, Query(max_length=200)] = None,
    before: Annotated[str | None, Query(max_length=200)] = None,
) -> PageQuery:
    return PageQuery(limit, order, after, before)


def file_page_query(
    limit: Annotated[int, Query(ge=1, le=10_000)] = 10_000,
    order: Literal["asc", "desc"] = "desc",
    after: Annotated[str | None, Query(max_length=200)] = None,
) -> PageQuery:
    """GET /v1/files' own bounds, OpenAI's: up to 10,000 files a page, all by default."""
    return PageQuery(limit, order, after, None)


def page(items: Sequence[T], query: PageQuery, id_of: Callable[[T], str]) -> tuple[list[T], bool]:
    """The page of `items` (oldest first) that `query` asks for, and whether more follow.
    A cursor that names no item is refused (422): the item it named is gone."""
    ordered = list(items) if query.order == "asc" else list(reversed(items))
    ids = [id_of(item) for item in ordered]
    start, end = 0, len(ordered)
    if query.after is not None:
        start = _position(ids, query.after, "after") + 1
    if query.before is not None:
        end = _position(ids, query.before, "before")
    chosen = ordered[start:end]
    return chosen[: query.limit], len(chosen) > query.limit


def _position(ids: list[str], cursor: str, name: str) -> int:
    try:
        return ids.index(cursor)
    except ValueError:
        raise BadRequest(f"{name}={cursor[:80]!r} names nothing in this list") from None


def list_object(data: list[dict[str, Any]], has_more: bool) -> dict[str, Any]:
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": has_more,
    }
