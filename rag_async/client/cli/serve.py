"""The commands that run the service: `up` (everything), `api` and `worker`."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path
from typing import Annotated

import structlog
import typer

from rag_async.client.cli.base import app, command, fail, settings
from rag_async.config import Settings
from rag_async.datadir import keep_private
from rag_async.domain.errors import ConfigurationError
from rag_async.logs import configure_logging
from rag_async.redaction import redact
from rag_async.store.errors import StoreError, ping

RUN = "Run the service"


def _check_exposure(loaded: Settings) -> None:
    """Refuse to serve every answer to the network without keys (identity.check_exposure)."""
    from rag_async.domain.identity import check_exposure

    try:
        check_exposure(loaded)
    except ConfigurationError as error:
        fail(error.message, code=2)


def _check_redis(url: str | None) -> None:
    """Fail at start, naming the URL, rather than with a connection traceback later."""
    if not url:
        fail("RAG_REDIS_URL is not set (or use `rag-async up`, which starts a Valkey)")
    try:
        ping(url, timeout=2)
    except (StoreError, OSError, ValueError) as error:
        fail(f"cannot reach Redis/Valkey at {redact(url)}: {error}")


def _use_uvloop() -> None:
    """uvloop's cheaper socket I/O matters in a worker streaming many answers at once (uvicorn
    picks it by itself for the API)."""
    try:
        import uvloop
    except ImportError:  # not on every platform; asyncio's loop works, a little slower
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


@command(app, rich_help_panel=RUN)
def up(
    host: Annotated[
        str | None,
        typer.Option(
            metavar="ADDRESS",
            help="Serve the API on this address (RAG_HOST; default 127.0.0.1, this machine only).",
            show_default=False,
        ),
    ] = None,
    port: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=65535,
            metavar="PORT",
            help="Serve the API on this port (RAG_PORT; default 8000).",
            show_default=False,
        ),
    ] = None,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            metavar="DIR",
            help="Keep the data here (RAG_DATA_DIR; default .rag-async in this folder).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Run everything here: embedded Valkey and Qdrant (unless their URLs are set), the API
    and one worker. Ingests the demo corpus on first run; Ctrl-C stops it.

    Port 8000 taken? `rag-async up --port 8001`, then talk to it with
    `rag-async ask --api-url localhost:8001 "…"` (or `export RAG_API_URL=http://localhost:8001`).
    """
    from rag_async.local.supervisor import run_up

    # Through the environment, so that the API and worker processes `up` starts see them too.
    for name, value in (("RAG_HOST", host), ("RAG_PORT", port), ("RAG_DATA_DIR", data_dir)):
        if value is not None:
            os.environ[name] = str(value)
    loaded = settings()
    _check_exposure(loaded)
    configure_logging(loaded.log_level, json=loaded.log_json, process="up")
    raise typer.Exit(run_up(loaded))


@command(app, rich_help_panel=RUN)
def api() -> None:
    """Serve the HTTP API on RAG_HOST:RAG_PORT (needs RAG_REDIS_URL)."""
    import uvicorn

    from rag_async.api import create_app
    from rag_async.api.server import server_options
    from rag_async.heap import settle_heap

    loaded = settings()
    _check_exposure(loaded)
    configure_logging(loaded.log_level, json=loaded.log_json, process="api")
    _check_redis(loaded.redis_url)
    uvicorn.run(
        # The app started, what the process keeps is built: collections skip it from then on.
        create_app(loaded, when_ready=settle_heap),
        host=loaded.host,
        port=loaded.port,
        log_level=loaded.log_level.lower(),
        access_log=False,  # one line per request and per SSE stream is noise at this rate
        log_config=None,  # log through our configuration, like the other processes
        timeout_graceful_shutdown=5,
        **server_options(loaded),  # header timeout and size, keep-alive, connections
    )


@command(app, rich_help_panel=RUN)
def worker(
    queue: Annotated[
        list[str] | None,
        typer.Option(
            "--queue",
            metavar="QUEUE",
            help="Serve only this queue: questions or documents (repeatable). Default: both.",
        ),
    ] = None,
) -> None:
    """Run a worker process that takes questions and documents from their queues (needs
    RAG_REDIS_URL)."""
    from rag_async.store.queue import LANES
    from rag_async.worker.process import WorkerProcess

    unknown = [name for name in queue or [] if name not in LANES]
    if unknown:
        fail(f"unknown queue {unknown[0]!r}: choose from {', '.join(LANES)}", code=2)
    lanes = tuple(lane for lane in LANES if not queue or lane in queue)
    loaded = settings()
    configure_logging(loaded.log_level, json=loaded.log_json, process="worker")
    _check_redis(loaded.redis_url)
    if not loaded.qdrant_url:
        keep_private(loaded.data_dir)  # the embedded store's files: the owner's alone
    _use_uvloop()

    async def serve() -> None:
        process = WorkerProcess(loaded, lanes)
        loop = asyncio.get_running_loop()
        for stop_signal in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(stop_signal, process.stop)
        await process.run()

    try:
        asyncio.run(serve())
    except ConfigurationError as error:
        fail(error.message, code=2)
    # Jobs still running at the end of the grace period were cancelled and stay queued: they
    # run again on a worker (at-least-once), so stopping is an ordinary end, not a crash.
    structlog.get_logger(__name__).info(
        "worker stopped", unfinished_jobs="run again on a worker"
    )  # a log line, so that with RAG_LOG_JSON=true it is JSON like the rest
