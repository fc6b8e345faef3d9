"""One JSON error shape for every 4xx/5xx: {"error": {"code", "message", "details"?}}."""

from __future__ import annotations

from typing import Any

import orjson
import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import Overloaded, RagError

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
    @app.exception_handler(RagError)
    async def rag_error(_: Request, error: RagError) -> Response:
        headers = {"Retry-After": str(error.retry_after)} if isinstance(error, Overloaded) else None
        return error_response(error.status_code, error.code, error.message, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, error: RequestValidationError) -> Response:
        details = [_detail(e) for e in error.errors()]
        summary = "; ".join(f"{d['field']}: {d['problem']}" for d in details)
        return error_response(
            422, "invalid_request", f"the request is not valid: {summary}", details
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> Response:
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

    @app.exception_handler(RedisConnectionError)
    @app.exception_handler(RedisTimeoutError)
    async def redis_down(_: Request, error: Exception) -> Response:
        log.warning("redis unreachable", error=str(error))
        return error_response(
            503,
            "service_unavailable",
            "the job store (Redis/Valkey) cannot be reached right now; try again shortly",
            headers={"Retry-After": "2"},
        )


def _detail(error: dict[str, Any]) -> dict[str, Any]:
    if error["type"] == "json_invalid":
        # FastAPI puts the character position where a field name goes: say what it means.
        reason = error.get("ctx", {}).get("error", "cannot be parsed")
        position = error["loc"][-1]
        return {"field": "body", "problem": f"not valid JSON: {reason} at character {position}"}
    return {
        "field": ".".join(str(p) for p in error["loc"] if p != "body") or "body",
        "problem": error["msg"],
    }
