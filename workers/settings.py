"""arq WorkerSettings: startup builds the clients, shutdown closes them.

Jobs are JSON (orjson), never pickle: the API's pool and the worker use the same serializer.
"""

from __future__ import annotations

import os
from typing import Any, cast

import orjson
import structlog
from arq.connections import RedisSettings
from arq.typing import WorkerCoroutine
from arq.worker import Worker, func

from rag_async.activity import Heartbeat
from rag_async.config import Settings
from rag_async.jobs import (
    Services,
    WorkerContext,
    answer_question,
    delete_document,
    ingest_document,
)
from rag_async.keys import Keys
from rag_async.logs import configure_logging

log = structlog.get_logger(__name__)


def redis_settings(url: str) -> RedisSettings:
    settings = RedisSettings.from_dsn(url)
    # arq retries a failed connect `conn_retries` times, a second apart: long enough to ride
    # out a Valkey restart, short enough that a wrong URL fails at start within seconds.
    settings.conn_retries = 3
    return settings


async def startup(ctx: WorkerContext) -> None:
    settings = ctx["settings"]
    services = ctx["services"] = await Services.open(settings, ctx["redis"])
    ctx["heartbeat"] = Heartbeat(
        ctx["redis"], services.keys, services.worker, services.report, settings.worker_heartbeat
    )
    ctx["heartbeat"].start()
    log.info(
        "worker ready",
        pid=os.getpid(),
        max_jobs=settings.worker_max_jobs,
        providers=ctx["services"].providers,
    )


async def job_started(ctx: WorkerContext) -> None:
    ctx["services"].in_flight += 1


async def job_ended(ctx: WorkerContext) -> None:
    ctx["services"].in_flight -= 1


async def shutdown(ctx: WorkerContext) -> None:
    if "heartbeat" in ctx:
        await ctx["heartbeat"].stop()
    services = ctx.get("services")
    if services is not None:
        await services.close()


def worker_options(settings: Settings) -> dict[str, Any]:
    """Everything arq's Worker takes, built from our one Settings."""
    if not settings.redis_url:
        raise ValueError("RAG_REDIS_URL is not set: the worker needs a Redis/Valkey server")
    return {
        # arq types `ctx` as a plain dict; ours is a TypedDict of the same thing.
        "functions": [
            func(
                cast(WorkerCoroutine, answer_question),
                name="answer_question",
                timeout=settings.job_timeout,
                max_tries=settings.job_max_tries,
            ),
            func(
                cast(WorkerCoroutine, ingest_document),
                name="ingest_document",
                timeout=settings.job_timeout,
                max_tries=settings.job_max_tries,
            ),
            func(
                cast(WorkerCoroutine, delete_document),
                name="delete_document",
                timeout=settings.job_timeout,
                max_tries=settings.job_max_tries,
            ),
        ],
        "on_startup": startup,
        "on_shutdown": shutdown,
        "on_job_start": job_started,
        "on_job_end": job_ended,
        "ctx": {"settings": settings},
        "redis_settings": redis_settings(settings.redis_url),
        "queue_name": Keys(settings.key_prefix).queue,
        "max_jobs": settings.worker_max_jobs,
        "job_completion_wait": settings.worker_shutdown_grace,
        "allow_abort_jobs": True,  # DELETE /jobs/{id} of a running job
        "poll_delay": settings.worker_poll_delay,
        "job_timeout": settings.job_timeout,
        "max_tries": settings.job_max_tries,
        "keep_result": 0,  # results live in our job record; arq need not store them too
        "job_serializer": orjson.dumps,
        "job_deserializer": orjson.loads,
    }


class RagWorker(Worker):
    """arq's Worker, without re-checking the jobs it is already running at every poll.

    A running job stays in arq's queue until it ends, and each poll reads the queue's ids and
    spends three Redis round trips per id to learn whether it is running somewhere. The jobs
    running in *this* process are known locally, so they are skipped before any round trip.
    With 10 answers in flight and a 10 ms poll that was ~3,000 round trips a second, half of
    the worker's CPU at low load (docs/benchmarks.md).
    """

    async def start_jobs(self, job_ids: list[bytes]) -> None:
        running = self.tasks
        await super().start_jobs(
            [
                job_id
                for job_id in job_ids
                if (task := running.get(job_id.decode())) is None or task.done()
            ]
        )


def create_worker(settings: Settings, **overrides: Any) -> Worker:
    return RagWorker(**{**worker_options(settings), **overrides})


def _settings_for_arq_cli() -> type:
    # `arq workers.settings.WorkerSettings` reads a class's attributes, so this entry point
    # builds Settings from the environment when arq imports it. Everything else passes its own.
    # A bad environment stops here with a message: an empty class would let arq start a
    # worker on its default Redis and queue, which serves none of our jobs.
    try:
        settings = Settings()
    except ValueError as error:  # pydantic's message names the bad variable
        raise SystemExit(f"error: invalid configuration: {error}") from None
    try:
        options = worker_options(settings)
    except ValueError as error:
        raise SystemExit(f"error: {error}") from None
    configure_logging(settings.log_level, json=settings.log_json, process="worker")
    return type("WorkerSettings", (), options)


def __getattr__(name: str) -> Any:
    # Lazily, so importing this module (tests, `rag-async worker`) reads no environment.
    if name == "WorkerSettings":
        return _settings_for_arq_cli()
    raise AttributeError(name)
