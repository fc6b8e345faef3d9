"""How `rag-async api` runs uvicorn: its limits, and the guards on a connection it lacks.

uvicorn's HTTP parser (httptools, from uvicorn[standard]) takes a request head of any size and
waits for it, and for the body after it, as long as the client likes: the keep-alive timeout
runs only between requests, and `h11_max_incomplete_event_size` bounds the head for the
pure-Python h11 parser alone. So a client trickling its headers or its body (slowloris, slow
POST) could hold a connection for ever, and one sending megabytes of headers the memory; and
`limit_concurrency` answers a full server with a plain-text 503 for every request, probes too.
`GuardedHttpTools` instead:

- closes a connection whose request head has not arrived within `RAG_HEADER_TIMEOUT`, and
  answers 431 to a head beyond `RAG_MAX_HEADER_BYTES` plus a request line's worth (the app's
  `HeaderSizeLimit` refuses headers over the limit itself, in the API's error shape, under any
  server);
- cuts a request body that stalls, trickles or takes too long (guards.BodyClock: the
  `RAG_BODY_*` settings), whatever the route, and before the app has looked at its key;
- caps the connections open from one peer address (`RAG_MAX_CONNECTIONS_PER_CLIENT`, 429
  `too_many_connections`): behind a proxy that peer is the proxy, which should cap per client;
- beyond `RAG_MAX_CONNECTIONS` answers 503 `server_busy` in the API's error shape, with
  Retry-After, but still serves `/healthz` and `/readyz` from a small reserve.

Every refusal closes its connection. `timeout_keep_alive` (RAG_KEEP_ALIVE_TIMEOUT) closes a
kept-alive connection left idle.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httptools
import structlog
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from rag_async.api.browser import PROBE_PATHS
from rag_async.api.guards import (
    BodyClock,
    BodyLimits,
    ConnectionCaps,
    Refusal,
    RefusalLog,
    raw_answer,
    server_busy,
    too_many_connections,
)
from rag_async.config import Settings

log = structlog.get_logger(__name__)

# A request line's worth on top of the headers (as nginx's large header buffers allow).
_REQUEST_LINE = 8 * 1024


def server_options(settings: Settings) -> dict[str, Any]:
    """uvicorn's settings for the API, to pass to `uvicorn.run` or `uvicorn.Config`. Each call
    makes a protocol of its own, so each server counts its own connections."""
    caps = ConnectionCaps(settings.max_connections, settings.max_connections_per_client)
    protocol = type(
        "GuardedHttpTools",
        (GuardedHttpTools,),
        {
            "max_head_bytes": settings.max_header_bytes + _REQUEST_LINE,
            "head_timeout": settings.header_timeout,
            "body_limits": BodyLimits(
                idle=settings.body_idle_timeout,
                min_rate=settings.body_min_rate,
                total=settings.body_timeout,
            ),
            "caps": caps,
            "busy": server_busy(caps.total),
            "crowded": too_many_connections(caps.per_client),
        },
    )
    return {
        "http": protocol,
        # No route takes a WebSocket, and an upgraded connection would leave the counts here.
        "ws": "none",
        "timeout_keep_alive": settings.keep_alive_timeout,
        # Not uvicorn's limit_concurrency: its 503 is plain text and refuses probes too.
        "limit_concurrency": None,
    }


def _log_refusals(refusals: RefusalLog) -> None:
    log.warning("connections refused or cut", seconds=refusals.every, **refusals.take())


class GuardedHttpTools(HttpToolsProtocol):
    """uvicorn's httptools protocol with the guards the module's docstring lists: a request's
    head must come within `head_timeout` seconds (from the connection, or from its first byte
    on a kept-alive one) and `max_head_bytes`, its body within `body_limits`, and a connection
    must fit within `caps`."""

    max_head_bytes = 24 * 1024
    head_timeout = 10.0
    body_limits = BodyLimits(idle=10.0, min_rate=1024, total=300.0)
    caps = ConnectionCaps(total=1000, per_client=0)
    busy = server_busy(1000)
    crowded = too_many_connections(0)

    _head_timer: asyncio.TimerHandle | None = None
    _head_bytes = 0
    _body: BodyClock | None = None  # while a request's body is arriving
    _body_timer: asyncio.TimerHandle | None = None
    _peer: str | None = None  # counted in `caps` (None: not counted)
    _over_cap = False
    _last_answer = False  # close the connection after this request's answer

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        peer = self.client[0] if self.client else None
        if self.caps.admit(peer):
            self._peer = peer
        else:
            # Answered once its head has come (a client reads an answer to its request), and
            # meanwhile not counted among the server's connections: it holds no one's place.
            self._over_cap = True
            self.connections.discard(self)
        self._start_head()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._head_timer is None:  # the next request on a kept-alive connection
            self._start_head()

    def on_headers_complete(self) -> None:
        self._stop_head()
        self._body = BodyClock(self.body_limits, self.loop.time())
        refusal = self._refusal()
        if refusal is None:
            super().on_headers_complete()
        else:
            self._note(refusal.code)
            app, self.app = self.app, refusal
            try:
                super().on_headers_complete()
            finally:
                self.app = app
        if self._last_answer and self.cycle is not None:
            self.cycle.keep_alive = False

    def on_body(self, body: bytes) -> None:
        if self._body is not None:
            self._body.arrived(len(body), self.loop.time())
        super().on_body(body)

    def on_message_complete(self) -> None:
        self._stop_body()
        super().on_message_complete()

    def data_received(self, data: bytes) -> None:
        head = self._head_timer
        super().data_received(data)
        # Counted only while one head stays incomplete: a chunk that ends it may hold a body.
        if head is not None and self._head_timer is head:
            self._head_bytes += len(data)
            if self._head_bytes > self.max_head_bytes:
                self._stop_head()
                self._refuse_head()
        if self._body is not None and self._body_timer is None and not self.transport.is_closing():
            self._body_timer = self.loop.call_at(self._body.next_check(), self._check_body)

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head()
        self._stop_body()
        if self._peer is not None:
            self.caps.leave(self._peer)
            self._peer = None
        super().connection_lost(exc)

    def _refusal(self) -> Refusal | None:
        """What answers this request in the app's place, if the connection may not have it.
        A probe served beyond a cap is the connection's last answer."""
        probe = self._is_probe()
        connections, requests = len(self.connections), len(self.tasks)
        busy = self.caps.busy(connections, requests, probe=False)
        self._last_answer = probe and (self._over_cap or busy)
        if self._over_cap:
            return None if probe else self.crowded
        if busy and (not probe or self.caps.busy(connections, requests, probe=True)):
            return self.busy
        return None

    def _note(self, code: str) -> None:
        refusals = self.caps.refusals
        if refusals.note(code):
            self.loop.call_later(refusals.every, _log_refusals, refusals)

    def _is_probe(self) -> bool:
        try:
            path = httptools.parse_url(self.url).path
        except httptools.HttpParserInvalidURLError:
            return False
        return self.parser.get_method() in (b"GET", b"HEAD") and path.decode() in PROBE_PATHS

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
        self.transport.write(
            raw_answer("431 Request Header Fields Too Large", "headers_too_large", message)
        )
        self.transport.close()

    def _stop_body(self) -> None:
        self._body = None
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    def _check_body(self) -> None:
        self._body_timer = None
        body = self._body
        if body is None or self.transport.is_closing():
            return
        now = self.loop.time()
        cycle = self.cycle
        if self.flow.read_paused or (cycle is not None and cycle.waiting_for_100_continue):
            body.excuse(now)  # the server is not reading, or the client waits for its leave
        reason = body.overdue(now)
        if reason is None:
            self._body_timer = self.loop.call_at(body.next_check(), self._check_body)
        else:
            self._cut_body(reason)

    def _cut_body(self, reason: str) -> None:
        """Close a connection whose body came too slowly: with a 408 if nothing has answered
        it yet, and the app (if it waits for the body) told that the client left."""
        self._stop_body()
        self._note("body_too_slow")
        cycle = self.cycle
        if cycle is None or not cycle.response_started:
            self.transport.write(raw_answer("408 Request Timeout", "body_too_slow", reason))
        if cycle is not None and not cycle.response_complete:
            # Set now rather than when the transport reports the loss: nothing the app sends
            # may follow the 408 while it flushes.
            cycle.disconnected = True
            cycle.message_event.set()
        self.transport.close()
