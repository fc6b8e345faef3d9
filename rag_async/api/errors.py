"""One JSON error shape for every 4xx/5xx: {"error": {"code", "message", "details"?}}, and the
OpenAPI document saying so."""

from __future__ import annotations

from typing import Any

import orjson
import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from rag_async.domain.errors import RagError
from rag_async.domain.schemas import ErrorBody
from rag_async.domain.text import utf8_problem
from rag_async.store.errors import StoreOutOfMemory, StoreUnreachable

log = structlog.get_logger(__name__)


def error_response(
    status: int,
    code: str,
    message: str,
    details: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    error: dict[str, Any] = {"code": code, "message": message}
    if details:
        error["details"] = details
    return json_response({"error": error}, status=status, headers=headers)


def json_response(
    body: dict[str, Any], *, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    return Response(orjson.dumps(body), status, headers, media_type="application/json")


def install_error_handlers(app: FastAPI) -> None:
    """Give every error the one shape, and the OpenAPI document the 422 that is really sent."""
    _describe_validation_errors(app)
    app.add_exception_handler(RagError, _rag_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _invalid_request)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, _http_error)  # type: ignore[arg-type]
    for unreachable in StoreUnreachable:
        app.add_exception_handler(unreachable, _redis_down)
    app.add_exception_handler(StoreOutOfMemory, _redis_full)
    # Starlette calls this for any exception no other handler took (then re-raises it, so the
    # server logs it too): the client gets the one shape, never a traceback.
    app.add_exception_handler(Exception, _unexpected)


async def _rag_error(_: Request, error: RagError) -> Response:
    return error_response(
        error.status_code, error.code, error.message, error.details(), headers=error.headers()
    )


async def _invalid_request(_: Request, error: RequestValidationError) -> Response:
    details = [_detail(e) for e in error.errors()]
    summary = "; ".join(f"{d['field']}: {d['problem']}" for d in details)
    return error_response(422, "invalid_request", f"the request is not valid: {summary}", details)


async def _http_error(request: Request, error: StarletteHTTPException) -> Response:
    if error.status_code == 400:
        # Raised only by the body readers (a JSON body that is not UTF-8 or nests too deep, a
        # malformed multipart body): the same 422 as any other unreadable body.
        return error_response(
            422, "invalid_request", f"the request body cannot be read: {error.detail}"
        )
    code = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}.get(
        error.status_code, "http_error"
    )
    message = str(error.detail)
    if error.status_code in (404, 405) and message in ("Not Found", "Method Not Allowed"):
        # Starlette's own words for an unknown route: say which, and where to look.
        message = (
            f"there is no {request.method} {request.url.path} in this API "
            "(the endpoints are listed at /docs)"
        )
    headers = dict(error.headers) if error.headers else None
    return error_response(error.status_code, code, message, headers=headers)


async def _redis_down(_: Request, error: Exception) -> Response:
    log.warning("redis unreachable", error=str(error))
    return error_response(
        503,
        "service_unavailable",
        "the job store (Redis/Valkey) cannot be reached right now; try again shortly",
        headers={"Retry-After": "2"},
    )


async def _redis_full(_: Request, error: Exception) -> Response:
    # Valkey refuses writes at its maxmemory rather than evict jobs (noeviction). It lasts
    # until results expire or the operator acts, so this is not a 503 worth retrying at once.
    log.error("redis is out of memory: writes are refused", error=str(error))
    return error_response(
        507,
        "insufficient_storage",
        "the job store (Redis/Valkey) is full, so this request was not accepted; try again "
        "once old jobs have expired or the operator has freed memory",
        headers={"Retry-After": "10"},
    )


async def _unexpected(request: Request, error: Exception) -> Response:
    log.error(
        "unhandled error",
        method=request.method,
        path=request.url.path,
        error=f"{type(error).__name__}: {error}",
        exc_info=error,
    )
    return error_response(
        500,
        "internal_error",
        "something went wrong on the server; it has been logged (try again, or report it "
        "if it keeps happening)",
    )


def _describe_validation_errors(app: FastAPI) -> None:
    """FastAPI documents its own 422 (`HTTPValidationError`, `{"detail": ...}`) on every route
    with parameters or a body; ours is `ErrorBody`. Swap it in the generated document."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        schema = generate()  # cached by FastAPI; the swap below leaves nothing to redo
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        if "HTTPValidationError" not in components:
            return schema
        ours = ErrorBody.model_json_schema(ref_template="#/components/schemas/{model}")
        for name, definition in {**ours.pop("$defs", {}), "ErrorBody": ours}.items():
            components.setdefault(name, definition)
        for operations in schema.get("paths", {}).values():
            for operation in operations.values():
                invalid = operation.get("responses", {}).get("422", {})
                json_body = invalid.get("content", {}).get("application/json", {})
                if json_body.get("schema", {}).get("$ref", "").endswith("/HTTPValidationError"):
                    json_body["schema"] = {"$ref": "#/components/schemas/ErrorBody"}
        components.pop("HTTPValidationError")
        components.pop("ValidationError", None)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _detail(error: dict[str, Any]) -> dict[str, Any]:
    if error["type"] == "json_invalid":
        # FastAPI puts the character position where a field name goes: say what it means.
        reason = error.get("ctx", {}).get("error", "cannot be parsed")
        position = error["loc"][-1]
        where = f" at character {position}" if isinstance(position, int) else ""
        return {"field": "body", "problem": f"not valid JSON: {reason}{where}"}
    problem = error["msg"].removeprefix("Value error, ")  # our validators' words are enough
    if error["type"] == "string_unicode" and isinstance(error.get("input"), str):
        # Text with a lone surrogate, where pydantic checks a pattern or a field's name.
        problem = utf8_problem(error["input"]) or problem
    return {
        "field": ".".join(str(p) for p in error["loc"] if p != "body") or "body",
        "problem": problem,
    }
