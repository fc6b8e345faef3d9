"""JSON request bodies: what their schemas cannot say.

JSON can escape half of a UTF-16 surrogate pair on its own (`"\\ud800"`). Python's `json`,
which FastAPI reads bodies with, turns it into a `str` that no UTF-8 can hold: not Redis, not
a log line, not the LLM's request. Such text is refused as a 422 that names its field, the
same way on every route, instead of failing later as a 500.
"""

from __future__ import annotations

import json
from typing import Any, TypeVar

from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

from rag_async.domain.text import utf8_problem

M = TypeVar("M", bound=BaseModel)


def require_utf8(body: BaseModel) -> None:
    """Refuse a body whose text fields UTF-8 cannot encode, naming each such field (422)."""
    errors: list[dict[str, Any]] = []
    for name, value in body:
        problem = utf8_problem(value) if isinstance(value, str) else None
        if problem is not None:
            errors.append({"type": "string_not_utf8", "loc": ("body", name), "msg": problem})
    if errors:
        raise RequestValidationError(errors)


def parse_json(model: type[M], raw: bytes) -> M:
    """`raw` as a `model`, read by pydantic's JSON parser; else the 422 that says what is wrong,
    in the same words FastAPI's own body validation would use."""
    try:
        body = model.model_validate_json(raw)
    except ValidationError as error:
        if error.errors()[0]["type"] != "json_invalid":
            raise _in_body(error) from None
        # pydantic's parser refuses a lone surrogate as invalid JSON, without saying where.
        # Read what Python's json reads (as FastAPI does for the other routes), so such text
        # is refused below naming its field, like everywhere else.
        try:
            data = json.loads(raw.decode())
        except (ValueError, RecursionError):  # nested too deep for json too: pydantic's reason
            raise _in_body(error) from None
        try:
            body = model.model_validate(data)
        except ValidationError as second:
            raise _in_body(second) from None
    require_utf8(body)
    return body


def _in_body(error: ValidationError) -> RequestValidationError:
    return RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in error.errors()])
