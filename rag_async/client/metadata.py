"""Attributes and filters as the command line writes them: `key=value`.

A value reads as JSON when it is a number, `true` or `false` (`year=2023`, `draft=true`), and
as the text it is otherwise (`team=red`); quote it as JSON to keep it text (`year='"2023"'`).
A filter `key=value` keeps the documents whose attribute equals the value; several are all
required. A filter that begins with `{` is a whole filter in JSON, as `POST /chat` takes it.
The API checks both (domain/filters.py): its error is the one shown.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson


class BadMetadata(ValueError):
    """A `key=value` (or JSON filter) that the command line cannot read."""


def attribute_value(text: str) -> str | int | float | bool:
    """`text` as a number, a boolean or a JSON string, or else as it is."""
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return text
    return value if isinstance(value, str | int | float | bool) else text


def key_value(text: str) -> tuple[str, str | int | float | bool]:
    key, equals, value = text.partition("=")
    if not equals or not key.strip():
        raise BadMetadata(f"{text!r} is not key=value")
    return key.strip(), attribute_value(value)


def attributes(pairs: Sequence[str]) -> dict[str, Any] | None:
    """`key=value` pairs as a document's attributes; None for none."""
    return dict(key_value(pair) for pair in pairs) or None


def filters(given: Sequence[str]) -> dict[str, Any] | None:
    """`key=value` equalities (and JSON filters), all required; None for none."""
    parts: list[dict[str, Any]] = []
    for text in given:
        if text.lstrip().startswith("{"):
            try:
                parts.append(orjson.loads(text))
            except orjson.JSONDecodeError as error:
                raise BadMetadata(f"the filter {text!r} is not JSON: {error}") from None
            continue
        key, value = key_value(text)
        parts.append({"type": "eq", "key": key, "value": value})
    if len(parts) <= 1:
        return parts[0] if parts else None
    return {"type": "and", "filters": parts}
