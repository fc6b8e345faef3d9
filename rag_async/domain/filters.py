"""Metadata: a document's `attributes`, and the `filters` a search keeps to, in OpenAI's shape
(the file-search filters of its vector stores), one model for every route that takes them.

A document carries up to `MAX_ATTRIBUTES` attributes, each a string, a number or a boolean;
every chunk of it carries them in its payload (`attributes.<key>`). A filter is either a
comparison of one attribute with a value, or an `and`/`or` of filters:

    {"type": "eq", "key": "author", "value": "alice"}
    {"type": "and", "filters": [{"type": "gte", "key": "year", "value": 2020},
                                {"type": "in", "key": "lang", "value": ["en", "fr"]}]}

What each comparison means (the store applies it: providers/retrieval/payload_filters.py):

- `eq`, `ne`: the same type and value (the string "3" is not the number 3; 3 is 3.0).
  `ne` and `nin` also match a chunk whose document lacks the attribute: it is not equal.
- `in`, `nin`: one of a list of strings and numbers.
- `gt`, `gte`, `lt`, `lte`: numbers, or dates: an ISO 8601 date or date-time string
  ("2024-05-01", "2024-05-01T12:00:00Z"; UTC when no offset is given) compares with
  attributes that hold such strings, as points in time. Other strings have no order here.

Everything is bounded, so that a filter costs the store little and its error says why.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from typing import Annotated, Literal, Union

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
    ValidatorFunctionWrapHandler,
    WithJsonSchema,
    WrapValidator,
    model_validator,
)

from rag_async.domain.text import utf8_problem

MAX_ATTRIBUTES = 16  # per document, as OpenAI's vector store files
MAX_KEY_CHARS = 64
MAX_STRING_CHARS = 512
# Numbers are compared as 64-bit floats by Qdrant: beyond this, integers lose exactness.
MAX_NUMBER = 2**53
MAX_IN_VALUES = 100
# An `and`/`or` inside another counts as one level more: a filter that a person writes
# rarely needs more than a few, and each level is a nested filter for the store to walk.
MAX_DEPTH = 5
MAX_CONDITIONS = 64  # comparisons in one filter, however nested

# Keys name a payload path (`attributes.<key>`), where dots, brackets and quotes have a
# meaning of their own: the plain alphabet keeps a key one field.
_KEY = re.compile(r"[A-Za-z0-9_-]+")

RANGE_TYPES = frozenset({"gt", "gte", "lt", "lte"})
LIST_TYPES = frozenset({"in", "nin"})


def _checked_key(key: str) -> str:
    if not 1 <= len(key) <= MAX_KEY_CHARS or _KEY.fullmatch(key) is None:
        raise ValueError(
            f"an attribute key is 1 to {MAX_KEY_CHARS} letters, digits, '_' or '-'; "
            f"{key[:80]!r} is not"
        )
    return key


def _checked_text(text: str) -> str:
    if len(text) > MAX_STRING_CHARS:
        raise ValueError(
            f"a string value is {MAX_STRING_CHARS} characters at most, not {len(text)}"
        )
    problem = utf8_problem(text)
    if problem is not None:
        raise ValueError(f"a string value {problem}")
    return text


def _checked_number(number: int | float) -> int | float:
    if not math.isfinite(number) or abs(number) > MAX_NUMBER:
        raise ValueError(f"a number must be finite and at most 2^53 in size, not {number}")
    return number


# Where pydantic would list why a value fits none of a union's types, one by one.
_OURS = frozenset({"value_error", "too_long", "too_short"})


def _one_problem(*, lists: bool) -> WrapValidator:
    """A value's one problem: a bound it passes, or else the types it may have."""

    def check(value: object, handler: ValidatorFunctionWrapHandler) -> object:
        try:
            return handler(value)
        except ValidationError as error:
            ours = [e["msg"] for e in error.errors() if e["type"] in _OURS]
            if ours:
                raise ValueError(ours[0].removeprefix("Value error, ")) from None
            if lists and isinstance(value, list):
                kinds = [type(item).__name__ for item in value if not _is_list_value(item)]
                raise ValueError(
                    f"a list holds strings and numbers only, not {kinds[0] if kinds else value}"
                ) from None
            also = " ('in' and 'nin' take a list of strings and numbers)" if lists else ""
            raise ValueError(
                f"a value is a string, a number or a boolean{also}, not {type(value).__name__}"
            ) from None

    return WrapValidator(check)


def _is_list_value(item: object) -> bool:
    return isinstance(item, str | int | float) and not isinstance(item, bool)


AttributeKey = Annotated[str, AfterValidator(_checked_key)]
Text = Annotated[StrictStr, AfterValidator(_checked_text)]
Number = Annotated[Union[StrictInt, StrictFloat], AfterValidator(_checked_number)]  # noqa: UP007
AttributeValue = Annotated[Union[Text, Number, StrictBool], _one_problem(lists=False)]  # noqa: UP007
ListValue = Union[Text, Number]  # noqa: UP007


def _at_most_attributes(attributes: dict[str, AttributeValue]) -> dict[str, AttributeValue]:
    if len(attributes) > MAX_ATTRIBUTES:
        raise ValueError(
            f"a document has {MAX_ATTRIBUTES} attributes at most, not {len(attributes)}"
        )
    return attributes


Attributes = Annotated[
    dict[AttributeKey, AttributeValue],
    AfterValidator(_at_most_attributes),
    Field(
        description=f"Up to {MAX_ATTRIBUTES} key-value pairs a search can filter on (`filters`):"
        f" keys of 1 to {MAX_KEY_CHARS} letters, digits, '_' or '-'; values strings (up to "
        f"{MAX_STRING_CHARS} characters), numbers or booleans. A date is an ISO 8601 string "
        "(or a Unix timestamp, a number)."
    ),
]


def as_datetime(value: str) -> datetime | None:
    """An ISO 8601 date or date-time as a point in time (UTC when it names no offset), or
    None when `value` is not one."""
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


class ComparisonFilter(BaseModel):
    """An attribute compared with a value."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["eq", "ne", "gt", "gte", "lt", "lte", "in", "nin"]
    key: AttributeKey = Field(description="An attribute of the documents.")
    value: Annotated[
        Union[  # noqa: UP007
            Text,
            Number,
            StrictBool,
            Annotated[list[ListValue], Field(min_length=1, max_length=MAX_IN_VALUES)],
        ],
        _one_problem(lists=True),
    ]

    @model_validator(mode="after")
    def _value_fits_type(self) -> ComparisonFilter:
        if self.type in LIST_TYPES:
            if not isinstance(self.value, list):
                raise ValueError(f"'{self.type}' takes a list of values, not a single one")
            return self
        if isinstance(self.value, list):
            raise ValueError(f"'{self.type}' takes a single value; 'in' and 'nin' take lists")
        if self.type in RANGE_TYPES:
            value = self.value
            if isinstance(value, bool) or (isinstance(value, str) and as_datetime(value) is None):
                raise ValueError(
                    f"'{self.type}' compares numbers, or dates as ISO 8601 strings "
                    f"('2024-05-01', '2024-05-01T12:00:00Z'); {value!r} is neither"
                )
        return self


class CompoundFilter(BaseModel):
    """Filters joined: `and` (each must match) or `or` (one at least)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["and", "or"]
    # Documented without recursion: a schema that refers to itself cannot be walked by every
    # client generator or fuzzer (schemathesis finds no instance), and the bounds are ours.
    filters: Annotated[
        list[Filter],
        WithJsonSchema(
            {
                "type": "array",
                "minItems": 1,
                "items": {"type": "object"},
                "description": "Comparison or compound filters, as this one.",
            }
        ),
    ] = Field(min_length=1)

    @property
    def depth(self) -> int:
        """Levels of `and`/`or`, this one included."""
        inner = [f.depth for f in self.filters if isinstance(f, CompoundFilter)]
        return 1 + max(inner, default=0)

    @property
    def conditions(self) -> int:
        """Comparisons in it, however nested."""
        return sum(f.conditions if isinstance(f, CompoundFilter) else 1 for f in self.filters)

    @model_validator(mode="after")
    def _bounded(self) -> CompoundFilter:
        if self.depth > MAX_DEPTH:
            raise ValueError(
                f"filters nest {MAX_DEPTH} levels of 'and'/'or' deep at most, not {self.depth}"
            )
        if self.conditions > MAX_CONDITIONS:
            raise ValueError(
                f"a filter holds {MAX_CONDITIONS} comparisons at most, not {self.conditions}"
            )
        return self


Filter = Annotated[ComparisonFilter | CompoundFilter, Field(discriminator="type")]
CompoundFilter.model_rebuild()

FILTERS_DESCRIPTION = (
    "Search only the chunks of documents whose `attributes` match: a comparison "
    '(`{"type": "eq", "key": "author", "value": "alice"}`; eq, ne, gt, gte, lt, lte, in, nin) '
    'or a compound (`{"type": "and", "filters": [...]}`; and, or), as OpenAI\'s file search '
    f"filters. At most {MAX_CONDITIONS} comparisons, {MAX_DEPTH} levels deep."
)


def comparisons(where: Filter) -> list[ComparisonFilter]:
    """Every comparison of a filter, however nested."""
    if isinstance(where, ComparisonFilter):
        return [where]
    return [c for inner in where.filters for c in comparisons(inner)]
