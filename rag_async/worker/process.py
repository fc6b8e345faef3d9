"""The worker process: an arq worker per queue over shared clients, and arq's WorkerSettings.

Startup builds the clients, shutdown closes them.
Jobs are JSON (orjson), never pickle: the API's pool and the worker use the same serializer.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import signal
from asyncio import FIRST_COMPLETED
from typing import Any, cast

import orjson
import structlog
from arq.constants import (
    abort_jobs_ss,
    in_progress_key_prefix,
    job_key_prefix,
    result_key_prefix,
    retry_key_prefix,
)
from arq.typing import WorkerCoroutine
from arq.utils import timestamp_ms, to_ms
from arq.worker import Function, Worker, func

from rag_async.config import Settings, load_settings
from rag_async.domain.errors import ConfigurationError
from rag_async.logs import configure_logging, route_library_logs
from rag_async.metrics import serve_process_metrics
from rag_async.store.errors import StoreError
from rag_async.store.keys import Keys
from rag_async.store.nudge import NudgeListener
from rag_async.store.pool import arq_cli_settings, connect_redis
from rag_async.store.queue import EARLIER_NAMES, JOB_KINDS, LANES, Lane
from rag_async.store.webhooks import DELIVERY_FUNCTION
from rag_async.tracing import setup_tracing
from rag_async.worker.ends import cancel_dropped, settle_stale
from rag_async.worker.heartbeat import Heartbeat
from rag_async.worker.jobs import JOBS, Services, WorkerContext, deliver_webhook, job_function
from rag_async.worker.jobs.webhook import lost_runs_limit

log = structlog.get_logger(__name__)


async def startup(ctx: WorkerContext) -> None:
    route_library_logs()  # arq's CLI has set up a handler of its own by now
    settings = ctx["settings"]
    setup_tracing(settings, "rag-async-worker")
    # First: a port taken is a configuration error, found before any client is opened.
    ctx["metrics_server"] = serve_process_metrics(
        settings.worker_metrics_host, settings.worker_metrics_port
    )
    services = ctx["services"] = await Services.open(settings, ctx["redis"])
    lanes = ctx.get("lanes", LANES)
    # The slots this process offers each of its queues: the scheduler fills the room that the
    # live workers' beats add up to (store/fair_share.py).
    slots = {lane: lane_slots(settings, lane) for lane in lanes}
    ctx["heartbeat"] = Heartbeat(
        ctx["redis"],
        services.keys,
        services.worker,
        lambda: {**services.report(), "slots": slots},
        services.running,
        interval=settings.worker_heartbeat,
        dead_after=settings.worker_dead_after,
        in_progress_ttls={lane: in_progress_ttl(settings, lane) for lane in LANES},
        # Ends left half done by a process that died: given a dead worker's time to finish.
        settle=functools.partial(settle_stale, services.ends, settings.worker_dead_after),
        # Jobs waiting for room that no job's end handed on (one cancelled before it ran).
        schedule=functools.partial(services.queue.schedule, lanes),
    )
    ctx["heartbeat"].start()
    log.info(
        "worker ready",
        pid=os.getpid(),
        max_jobs=settings.worker_max_jobs,
        providers=ctx["services"].providers,
    )


async def job_started(ctx: WorkerContext) -> None:
    # Bound in the task arq runs the job in, so arq's own lines of the job carry its id too
    # (the lifecycle binds the rest once it has read the record).
    structlog.contextvars.bind_contextvars(job_id=ctx["job_id"])
    # Before the job runs (RagWorker: as it was taken), so a worker that dies from here on
    # leaves the job findable.
    await ctx["services"].running.add(ctx["job_id"])


async def job_ending(ctx: WorkerContext) -> None:
    ctx["services"].running.ending(ctx["job_id"])


async def job_ended(ctx: WorkerContext) -> None:
    # After arq has finished the job (deleted its in-progress key, taken it off its queue), not
    # before: a job with its key set that no job set holds is taken for one a worker died
    # holding (store/workers.py), and would be freed to run again.
    services = ctx["services"]
    if await services.running.discard(ctx["job_id"]):
        return  # RagWorker did both in arq's finish of the job
    # Its slot is free: the next waiting job, in fair turn, takes it. If Valkey cannot be told
    # now, the next heartbeat hands it on.
    try:
        await services.queue.schedule(ctx.get("lanes", LANES))
    except StoreError as error:
        log.warning("could not hand on waiting jobs", error=str(error))


async def shutdown(ctx: WorkerContext) -> None:
    if "heartbeat" in ctx:
        await ctx["heartbeat"].stop()
    if (metrics_server := ctx.get("metrics_server")) is not None:
        await metrics_server.close()
    services = ctx.get("services")
    if services is not None:
        await services.close()


def lane_functions(settings: Settings, lane: Lane) -> list[Function]:
    """The arq functions of one queue, each living its jobs through our lifecycle and within
    our limits (rag_async/jobs/lifecycle.py).

    arq's own timeout and tries sit just beyond ours, so that ours always act first and the
    job's record is told; arq's would drop the job silently.
    """
    timeout = settings.question_timeout if lane == "questions" else settings.document_timeout
    max_tries = settings.job_max_tries
    # arq types `ctx` as a plain dict; ours is a TypedDict of the same thing.
    return [
        func(
            cast(WorkerCoroutine, job_function(JOBS[kind], timeout=timeout, max_tries=max_tries)),
            name=name,
            timeout=timeout + ARQ_TIMEOUT_MARGIN,
            max_tries=max_tries + 1,
        )
        for kind, job_kind in JOB_KINDS.items()
        if job_kind.lane == lane
        for name in dict.fromkeys((kind, EARLIER_NAMES.get(kind, kind)))
    ] + [webhook_function(settings)]


def webhook_function(settings: Settings) -> Function:
    """Every queue delivers the webhooks of its own jobs (store/webhooks.py), one try per
    run; arq's limits sit beyond ours, as for the jobs. Tries are counted by what the job's
    record holds, so arq's count, which includes runs lost with their workers, is only a
    backstop, far beyond (worker/jobs/webhook.py)."""
    return func(
        cast(WorkerCoroutine, deliver_webhook),
        name=DELIVERY_FUNCTION,
        timeout=settings.webhook_timeout + ARQ_TIMEOUT_MARGIN,
        max_tries=lost_runs_limit(settings.webhook_max_tries) + 1,
    )


# Time for a job to record its own timeout before arq's fires.
ARQ_TIMEOUT_MARGIN = 30.0


def in_progress_ttl(settings: Settings, lane: Lane) -> float:
    """How long the in-progress key that arq sets on a job of `lane` lives, in seconds: the
    longest timeout of the lane's functions plus 10 s (arq's `Worker.in_progress_timeout_s`).
    Every worker of a deployment, whatever its lanes, judges the keys' age by it."""
    return max(function.timeout_s or 0.0 for function in lane_functions(settings, lane)) + 10


def lane_slots(settings: Settings, lane: Lane) -> int:
    """How many jobs of `lane` one worker process runs at once."""
    return settings.worker_max_jobs if lane == "questions" else settings.worker_max_documents


def worker_options(settings: Settings, lane: Lane) -> dict[str, Any]:
    """Everything arq's Worker takes for one queue, built from our one Settings."""
    if not settings.redis_url:
        raise ValueError("RAG_REDIS_URL is not set: the worker needs a Redis/Valkey server")
    questions = lane == "questions"
    return {
        "functions": lane_functions(settings, lane),
        "on_startup": startup,
        "on_shutdown": shutdown,
        "on_job_start": job_started,
        "on_job_end": job_ending,
        "after_job_end": job_ended,
        "ctx": {"settings": settings, "lanes": (lane,)},
        "redis_settings": arq_cli_settings(settings.redis_url),
        "queue_name": Keys(settings.key_prefix).queue(lane),
        "max_jobs": lane_slots(settings, lane),
        "job_completion_wait": settings.worker_shutdown_grace,
        "allow_abort_jobs": True,  # DELETE /jobs/{id} of a running job
        "poll_delay": settings.worker_poll_delay
        if questions
        else settings.worker_document_poll_delay,
        "keep_result": 0,  # results live in our job record; arq need not store them too
        "job_serializer": orjson.dumps,
        "job_deserializer": orjson.loads,
    }


class RagWorker(Worker):
    """arq's Worker, woken between polls by a nudge, without re-checking the jobs it is already
    running at every poll, and ending a cancelled job whose run it dropped before starting it.

    With `wake` (an event the process's nudge listener sets, store/nudge.py), the sleep
    between two polls is ours: up to arq's poll delay, cut short when the event is set. A job
    put on the queue then starts at once, and the poll is only the fallback for what no nudge
    announces (a deferred job coming due, a nudge lost with its connection).

    A running job stays in arq's queue until it ends, and each poll reads the queue's ids and
    spends three Redis round trips per id to learn whether it is running somewhere. The jobs
    running in *this* process are known locally, so they are skipped before any round trip.
    With answers in flight and a short poll delay that was a large share of the worker's CPU,
    and of Valkey's (docs/benchmarks.md, "arq's poll delay").
    """

    def __init__(self, *args: Any, wake: asyncio.Event | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.wake = wake
        self.fallback_poll = self.poll_delay_s
        self._polled = False
        if wake is not None:
            self.poll_delay_s = 0.0  # arq's loop sleeps no more: `_poll_iteration` waits

    async def _poll_iteration(self) -> None:
        # The wait comes first, except before the first poll, as arq's own loop sleeps after
        # each: so a burst run (tests) still ends once its first poll finds the queue empty.
        if self.wake is not None:
            if self._polled:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.fallback_poll):
                        await self.wake.wait()
            self._polled = True
            # Cleared before the read: a nudge from here on is for a job this read may miss,
            # and makes the next wait return at once.
            self.wake.clear()
        await super()._poll_iteration()

    def _release_sem_dec_counter_on_complete(self) -> None:
        # A worker that was full read nothing at its last polls: jobs due meanwhile, which
        # another worker had no room for either, are read now that a slot is free.
        full = self.job_counter >= self.max_jobs
        super()._release_sem_dec_counter_on_complete()
        if full and self.wake is not None:
            self.wake.set()

    async def start_jobs(self, job_ids: list[bytes]) -> None:
        """arq's `start_jobs`, each job taken and recorded in this worker's job set in one
        step (`RunningJobs.claim`) rather than arq's four round trips and a fifth for the set;
        the jobs running here skipped before any."""
        running = self.tasks
        services: Services = self.ctx["services"]
        for job_id_b in job_ids:
            job_id = job_id_b.decode()
            if (task := running.get(job_id)) is not None and not task.done():
                continue
            await self.sem.acquire()
            if self.job_counter >= self.max_jobs:
                self.sem.release()
                return
            self.job_counter += 1
            ttl_ms = int(self.in_progress_timeout_s * 1000)
            try:
                score = await services.running.claim(
                    job_id, self.queue_name, timestamp_ms(), ttl_ms
                )
            except BaseException:
                score = None
                raise
            finally:
                if score is None:  # elsewhere, finished, re-queued for later, or Valkey away
                    self.job_counter -= 1
                    self.sem.release()
            if score is None:
                continue
            task = self.loop.create_task(self.run_job(job_id, score))
            task.add_done_callback(lambda _: self._release_sem_dec_counter_on_complete())
            running[job_id] = task

    async def finish_job(
        self,
        job_id: str,
        finish: bool,
        result_data: bytes | None,
        result_timeout_s: float | None,
        keep_result_forever: bool,
        incr_score: int | None,
        keep_in_progress: float | None,
    ) -> None:
        """arq's `finish_job`, with what the end hook did in two round trips of its own done in
        its step: the job out of this worker's job set (`RunningJobs.release`: the in-progress
        key and the job set's entry go together) and its slot handed on (`schedule_in`)."""
        services: Services | None = self.ctx.get("services")
        freed = keep_in_progress is None and services is not None
        async with self.pool.pipeline(transaction=True) as tr:
            delete_keys = []
            in_progress_key = in_progress_key_prefix + job_id
            if keep_in_progress is None:
                delete_keys.append(in_progress_key)
            else:
                tr.pexpire(in_progress_key, to_ms(keep_in_progress))
            if finish:
                if result_data:
                    expire = None if keep_result_forever else result_timeout_s
                    tr.set(result_key_prefix + job_id, result_data, px=to_ms(expire))
                delete_keys += [retry_key_prefix + job_id, job_key_prefix + job_id]
                tr.zrem(abort_jobs_ss, job_id)
                tr.zrem(self.queue_name, job_id)
            elif incr_score:
                tr.zincrby(self.queue_name, incr_score, job_id)
            if delete_keys:
                tr.delete(*delete_keys)
            if freed and services is not None:
                services.running.release(tr, job_id)
                services.queue.schedule_in(tr, self.ctx.get("lanes", LANES))
            results = await tr.execute(raise_on_error=False)
        # arq's commands raise as they would; a failed schedule is the end hook's to redo.
        arq_results = results[:-2] if freed else results
        if errors := [error for error in arq_results if isinstance(error, Exception)]:
            raise errors[0]
        if freed and services is not None and not isinstance(results[-1], Exception):
            services.running.released(job_id)

    async def finish_failed_job(self, job_id: str, result_data: bytes | None) -> None:
        """arq drops a run without calling its function when it reads the job's abort
        before starting it: a cancel that found the job just taken by this worker. No
        attempt will end that job, so it ends here, cancelled, as its attempt would have."""
        await super().finish_failed_job(job_id, result_data)
        services: Services | None = self.ctx.get("services")
        if services is None:
            return
        # Taken (`start_jobs` recorded it), but never started: no end hook will discard it.
        await services.running.discard(job_id)
        try:
            await cancel_dropped(services.ends, job_id)
        except Exception:  # a Redis blip, say: arq's run loop must go on
            log.exception("could not end a job whose run was dropped", job_id=job_id)


class WorkerProcess:
    """One worker process: an arq worker per queue (rag_async/queues.py), sharing the process's
    clients (one Redis pool, one Qdrant client, one HTTP pool) and its heartbeat.

    `run()` returns after `stop()`: no new job is taken, running ones get
    `worker_shutdown_grace` seconds to finish, and what still runs then is cancelled and stays
    queued for another worker.
    """

    def __init__(self, settings: Settings, lanes: tuple[Lane, ...] = LANES) -> None:
        if not settings.redis_url:
            raise ValueError("RAG_REDIS_URL is not set: the worker needs a Redis/Valkey server")
        self.settings = settings
        self.lanes = lanes
        self.ctx: dict[str, Any] = {"settings": settings, "lanes": lanes}
        self.workers: list[RagWorker] = []
        # Each lane's worker is woken by the process's one nudge subscription (store/nudge.py).
        self.wakes: dict[Lane, asyncio.Event] = {}
        self.nudges: NudgeListener | None = None
        self._stop_asked = asyncio.Event()

    @property
    def services(self) -> Services | None:
        services: Services | None = self.ctx.get("services")
        return services

    def stop(self) -> None:
        self._stop_asked.set()

    async def run(self) -> None:
        settings = self.settings
        redis = connect_redis(settings, client_name="rag-worker", ride_out_outages=True)
        self.ctx["redis"] = redis
        try:
            await startup(cast(WorkerContext, self.ctx))
            if settings.worker_nudge:
                self.wakes = {lane: asyncio.Event() for lane in self.lanes}
                self.nudges = NudgeListener(redis, Keys(settings.key_prefix), self.wakes)
                self.nudges.start()
            for lane in self.lanes:
                options = worker_options(settings, lane)
                for shared in ("on_startup", "on_shutdown", "redis_settings"):
                    del options[shared]  # done once for the process, here
                # The process's clients, and the worker's own queue for the hooks of its jobs.
                ctx = {**self.ctx, "lanes": (lane,)}
                options |= {"ctx": ctx, "redis_pool": redis, "handle_signals": False}
                self.workers.append(RagWorker(**options, wake=self.wakes.get(lane)))
            await self._run_until_stopped()
        finally:
            if self.nudges is not None:
                await self.nudges.close()
            await shutdown(cast(WorkerContext, self.ctx))
            await redis.aclose(close_connection_pool=True)  # ours: nobody else uses it

    async def _run_until_stopped(self) -> None:
        polling: dict[asyncio.Task[Any], RagWorker] = {
            asyncio.create_task(worker.async_run()): worker for worker in self.workers
        }
        stop_asked = asyncio.create_task(self._stop_asked.wait())
        failure: BaseException | None = None
        while not stop_asked.done():
            done, _ = await asyncio.wait([*polling, stop_asked], return_when=FIRST_COMPLETED)
            for task in done & polling.keys():
                worker = polling.pop(task)
                error = None if task.cancelled() else task.exception()
                if isinstance(error, StoreError):
                    # Valkey away for longer than the client's retries: arq's poll loop ended,
                    # the running jobs did not. Poll again once it is back.
                    log.warning("lost Valkey, polling again", queue=worker.queue_name, error=error)
                    polling[asyncio.create_task(self._poll_again(worker))] = worker
                else:
                    failure = error or RuntimeError(f"{worker.queue_name}: polling stopped")
                    self.stop()
        for worker in self.workers:  # graceful: arq waits for running jobs, then cancels them
            worker.handle_sig_wait_for_completion(signal.SIGTERM)
        if polling:
            await asyncio.wait(polling)
        for worker in self.workers:  # the cancelled jobs' own bookkeeping
            await asyncio.gather(*worker.tasks.values(), return_exceptions=True)
            with contextlib.suppress(StoreError):
                await worker.pool.delete(worker.health_check_key)
        if failure is not None:
            raise failure

    async def _poll_again(self, worker: RagWorker) -> None:
        await asyncio.sleep(1.0)
        if not self._stop_asked.is_set():
            await worker.async_run()


def _settings_for_arq_cli(lane: Lane) -> type:
    # `arq workers.settings.WorkerSettings` reads a class's attributes, so this entry point
    # builds Settings from the environment when arq imports it. Everything else passes its own.
    # arq's CLI runs one queue per process: `WorkerSettings` for questions and
    # `DocumentWorkerSettings` for documents (two processes need a Qdrant server).
    # A bad environment stops here with a message: an empty class would let arq start a
    # worker on its default Redis and queue, which serves none of our jobs.
    try:
        settings, warnings = load_settings()
    except ConfigurationError as error:
        raise SystemExit(f"error: {error.message}") from None
    try:
        options = worker_options(settings, lane)
    except ValueError as error:
        raise SystemExit(f"error: {error}") from None
    configure_logging(settings.log_level, json=settings.log_json, process="worker")
    for warning in warnings:
        log.warning(warning)
    return type("WorkerSettings", (), options)


def __getattr__(name: str) -> Any:
    # Lazily, so importing this module (tests, `rag-async worker`) reads no environment.
    if name == "WorkerSettings":
        return _settings_for_arq_cli("questions")
    if name == "DocumentWorkerSettings":
        return _settings_for_arq_cli("documents")
    raise AttributeError(name)
