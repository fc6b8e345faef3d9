"""How `rag-async api` runs uvicorn: its limits, and the two on a request's head it lacks.

uvicorn's HTTP parser (httptools, from uvicorn[standard]) takes a request head of any size and
waits for it as long as the client likes: the keep-alive timeout runs only between requests,
and `h11_max_incomplete_event_size` bounds the head for the pure-Python h11 parser alone. So a
client trickling its headers (slowloris) could hold a connection for ever, and one sending
megabytes of them the memory. `GuardedHttpTools` closes a connection whose request head has
not arrived within `RAG_HEADER_TIMEOUT`, and answers 431 to a head beyond
`RAG_MAX_HEADER_BYTES` plus a request line's worth (the app's `HeaderSizeLimit` refuses
headers over the limit itself, in the API's error shape, under any server).

uvicorn's own: `timeout_keep_alive` (RAG_KEEP_ALIVE_TIMEOUT) closes a kept-alive connection
left idle, and `limit_concurrency` (RAG_MAX_CONNECTIONS) answers 503 beyond that many
connections, open event streams included, rather than the process running out of file
descriptors.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from rag_async.config import Settings

# A request line's worth on top of the headers (as nginx's large header buffers allow).
_REQUEST_LINE = 8 * 1024


def server_options(settings: Settings) -> dict[str, Any]:
    """uvicorn's settings for the API, to pass to `uvicorn.run` or `uvicorn.Config`."""
    protocol = type(
        "GuardedHttpTools",
        (GuardedHttpTools,),
        {
            "max_head_bytes": settings.max_header_bytes + _REQUEST_LINE,
            "head_timeout": settings.header_timeout,
        },
    )
    return {
        "http": protocol,
        "timeout_keep_alive": settings.keep_alive_timeout,
        "limit_concurrency": settings.max_connections,
    }


class GuardedHttpTools(HttpToolsProtocol):
    """uvicorn's httptools protocol, but a request's head must come within `head_timeout`
    seconds (from the connection, or from its first byte on a kept-alive one) and
    `max_head_bytes`."""

    max_head_bytes = 24 * 1024
    head_timeout = 10.0

    _head_timer: asyncio.TimerHandle | None = None
    _head_bytes = 0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._start_head()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._head_timer is None:  # the next request on a kept-alive connection
            self._start_head()

    def on_headers_complete(self) -> None:
        self._stop_head()
        super().on_headers_complete()

    def data_received(self, data: bytes) -> None:
        head = self._head_timer
        super().data_received(data)
        # Counted only while one head stays incomplete: a chunk that ends it may hold a body.
        if head is not None and self._head_timer is head:
            self._head_bytes += len(data)
            if self._head_bytes > self.max_head_bytes:
                self._stop_head()
                self._refuse_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head()
        super().connection_lost(exc)

    def _start_head(self) -> None:
        self._head_bytes = 0
        self._head_timer = self.loop.call_later(self.head_timeout, self._head_too_slow)

    def _stop_head(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_too_slow(self) -> None:
        self._head_timer = None
        self.transport.close()  # no answer: a client this slow is not waiting for one

    def _refuse_head(self) -> None:
        message = f"the request's head is over the {self.max_head_bytes} bytes this server takes"
        body = orjson.dumps({"error": {"code": "headers_too_large", "message": message}})
        self.transport.write(
            b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
            b"content-type: application/json\r\n"
            b"content-length: " + str(len(body)).encode() + b"\r\n"
            b"connection: close\r\n\r\n" + body
        )
        self.transport.close()
