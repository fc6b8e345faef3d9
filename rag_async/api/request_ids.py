"""X-Request-ID: every request has one, on its log lines and echoed on its response.

The client's own when it sent a plain token (the same rule as the one kept with a job,
enqueue.py), else a fresh one. A job keeps the client's id, or its own short id when the
client sent none (enqueue.py): its worker's lines carry that and the job id.
"""

from __future__ import annotations

import secrets

import structlog
from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rag_async.api.enqueue import _REQUEST_ID as PLAIN_TOKEN


class RequestIds:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = Headers(scope=scope).get("x-request-id", "")
        request_id = given if PLAIN_TOKEN.fullmatch(given) else secrets.token_hex(6)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message)["X-Request-ID"] = request_id
            await send(message)

        with structlog.contextvars.bound_contextvars(request_id=request_id):
            await self.app(scope, receive, send_with_id)
