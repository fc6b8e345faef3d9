"""The parts of the server's guards (server.py) that know nothing of a socket: a request body's
clock, the connection caps, and the answers written without the app, in its error shape.

A body is cut as nginx's `client_body_timeout` and Apache's `mod_reqtimeout` cut one: when
nothing of it has arrived for `idle` seconds; when, past that grace, it has arrived at less
than `min_rate` bytes a second on average; and when all of it has not arrived within `total`
seconds. Time in which the server itself is not reading (its buffer is full, or a client waits
for `100 Continue`) is not held against the client.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import orjson
from uvicorn._types import ASGIReceiveCallable, ASGISendCallable, Scope

# Probes get this many connections beyond the global cap, so that an orchestrator still learns
# that the process is alive (and only busy) while clients hold every other connection.
PROBE_RESERVE = 32


@dataclass(frozen=True, slots=True)
class BodyLimits:
    idle: float  # seconds without a byte of the body
    min_rate: float  # bytes a second on average once `idle` has passed (0: no minimum)
    total: float  # seconds for the whole body


class BodyClock:
    """How one request body is arriving, and whether it has become too slow."""

    def __init__(self, limits: BodyLimits, now: float) -> None:
        self.limits = limits
        self.started = now
        self._since = now  # the rate is counted from here (moved on when the server paused)
        self._received = 0  # bytes since `_since`
        self._last = now

    def arrived(self, size: int, now: float) -> None:
        self._received += size
        self._last = now

    def excuse(self, now: float) -> None:
        """The server was not reading: the client starts again with a fresh grace."""
        self._since = self._last = now
        self._received = 0

    def overdue(self, now: float) -> str | None:
        """Why the body is too slow, or None while it is not."""
        limits = self.limits
        if now - self.started >= limits.total:
            return f"the request body did not arrive within {limits.total:g} s"
        if now - self._last >= limits.idle:
            return f"nothing of the request body arrived for {limits.idle:g} s"
        if now >= self._rate_deadline():
            return (
                f"the request body arrived at under {limits.min_rate:g} bytes a second "
                f"after its first {limits.idle:g} s"
            )
        return None

    def next_check(self) -> float:
        """When the body would become overdue if nothing more arrived."""
        limits = self.limits
        return min(self.started + limits.total, self._last + limits.idle, self._rate_deadline())

    def _rate_deadline(self) -> float:
        # received >= min_rate * (t - since - idle)  holds until  t = since + idle + received/rate
        if not self.limits.min_rate:
            return float("inf")
        return self._since + self.limits.idle + self._received / self.limits.min_rate


class RefusalLog:
    """Refusals counted over a window of `every` seconds, opened by the first: a flood must
    show in the logs without writing a line per connection."""

    def __init__(self, every: float = 10.0) -> None:
        self.every = every
        self._counts: Counter[str] = Counter()

    def note(self, code: str) -> bool:
        """Count one refusal; True if it opens a window (to be closed by `take`)."""
        opens = not self._counts
        self._counts[code] += 1
        return opens

    def take(self) -> dict[str, int]:
        counts, self._counts = dict(self._counts), Counter()
        return counts


class ConnectionCaps:
    """Connections of one server: at most `per_client` open from one peer address (0: no
    cap), and `total` in all, beyond which only probes are served, from a small reserve."""

    def __init__(self, total: int, per_client: int) -> None:
        self.total = total
        self.per_client = per_client
        self._open: Counter[str] = Counter()
        self.refusals = RefusalLog()

    def admit(self, peer: str | None) -> bool:
        """Count a new connection from `peer`, or refuse it (uncounted) if it has as many as
        one client may. A peer that is not known (a Unix socket) is not capped."""
        if peer is None:
            return True
        if self.per_client and self._open[peer] >= self.per_client:
            return False
        self._open[peer] += 1
        return True

    def leave(self, peer: str) -> None:
        """Give back the place of a connection `admit` let in."""
        self._open[peer] -= 1
        if self._open[peer] <= 0:
            del self._open[peer]

    def busy(self, connections: int, requests: int, *, probe: bool) -> bool:
        """Whether a request must be refused with the server this full (`connections` open,
        its own included; `requests` being served, its own not yet)."""
        total = self.total + (PROBE_RESERVE if probe else 0)
        return connections > total or requests >= total


def error_body(code: str, message: str) -> bytes:
    return orjson.dumps({"error": {"code": code, "message": message}})


def raw_answer(status: str, code: str, message: str) -> bytes:
    """A whole response, in the API's error shape, that closes the connection: for the
    protocol to write itself when no app is running for the request."""
    body = error_body(code, message)
    return (
        f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    ).encode() + body


@dataclass(frozen=True, slots=True)
class Refusal:
    """An ASGI app that refuses every request with one error, then closes the connection."""

    status: int
    code: str
    message: str
    retry_after: int

    async def __call__(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        body = error_body(self.code, self.message)
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"retry-after", str(self.retry_after).encode()),
            (b"connection", b"close"),
        ]
        await send({"type": "http.response.start", "status": self.status, "headers": headers})
        await send({"type": "http.response.body", "body": body, "more_body": False})


def server_busy(total: int) -> Refusal:
    return Refusal(
        503,
        "server_busy",
        f"this server has {total} connections open, as many as it takes; try again shortly",
        retry_after=2,
    )


def too_many_connections(per_client: int) -> Refusal:
    return Refusal(
        429,
        "too_many_connections",
        f"this client has {per_client} connections open to this server, as many as one may; "
        "close one or reuse it (keep-alive), and try again",
        retry_after=2,
    )
