"""Serving metrics: the API's request timer, the text a scrape gets, and a worker's own
/metrics server."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest, start_http_server
from prometheus_client.core import Metric
from prometheus_client.registry import Collector, CollectorRegistry
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rag_async.domain.errors import ConfigurationError
from rag_async.metrics.process import HTTP_REQUEST_SECONDS, REGISTRY

__all__ = [
    "CONTENT_TYPE_LATEST",
    "ProcessMetricsServer",
    "RequestTimer",
    "exposition",
    "serve_process_metrics",
]

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class RequestTimer:
    """Times every request by its route's template (`/jobs/{job_id}`), never its raw path: a
    path holds ids, and a label per id would grow without bound. A request that matched no
    route (404, or refused before routing) counts as `unmatched`."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # unless a response starts: the server answers 500 to an app that fails

        async def timed_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, timed_send)
        finally:
            method = scope["method"] if scope["method"] in _METHODS else "other"
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            HTTP_REQUEST_SECONDS.labels(method, route, str(status)).observe(
                time.perf_counter() - started
            )


class _Both(Collector):
    """The process's metrics and a cluster collector in one exposition."""

    def __init__(self, *collectors: Collector) -> None:
        self._collectors = collectors

    def collect(self) -> Iterator[Metric]:
        for collector in self._collectors:
            yield from collector.collect()


def exposition(*extra: Collector) -> bytes:
    """This process's metrics (and `extra`'s), in Prometheus' text format."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Both(REGISTRY, *extra))
    return generate_latest(registry)


class ProcessMetricsServer:
    """A worker's /metrics: prometheus_client's HTTP server, in a thread of its own, so a
    scrape never waits for the worker's event loop (nor the loop for a scrape)."""

    def __init__(self, host: str, port: int) -> None:
        self._server, self._thread = start_http_server(port, addr=host, registry=REGISTRY)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    async def close(self) -> None:
        # shutdown() waits for the serving loop's next poll: not on the event loop.
        await asyncio.to_thread(self._server.shutdown)
        self._server.server_close()


def serve_process_metrics(host: str, port: int | None) -> ProcessMetricsServer | None:
    """The process's /metrics on `host`:`port` (RAG_WORKER_METRICS_*), or none without a port."""
    if port is None:
        return None
    try:
        return ProcessMetricsServer(host, port)
    except OSError as error:  # taken, or an address this machine does not have
        raise ConfigurationError(
            f"RAG_WORKER_METRICS_PORT: cannot serve metrics on {host}:{port}: "
            f"{error.strerror or error} (each worker on a machine needs a port of its own)"
        ) from None
