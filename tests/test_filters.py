"""Metadata filters: every operator over both embedded backends (qdrant-client's local mode and
Qdrant Edge), lexical and hybrid, with one set of adapter tests; the translation a Qdrant
server is sent (the same qdrant-client models local mode evaluates); and the filter model's
bounds, each refused with its reason."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import TypeAdapter, ValidationError
from qdrant_client import models

from rag_async.domain.filters import MAX_CONDITIONS, MAX_DEPTH, Attributes, Filter
from rag_async.providers.retrieval import ChunkStore, LexicalEncoder, Retriever
from rag_async.providers.retrieval.edge_store import EdgeChunkStore
from rag_async.providers.retrieval.payload_filters import (
    MAX_ATTRIBUTE_INDEXES,
    AttributeIndexes,
    index_schemas,
    search_filter,
)
from tests.test_retrieval import HashingEmbedder
from tests.test_stores import BACKENDS, _opened

FILTER: TypeAdapter[Filter] = TypeAdapter(Filter)
ATTRIBUTES: TypeAdapter[dict[str, Any]] = TypeAdapter(Attributes)

DOCUMENTS: dict[str, dict[str, Any]] = {
    "a": {"author": "alice", "year": 2019, "score": 4.5, "draft": True, "published": "2024-01-15"},
    "b": {
        "author": "bob",
        "year": 2021,
        "score": 3,
        "draft": False,
        "published": "2024-06-01T10:00:00Z",
    },
    "c": {"author": "carol", "year": 2023, "score": 2.25},
    "d": {},
}


def eq(key: str, value: Any) -> dict[str, Any]:
    return {"type": "eq", "key": key, "value": value}


# Each filter, and the documents it keeps.
CASES: list[tuple[dict[str, Any], set[str]]] = [
    (eq("author", "alice"), {"a"}),
    (eq("year", 2021), {"b"}),
    (eq("year", 2021.0), {"b"}),  # a number is a number, integer or not
    (eq("score", 3), {"b"}),
    (eq("score", 4.5), {"a"}),
    (eq("draft", True), {"a"}),
    (eq("draft", False), {"b"}),
    (eq("year", "2021"), set()),  # the string is not the number
    (eq("draft", "true"), set()),  # nor the word the boolean
    (eq("author", "nobody"), set()),
    ({"type": "ne", "key": "author", "value": "alice"}, {"b", "c", "d"}),  # d: no author
    ({"type": "ne", "key": "draft", "value": True}, {"b", "c", "d"}),
    ({"type": "ne", "key": "score", "value": 3}, {"a", "c", "d"}),
    ({"type": "gt", "key": "year", "value": 2019}, {"b", "c"}),
    ({"type": "gte", "key": "year", "value": 2021}, {"b", "c"}),
    ({"type": "lt", "key": "year", "value": 2021}, {"a"}),
    ({"type": "lte", "key": "year", "value": 2021}, {"a", "b"}),
    ({"type": "gt", "key": "score", "value": 2.5}, {"a", "b"}),
    ({"type": "gt", "key": "published", "value": "2024-03-01"}, {"b"}),
    ({"type": "lte", "key": "published", "value": "2024-01-15"}, {"a"}),
    ({"type": "lt", "key": "published", "value": "2024-06-01T10:00:00+00:00"}, {"a"}),
    ({"type": "gte", "key": "published", "value": "2024-06-01T12:00:00+02:00"}, {"b"}),
    ({"type": "in", "key": "author", "value": ["alice", "carol"]}, {"a", "c"}),
    ({"type": "in", "key": "year", "value": [2019, 2023]}, {"a", "c"}),
    ({"type": "in", "key": "author", "value": ["bob", 5]}, {"b"}),
    ({"type": "in", "key": "score", "value": [4.5, "x"]}, {"a"}),
    ({"type": "nin", "key": "author", "value": ["alice", "bob"]}, {"c", "d"}),
    ({"type": "nin", "key": "year", "value": [2019, 2021, 2023]}, {"d"}),
    (
        {
            "type": "and",
            "filters": [{"type": "gte", "key": "year", "value": 2020}, eq("author", "bob")],
        },
        {"b"},
    ),
    (
        {
            "type": "or",
            "filters": [eq("author", "alice"), {"type": "gt", "key": "year", "value": 2022}],
        },
        {"a", "c"},
    ),
    (
        {
            "type": "and",
            "filters": [
                {"type": "or", "filters": [eq("author", "alice"), eq("author", "bob")]},
                {"type": "ne", "key": "draft", "value": True},
            ],
        },
        {"b"},
    ),
]


@pytest.fixture(params=[(backend, dense) for backend in BACKENDS for dense in (None, 64)])
async def indexed(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Retriever]:
    """Four documents with their attributes (d has none), in a store of each backend, searched
    lexically and hybrid."""
    backend, dense_dim = request.param
    store: ChunkStore = await _opened(tmp_path, backend, dense_dim)
    embedder = HashingEmbedder(dense_dim) if dense_dim else None
    retriever = Retriever(
        store, LexicalEncoder(), embedder, chunk_tokens=120, chunk_overlap=24, per_document=None
    )
    try:
        for name, attributes in DOCUMENTS.items():
            text = f"The orchard of {name} grows apples."
            await retriever.index(name, name.upper(), None, text, attributes=attributes)
        await retriever.index("x", "X", None, "The orchard elsewhere.", collection="other")
        yield retriever
    finally:
        await store.close()


async def _found(retriever: Retriever, where: dict[str, Any] | None, **kwargs: Any) -> set[str]:
    filters = None if where is None else FILTER.validate_python(where)
    sources = await retriever.search("orchard apples", 10, filters=filters, **kwargs)
    return {source.document_id for source in sources}


async def test_every_operator_keeps_the_matching_documents(indexed: Retriever) -> None:
    assert await _found(indexed, None) == set(DOCUMENTS)
    wrong = {}
    for where, expected in CASES:
        found = await _found(indexed, where)
        if found != expected:
            wrong[str(where)] = (sorted(found), sorted(expected))
    assert not wrong, "\n".join(f"{k}: found {v[0]}, expected {v[1]}" for k, v in wrong.items())


async def test_filters_keep_to_the_collection_asked(indexed: Retriever) -> None:
    absent = {"type": "ne", "key": "author", "value": "alice"}
    assert await _found(indexed, absent, collection="other") == {"x"}
    assert await _found(indexed, absent, collection=None) == {"b", "c", "d", "x"}
    assert await _found(indexed, eq("author", "bob"), collection="other") == set()
    assert await _found(indexed, eq("author", "bob"), collection=None) == {"b"}


async def test_a_new_version_carries_its_own_attributes(indexed: Retriever) -> None:
    await indexed.index("a", "A", None, "The orchard of a grows pears.", attributes={"k": 1})
    assert await _found(indexed, eq("author", "alice")) == set()
    assert await _found(indexed, eq("k", 1)) == {"a"}


async def test_edge_indexes_an_attribute_on_its_first_filter(tmp_path: Path) -> None:
    store = await _opened(tmp_path, "edge")
    assert isinstance(store, EdgeChunkStore)
    try:
        retriever = Retriever(store, LexicalEncoder(), None, chunk_tokens=120, chunk_overlap=24)
        await retriever.index("a", "A", None, "The orchard.", attributes=DOCUMENTS["a"])
        assert not any(f.startswith("attribute") for f in store.shard.info().payload_schema)
        where = {"type": "and", "filters": [eq("author", "alice"), eq("draft", True)]}
        assert await _found(retriever, where) == {"a"}
        indexed = store.shard.info().payload_schema
        assert indexed["attributes.author"].points == 1
        assert indexed["attribute_flags.draft"].points == 1
        # Written after the index was made, and found through it.
        await retriever.index("b", "B", None, "The orchard.", attributes=DOCUMENTS["b"])
        assert await _found(retriever, eq("author", "bob")) == {"b"}
        assert store.shard.info().payload_schema["attributes.author"].points == 2
    finally:
        await store.close()
    reopened = await _opened(tmp_path, "edge")  # the indexes are the shard's: kept
    assert isinstance(reopened, EdgeChunkStore)
    assert "attributes.author" in reopened.shard.info().payload_schema
    await reopened.close()


def test_past_the_cap_a_filter_adds_no_index() -> None:
    indexes = AttributeIndexes()
    indexes.learn(["document_id", "attributes.k0"])
    many = FILTER.validate_python(
        {"type": "or", "filters": [eq(f"k{n}", "x") for n in range(MAX_ATTRIBUTE_INDEXES + 2)]}
    )
    assert indexes.stale(many)
    created = indexes.missing(many)
    assert len(created) == MAX_ATTRIBUTE_INDEXES - 1 and "attributes.k0" not in created
    assert not indexes.stale(many) and indexes.missing(many) == {}


def test_a_server_is_sent_the_same_filter_and_its_indexes() -> None:
    where = FILTER.validate_python(
        {
            "type": "and",
            "filters": [
                eq("author", "bob"),
                {"type": "gte", "key": "year", "value": 2020},
                {"type": "lt", "key": "published", "value": "2024-06-01"},
                {"type": "ne", "key": "draft", "value": True},
            ],
        }
    )
    built = search_filter("default", where)
    assert built is not None and isinstance(built.must, list)
    assert built.must[0] == models.FieldCondition(
        key="collection", match=models.MatchValue(value="default")
    )
    assert "attributes.author" in built.model_dump_json()
    assert index_schemas(where) == {
        "attributes.author": models.PayloadSchemaType.KEYWORD,
        "attributes.year": models.PayloadSchemaType.FLOAT,
        "attributes.published": models.PayloadSchemaType.DATETIME,
        "attribute_flags.draft": models.PayloadSchemaType.KEYWORD,
    }
    assert search_filter(None, None) is None


def _nested(depth: int) -> dict[str, Any]:
    where: dict[str, Any] = eq("a", 1)
    for _ in range(depth):
        where = {"type": "and", "filters": [where]}
    return where


BAD_FILTERS: list[tuple[str, Any, str]] = [
    (
        "unknown type",
        {"type": "like", "key": "a", "value": "x"},
        "does not match any of the expected tags",
    ),
    ("key with a dot", eq("a.b", "x"), "letters, digits"),
    ("key too long", eq("k" * 65, "x"), "1 to 64"),
    ("string too long", eq("a", "x" * 513), "512 characters at most"),
    ("a list for eq", eq("a", ["x"]), "single value"),
    ("a value for in", {"type": "in", "key": "a", "value": "x"}, "takes a list"),
    ("too long a list", {"type": "in", "key": "a", "value": list(range(101))}, "at most 100"),
    ("empty list", {"type": "in", "key": "a", "value": []}, "at least 1"),
    ("a boolean in a list", {"type": "in", "key": "a", "value": [True]}, "strings and numbers"),
    ("an object", eq("a", {"b": 1}), "a string, a number or a boolean"),
    ("null", eq("a", None), "a string, a number or a boolean"),
    ("not finite", eq("a", float("nan")), "finite"),
    ("too large", eq("a", 2**60), "2^53"),
    ("gt on text", {"type": "gt", "key": "a", "value": "abc"}, "ISO 8601"),
    ("gt on a boolean", {"type": "gt", "key": "a", "value": True}, "compares numbers"),
    ("lone surrogate", eq("a", "\ud800"), "UTF-8"),
    ("empty compound", {"type": "or", "filters": []}, "at least 1"),
    ("too deep", _nested(MAX_DEPTH + 1), f"{MAX_DEPTH} levels"),
    (
        "too many",
        {"type": "or", "filters": [eq("a", n) for n in range(MAX_CONDITIONS + 1)]},
        "comparisons at most",
    ),
    ("unknown field", {"type": "eq", "key": "a", "value": 1, "extra": 1}, "not permitted"),
]


@pytest.mark.parametrize(("case", "where", "needle"), BAD_FILTERS, ids=[c[0] for c in BAD_FILTERS])
def test_a_filter_out_of_bounds_says_why(case: str, where: Any, needle: str) -> None:
    with pytest.raises(ValidationError) as raised:
        FILTER.validate_python(where)
    assert needle in str(raised.value), str(raised.value)


def test_as_deep_and_as_many_as_allowed_pass() -> None:
    FILTER.validate_python(_nested(MAX_DEPTH))
    FILTER.validate_python({"type": "or", "filters": [eq("a", n) for n in range(MAX_CONDITIONS)]})


@pytest.mark.parametrize(
    ("attributes", "needle"),
    [
        ({f"k{n}": n for n in range(17)}, "16 attributes at most"),
        ({"a b": 1}, "letters, digits"),
        ({"k": "x" * 513}, "512 characters"),
        ({"k": [1]}, "a string, a number or a boolean"),
        ({"k": None}, "a string, a number or a boolean"),
    ],
)
def test_attributes_out_of_bounds_say_why(attributes: dict[str, Any], needle: str) -> None:
    with pytest.raises(ValidationError) as raised:
        ATTRIBUTES.validate_python(attributes)
    assert needle in str(raised.value), str(raised.value)
