"""Metadata filters (domain/filters.py) as Qdrant payload filters: the one place that says what
each comparison means to the store, for every backend (Edge converts the result:
edge_filters.py).

A document's attributes are in each chunk's payload (`attribute_payload`): strings and numbers
under `ATTRIBUTES`, booleans as the words "true" and "false" under `FLAGS`, because Qdrant
Edge's binding (qdrant-edge-py 0.9) reads a Python bool in a match as the integer 1, so a
boolean could not be matched there. Qdrant keeps bool, integer and float apart for an exact
match, and never matches a float payload value exactly, so numbers are compared as ranges
(`eq 3` is `3 <= x <= 3`), which hold for integers and floats alike; strings match exactly.
Negations (`ne`, `nin`) are `must_not`, so a chunk whose document lacks the attribute passes
them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import structlog
from qdrant_client import models

from rag_async.domain.filters import (
    RANGE_TYPES,
    AttributeValue,
    ComparisonFilter,
    CompoundFilter,
    Filter,
    ListValue,
    as_datetime,
    comparisons,
)

log = structlog.get_logger(__name__)

ATTRIBUTES = "attributes"
FLAGS = "attribute_flags"
# The payload fields of attributes, as a prefix.
ATTRIBUTE_FIELDS = (f"{ATTRIBUTES}.", f"{FLAGS}.")
# Attributes a store indexes at most per collection (each filtered on the first time gets
# one): an index costs memory for every point, and the keys are the users'.
MAX_ATTRIBUTE_INDEXES = 32


def attribute_payload(attributes: Mapping[str, AttributeValue]) -> dict[str, Any]:
    """A document's attributes as its chunks' payload holds them."""
    plain = {k: v for k, v in attributes.items() if not isinstance(v, bool)}
    flags = {k: _flag(v) for k, v in attributes.items() if isinstance(v, bool)}
    return {name: part for name, part in ((ATTRIBUTES, plain), (FLAGS, flags)) if part}


def payload_attributes(payload: Mapping[str, Any]) -> dict[str, AttributeValue] | None:
    """The attributes a chunk's payload holds (`attribute_payload` undone); None if none."""
    plain, flags = payload.get(ATTRIBUTES), payload.get(FLAGS)
    found: dict[str, AttributeValue] = dict(plain) if isinstance(plain, Mapping) else {}
    if isinstance(flags, Mapping):
        found |= {key: value == "true" for key, value in flags.items()}
    return found or None


def _flag(value: bool) -> str:
    return "true" if value else "false"


def attribute_path(key: str, value: object = None) -> str:
    """Where an attribute compared with `value` is in a chunk's payload (keys are plain
    words: domain/filters.py)."""
    return f"{FLAGS if isinstance(value, bool) else ATTRIBUTES}.{key}"


def qdrant_filter(where: Filter) -> models.Filter:
    """`where` as a Qdrant filter over chunk payloads."""
    if isinstance(where, CompoundFilter):
        inner: list[models.Condition] = [qdrant_filter(f) for f in where.filters]
        return models.Filter(must=inner) if where.type == "and" else models.Filter(should=inner)
    value = where.value
    path = attribute_path(where.key, value)
    if where.type in RANGE_TYPES:
        return models.Filter(must=[_range(path, where)])
    if isinstance(value, list):
        either = _one_of(path, value)
        return (
            models.Filter(must=[either]) if where.type == "in" else models.Filter(must_not=[either])
        )
    equal = _equals(path, value)
    return models.Filter(must=[equal]) if where.type == "eq" else models.Filter(must_not=[equal])


def search_filter(collection: str | None, where: Filter | None) -> models.Filter | None:
    """What a search keeps to: the chunks of `collection` (any, when None) that match `where`
    (all, when None). Every chunk carries its collection, so one condition does: embedded
    Qdrant checks each condition point by point in Python (docs/benchmarks.md), a server
    through its keyword index."""
    conditions: list[models.Condition] = []
    if collection is not None:
        conditions.append(
            models.FieldCondition(key="collection", match=models.MatchValue(value=collection))
        )
    if where is not None:
        conditions.append(qdrant_filter(where))
    return models.Filter(must=conditions) if conditions else None


def _equals(path: str, value: str | int | float | bool) -> models.Condition:
    if isinstance(value, bool):
        return models.FieldCondition(key=path, match=models.MatchValue(value=_flag(value)))
    if isinstance(value, str):
        return models.FieldCondition(key=path, match=models.MatchValue(value=value))
    return models.FieldCondition(key=path, range=models.Range(gte=value, lte=value))


def _one_of(path: str, values: list[ListValue]) -> models.Condition:
    strings = [v for v in values if isinstance(v, str)]
    either = [_equals(path, v) for v in values if not isinstance(v, str)]
    if strings:
        either.append(models.FieldCondition(key=path, match=models.MatchAny(any=strings)))
    return either[0] if len(either) == 1 else models.Filter(should=either)


def _range(path: str, where: ComparisonFilter) -> models.FieldCondition:
    if isinstance(where.value, str):  # a date: the model has checked that it is one
        moment = as_datetime(where.value)
        return models.FieldCondition(key=path, range=models.DatetimeRange(**{where.type: moment}))
    return models.FieldCondition(key=path, range=models.Range(**{where.type: where.value}))


def index_schemas(where: Filter) -> dict[str, models.PayloadSchemaType]:
    """The payload index that would serve each attribute `where` compares, by what it is
    compared with: strings (and booleans, as words) by keyword, numbers by float (integers
    included), dates by their own. An attribute compared as two kinds gets the first."""
    schemas: dict[str, models.PayloadSchemaType] = {}
    for comparison in comparisons(where):
        values = comparison.value if isinstance(comparison.value, list) else [comparison.value]
        first = values[0]
        schema = models.PayloadSchemaType.FLOAT
        if isinstance(first, str | bool):
            schema = models.PayloadSchemaType.KEYWORD
            if comparison.type in RANGE_TYPES:
                schema = models.PayloadSchemaType.DATETIME
        schemas.setdefault(attribute_path(comparison.key, first), schema)
    return schemas


class AttributeIndexes:
    """Which attributes of a collection have a payload index, and which a filter should add.

    A filter on an attribute without an index checks the payload of every candidate (the
    chunk's text included): many times the cost of an unfiltered search (docs/benchmarks.md).
    So the first filter on an attribute indexes it, up to `MAX_ATTRIBUTE_INDEXES`; past that
    a filter still works, unindexed, and a warning names the field once.
    """

    def __init__(self) -> None:
        self._indexed: set[str] | None = None  # None: not read from the store yet
        self._declined: set[str] = set()

    def stale(self, where: Filter) -> bool:
        """Whether the store's own list should be read first (`learn`): never read, or a
        field this process has not seen indexed (another process may have made it)."""
        if self._indexed is None:
            return True
        return any(
            path not in self._indexed and path not in self._declined
            for path in index_schemas(where)
        )

    def learn(self, fields: Iterable[str]) -> None:
        """The fields the store has an index on."""
        self._indexed = {field for field in fields if field.startswith(ATTRIBUTE_FIELDS)}

    def missing(self, where: Filter) -> dict[str, models.PayloadSchemaType]:
        """The indexes to create for `where`, counted as made from now on."""
        indexed = self._indexed if self._indexed is not None else set()
        create: dict[str, models.PayloadSchemaType] = {}
        for path, schema in index_schemas(where).items():
            if path in indexed or path in self._declined:
                continue
            if len(indexed) >= MAX_ATTRIBUTE_INDEXES:
                self._declined.add(path)
                log.warning("attribute not indexed", field=path, indexed=len(indexed))
                continue
            indexed.add(path)
            create[path] = schema
        self._indexed = indexed
        return create
