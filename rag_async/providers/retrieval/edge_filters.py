"""Qdrant filters (qdrant-client's models, as payload_filters.py builds them) in Qdrant Edge's
own classes: the same engine, so the same meaning, spelt by another binding. Only what this
service builds is converted; anything else is a bug, and raises."""

from __future__ import annotations

from collections.abc import Sequence

import qdrant_edge as edge
from qdrant_client import models

EdgeCondition = (
    edge.FieldCondition
    | edge.IsEmptyCondition
    | edge.IsNullCondition
    | edge.HasIdCondition
    | edge.HasVectorCondition
    | edge.NestedCondition
    | edge.Filter
)


def edge_filter(where: models.Filter) -> edge.Filter:
    """`where` for an Edge shard."""
    return edge.Filter(
        must=_conditions(where.must),
        should=_conditions(where.should),
        must_not=_conditions(where.must_not),
    )


def _conditions(
    conditions: Sequence[models.Condition] | models.Condition | None,
) -> list[EdgeCondition] | None:
    if conditions is None:
        return None
    if not isinstance(conditions, Sequence):
        conditions = [conditions]
    return [_condition(condition) for condition in conditions]


def _condition(condition: models.Condition) -> EdgeCondition:
    if isinstance(condition, models.Filter):
        return edge_filter(condition)
    if isinstance(condition, models.IsEmptyCondition):
        return edge.IsEmptyCondition(condition.is_empty.key)
    if isinstance(condition, models.FieldCondition):
        if condition.match is not None:
            return edge.FieldCondition(condition.key, match=_match(condition.match))
        if condition.range is not None:
            return edge.FieldCondition(condition.key, range=_range(condition.range))
    raise TypeError(f"no Qdrant Edge form for the condition {condition!r}")


def _match(match: models.Match) -> edge.MatchValue | edge.MatchAny:
    if isinstance(match, models.MatchValue):
        return edge.MatchValue(match.value)
    if isinstance(match, models.MatchAny):
        return edge.MatchAny(match.any)
    raise TypeError(f"no Qdrant Edge form for the match {match!r}")


def _range(bounds: models.Range | models.DatetimeRange) -> edge.RangeFloat | edge.RangeDateTime:
    if isinstance(bounds, models.Range):
        return edge.RangeFloat(gte=bounds.gte, gt=bounds.gt, lte=bounds.lte, lt=bounds.lt)
    moments = (bounds.gte, bounds.gt, bounds.lte, bounds.lt)
    gte, gt, lte, lt = (None if m is None else m.isoformat() for m in moments)
    return edge.RangeDateTime(gte=gte, gt=gt, lte=lte, lt=lt)


_SCHEMAS = {
    models.PayloadSchemaType.KEYWORD: edge.PayloadSchemaType.Keyword,
    models.PayloadSchemaType.FLOAT: edge.PayloadSchemaType.Float,
    models.PayloadSchemaType.DATETIME: edge.PayloadSchemaType.Datetime,
}


def edge_schema(schema: models.PayloadSchemaType) -> edge.PayloadSchemaType:
    """The index kind `schema` (one that payload_filters.index_schemas picks) for Edge."""
    return _SCHEMAS[schema]
