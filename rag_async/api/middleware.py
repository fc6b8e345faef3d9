"""Pure ASGI middleware (cheap on the hot path): body and header size limits (browser safety
is in browser.py)."""

from __future__ import annotations

from collections.abc import Mapping

import orjson
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rag_async.api.errors import error_response
from rag_async.domain.errors import HeadersTooLarge


class HeaderSizeLimit:
    """431 `headers_too_large` for a request whose headers (names, values and the four bytes
    around each) pass `limit`. uvicorn's default parser takes headers of any size; under
    `rag-async api` the server also drops a head far beyond this (api/server.py), and this
    gives every smaller one the API's error shape, under whatever server runs the app."""

    def __init__(self, app: ASGIApp, *, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            size = sum(len(name) + len(value) + 4 for name, value in scope["headers"])
            if size > self.limit:
                error = HeadersTooLarge(
                    f"the request's headers are {size} bytes; the limit is {self.limit}"
                )
                response = error_response(error.status_code, error.code, error.message)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


class BodySizeLimit:
    """A pure ASGI middleware: checks Content-Length up front and counts streamed bytes."""

    def __init__(
        self, app: ASGIApp, *, default_limit: int, limits: Mapping[str, int] | None = None
    ) -> None:
        self.app = app
        self.default_limit = default_limit
        self.limits = dict(limits or {})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "DELETE", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        limit = self.limits.get(scope["path"], self.default_limit)
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > limit:
                await _too_large(send, limit)
                return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _BodyTooLarge(limit)
            return message

        try:
            await self.app(scope, counting_receive, send)
        except _BodyTooLarge:
            await _too_large(send, limit)


class _BodyTooLarge(HTTPException):
    """An HTTPException, because FastAPI turns any other exception raised while it reads the
    body into a 400; this one reaches the app's error handler as the 413 it is."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, _too_large_message(limit))


def _too_large_message(limit: int) -> str:
    return f"the request body is larger than this endpoint takes ({limit} bytes)"


async def _too_large(send: Send, limit: int) -> None:
    body = orjson.dumps(
        {"error": {"code": "payload_too_large", "message": _too_large_message(limit)}}
    )
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
