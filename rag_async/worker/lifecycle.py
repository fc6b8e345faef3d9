"""One lifecycle for every kind of job (answer, ingest, delete, and whatever comes next).

A kind of job is its work (`JobSpec.work`, a function of a `Run`); everything around the work
happens here, once:

    load the record ─── gone or ended ──────────────────────────────► nothing (at-least-once)
    tries used up by lost workers ──────────────────────────────────► dead letter
    a provider it needs is known to be down ────────────────────────► defer, no try spent
    it must wait for another job (a conversation's earlier question) ► defer, no try spent
    start the attempt (one Lua step; refused once the job has ended) ► nothing
    status event: first stage, attempt n; logs bound to job_id, request_id, attempt
    the work, within the kind's time limit
      ├─ returns ─────────────────────────────► done event, record complete
      ├─ raises ── outcome.decide ────────────► defer / retry / dead letter / fail
      ├─ cancelled, as DELETE /jobs/{id} asked ► cancelled event
      ├─ raises Replaced (a newer job took over) ► cancelled event, its reason
      ├─ cancelled, the worker is stopping ───► nothing: the job runs again elsewhere
      └─ superseded by a newer attempt ───────► nothing: the newer attempt owns the job
    on any end, the last event gives the job's outcome (and enters its end in the ending set,
    in the same step), then ends.py's `ended`: the TTL restarts, the upload is dropped or kept
    (kinds.py), the outcome is counted, a failed or cancelled job's kind runs its failure hook,
    and the job's webhook, if it has one, is queued for delivery (webhooks/); a job run again
    after its end finishes whatever of that its worker died before doing (ends.py `settle`).
    The API's cancel of a queued job and its requeue of a dead letter are ends.py's too.

arq's own timeout and tries would end a job inside arq without a word to the record, so they
are set out of reach (workers/settings.py) and the limits here are the ones that act.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import structlog
from arq import Retry

from rag_async import tracing
from rag_async.domain.errors import RagError
from rag_async.domain.events import CancelledEvent, DoneEvent, ErrorEvent, StatusEvent, _Event
from rag_async.domain.generation import Incomplete, Usage
from rag_async.domain.job import Ending, JobRecord, JobStatus, record_fields
from rag_async.metrics import observe_stages
from rag_async.providers.breaker import BreakerOpen
from rag_async.store.events import Superseded
from rag_async.worker.ends import CANCELLED_WAITING, ended, settle
from rag_async.worker.outcome import Outcome, decide, given_up
from rag_async.worker.services import Services, WorkerContext

log = structlog.get_logger(__name__)


class JobTimedOut(RagError):
    code = "job_timeout"
    retryable = True  # slowness often passes; a job that is always too slow is dead-lettered


class Replaced(RagError):
    """The job's work became moot: a newer job took over what it works on (a document
    uploaded again, or deleted). The job ends cancelled, saying why; no try would help."""

    code = "superseded"


@dataclass(frozen=True, slots=True)
class Finished:
    """What a job's work hands back for its `done` event and its record: the answer (or a
    summary of what was done), who produced it, and for document jobs the chunk count."""

    answer: str
    providers: Mapping[str, str]
    chunks: int | None = None
    usage: Usage | None = None
    incomplete: Incomplete | None = None
    # Events to write in the `done` event's step, before it (the answer's last text).
    before_done: Sequence[_Event] = ()


class Run:
    """One attempt of a job, as its work sees it: the record it started from, the worker's
    clients, its timings, and writes to the job's log fenced to this attempt."""

    def __init__(
        self,
        services: Services,
        record: JobRecord,
        attempt: int,
        *,
        started: float | None = None,
        first_written: bool = False,
    ) -> None:
        self.services = services
        self.record = record
        self.attempt = attempt
        self.started = time.time() if started is None else started
        self.timings: dict[str, float] = {}
        self.laps: list[tuple[str, float, float]] = []  # (timing, from, to): trace spans
        # With `first_written`, the attempt's first status event was written as it started
        # (`EventLog.begin`), with write id 0.
        self.first_written = first_written
        self._writes = itertools.count(1 if first_written else 0)

    @property
    def job_id(self) -> str:
        return self.record.job_id

    async def emit(self, event: _Event | Sequence[_Event], **fields: Any) -> int:
        """Append `event` (or several in one step, in order) and set the record's `fields`
        while this is the job's latest attempt, else raise `Superseded`. Each write has an id,
        so an append resent after a lost reply is logged once (eventlog.py). An event whose
        fields give the job's `outcome` is its last, and enters the job's end in the ending set
        (store/ending.py)."""
        write_id = f"{self.attempt}:{next(self._writes)}"
        return await self.services.events.append(
            self.job_id, event, record_fields(**fields), attempt=self.attempt, write_id=write_id
        )

    async def stage(self, stage: str, *before: _Event, **fields: Any) -> None:
        """Tell that the attempt entered `stage`, after the events `before` (written with it,
        in one step: what ends a stage and the next stage's start cost one round trip). The
        record keeps the timings of the stages passed so far, so a page reopened mid-job shows
        how long each took."""
        status = JobStatus.IN_PROGRESS
        event = StatusEvent(status=status, stage=stage, attempt=self.attempt)
        fields.update(status=status, stage=stage, timings=self.timings)
        await self.emit([*before, event], **fields)

    def lap(self, timing: str, since: float) -> float:
        """Record the seconds since `since` as `timing`; return the time now."""
        now = time.time()
        self.timings[timing] = now - since
        self.laps.append((timing, since, now))
        return now


@dataclass(frozen=True, slots=True)
class JobSpec:
    """A kind of job, as the lifecycle runs it (what its end asks is kinds.py's, so that
    the API can end a job too)."""

    work: Callable[[Run], Awaitable[Finished]]
    first_stage: Callable[[Services], str]
    # The providers whose breakers must be closed before an attempt starts.
    providers: Callable[[Services], Iterable[str]]
    # Seconds to defer the job for (no try spent, no attempt started) while it must wait for
    # another job to end; None when it may start.
    waits: Callable[[Services, JobRecord], Awaitable[float | None]] | None = None
    # The record's fields without which `waits` always says None: a record with none of them
    # starts its attempt in the step that reads it (`EventLog.begin`). Empty, with `waits`:
    # `waits` is always asked, the record read first.
    waits_on: tuple[str, ...] = ()


JobFunction = Callable[[WorkerContext, str], Awaitable[None]]


def job_function(spec: JobSpec, *, timeout: float, max_tries: int) -> JobFunction:
    """The arq job that lives `spec` through the lifecycle, within our time and try limits."""

    async def run_job(ctx: WorkerContext, job_id: str) -> None:
        services = ctx["services"]
        job_try = ctx.get("job_try", 1)
        # Bound for the whole run, so every line of the job (the record's load, a give-up, a
        # deferral, the attempt) carries the job's ids; `attempt` is the latest one until
        # this run starts its own.
        with structlog.contextvars.bound_contextvars(job_id=job_id):
            started = time.time()
            if _starts_at_once(services, spec, job_try, max_tries):
                record, attempt = await _begin(services, spec, job_id, started)
            else:
                record, attempt = await services.jobs.get(job_id), 0
            if record is None:
                return
            if record.status.ended:
                # Run again after its end: its worker may have died before its bookkeeping.
                await settle(services.ends, record)
                return
            ids = {"request_id": record.request_id, "attempt": record.attempt}
            with structlog.contextvars.bound_contextvars(**ids), _job_span(record):
                if attempt:  # its step came before the job's span, which needs the record
                    tracing.stage_span("valkey.start_attempt", started, time.time(), _VALKEY)
                else:
                    await _run(services, record, spec, job_try, timeout, max_tries)
                    return
                with structlog.contextvars.bound_contextvars(attempt=attempt):
                    run = Run(services, record, attempt, started=started, first_written=True)
                    await _attempt(
                        run, spec, time_limit=timeout, job_try=job_try, max_tries=max_tries
                    )

    return run_job


async def _begin(
    services: Services, spec: JobSpec, job_id: str, started: float
) -> tuple[JobRecord | None, int]:
    """The record, and the attempt started in the same step with its first status event
    (0: not started, `_run` decides)."""
    first = spec.first_stage(services)
    status = JobStatus.IN_PROGRESS
    fields = record_fields(
        status=status, stage=first, timings={}, started_at=started, worker=services.worker
    )
    return await services.events.begin(job_id, first, fields, waits_on=spec.waits_on)


def _starts_at_once(services: Services, spec: JobSpec, job_try: int, max_tries: int) -> bool:
    """Whether the attempt may start in the step that reads the record (`EventLog.begin`):
    a try left, the providers it needs not known to be down, and what would make it wait for
    another job readable in the record (`JobSpec.waits_on`). Otherwise `_run` decides, with
    the record read first."""
    if job_try > max_tries or (spec.waits is not None and not spec.waits_on):
        return False
    return all(services.breakers[name].state == "closed" for name in spec.providers(services))


async def _run(
    services: Services,
    record: JobRecord,
    spec: JobSpec,
    job_try: int,
    time_limit: float,
    max_tries: int,
) -> None:
    if job_try > max_tries:
        # arq counts every start; tries spent with no outcome recorded were runs lost with
        # their workers (killed, or taken for dead: recovery.py).
        lost = f"gave up after {max_tries} tries: the workers running it were lost"
        await _end(Run(services, record, record.attempt), given_up(lost))
        return
    try:
        for provider in spec.providers(services):
            services.breakers[provider].check()
    except BreakerOpen as error:
        await _settle(Run(services, record, record.attempt), error, job_try, max_tries)
        raise  # not reached: a deferral raises arq's Retry
    if spec.waits is not None:
        waiting = Run(services, record, record.attempt)  # no attempt of its own yet
        try:
            if (delay := await spec.waits(services, record)) is not None:
                await _defer_waiting(waiting, delay)
                return
        except asyncio.CancelledError:
            await _end_if_cancelled(waiting)
            raise
    with tracing.span("valkey.start_attempt", attributes=_VALKEY):
        attempt = await services.jobs.start_attempt(record.job_id)
    if not attempt:
        return
    with structlog.contextvars.bound_contextvars(attempt=attempt):
        run = Run(services, record, attempt)
        await _attempt(run, spec, time_limit=time_limit, job_try=job_try, max_tries=max_tries)


async def _defer_waiting(run: Run, delay: float) -> None:
    """Defer a job that must wait for another to end, without spending a try (arq's Retry);
    unless its cancel was asked meanwhile: with no attempt to stop, it ends cancelled here
    (arq, told to abort a job it will run again, would end it inside arq, without a word to
    the record)."""
    fresh = await run.services.jobs.get(run.job_id)
    if fresh is not None and fresh.cancel_requested:
        await _end_cancelled(run, CancelledEvent(message=CANCELLED_WAITING.message))
        return
    await run.services.queue.take_back_try(run.job_id)
    log.debug("job waits for another to end, deferred", defer=delay)
    raise Retry(defer=delay)


def _job_span(record: JobRecord) -> AbstractContextManager[object]:
    """The trace span of one run of the job, a child of the request that created it. The
    first run's span starts when the job was created, so that the queue wait lies within."""
    first = record.attempt == 0 and record.created_at is not None
    attributes = {"rag.job_id": record.job_id, "rag.kind": record.kind}
    start = record.created_at if first else None
    return tracing.span("job", parent=record.traceparent, start=start, attributes=attributes)


def _trace_stages(run: Run) -> None:
    """The attempt's measured stages as spans of the job's (when traces are on)."""
    if not tracing.active():
        return
    if run.record.attempt == 0 and run.record.created_at is not None:
        tracing.stage_span("queue_wait", run.record.created_at, run.started)
    for timing, since, until in run.laps:
        if timing in _STAGE_SPANS:
            attributes: dict[str, str | int] = {"rag.attempt": run.attempt}
            attributes.update(_STAGE_SPANS[timing])
            tracing.stage_span(timing, since, until, attributes)


# Timings that are stages of their own, and what they call; the others (time to first token,
# total) span several stages.
_STAGE_SPANS: dict[str, dict[str, str]] = {
    "embedding": {"rag.calls": "embedder"},
    "retrieval": {"db.system": "qdrant"},  # the search; Qdrant Edge or a server
    "generation": {"rag.calls": "llm"},
}
_VALKEY = {"db.system": "redis"}


async def _attempt(
    run: Run, spec: JobSpec, *, time_limit: float, job_try: int, max_tries: int
) -> None:
    deadline = asyncio.timeout(time_limit)
    try:
        async with deadline:
            if not run.first_written:
                first_stage = spec.first_stage(run.services)
                await run.stage(first_stage, started_at=run.started, worker=run.services.worker)
            await _complete(run, await spec.work(run))
    except Superseded:
        log.warning("attempt superseded by a newer one, stopping")
    except Replaced as replaced:
        log.info("job replaced by a newer one", reason=replaced.message)
        await _end_cancelled(run, CancelledEvent(message=replaced.message))
    except asyncio.CancelledError:
        await _end_if_cancelled(run)
        raise
    except Exception as error:
        if isinstance(error, TimeoutError) and deadline.expired():
            error = JobTimedOut(f"the job took longer than its limit of {time_limit:g} s")
        await _settle(run, error, job_try, max_tries)
    finally:
        _trace_stages(run)


async def _complete(run: Run, finished: Finished) -> None:
    created = run.record.created_at or run.started
    run.timings["queue_wait"] = run.started - created
    finished_at = run.lap("total", created)
    done = DoneEvent(
        answer=finished.answer,
        timings=run.timings,
        providers=dict(finished.providers),
        chunks=finished.chunks,
        usage=finished.usage,
        incomplete=finished.incomplete,
    )
    with tracing.span("valkey.complete", attributes=_VALKEY):
        event_id = await run.emit(
            [*finished.before_done, done],
            outcome="complete",
            status=JobStatus.COMPLETE,
            stage="done",
            answer=finished.answer,
            timings=run.timings,
            providers=finished.providers,
            chunks=finished.chunks,
            usage=finished.usage,
            incomplete=finished.incomplete,
            finished_at=finished_at,
        )
    await _ended(run, "complete", "", event_id)
    observe_stages(run.record.kind, run.timings)
    log.info("job complete", kind=run.record.kind, total_ms=round(run.timings["total"] * 1000, 1))


async def _settle(run: Run, error: Exception, job_try: int, max_tries: int) -> None:
    """Act on the one decision for a failed attempt (outcome.py)."""
    if not isinstance(error, RagError):
        log.error("unexpected error in a job", exc_info=error)
    outcome = decide(error, job_try, max_tries)
    if outcome.action == "defer":
        # The provider is known to be down: wait for it without spending a try.
        await run.services.queue.take_back_try(run.job_id)
        log.info("provider paused, job deferred", error=outcome.message, defer=outcome.delay)
        raise Retry(defer=outcome.delay) from error
    if outcome.action == "retry":
        log.warning("attempt failed, will retry", error=outcome.message, defer=outcome.delay)
        await run.services.outcomes.count(run.record.kind, "retried")
        raise Retry(defer=outcome.delay) from error
    await _end(run, outcome)


async def _end(run: Run, outcome: Outcome) -> None:
    """The job's last word on a failure: an `error` event and the record marked failed (and
    a dead letter kept, if the outcome says so)."""
    error = ErrorEvent(message=outcome.message, code=outcome.code)
    # One outcome a job end: a dead-lettered job is not counted as failed too.
    end: Ending = "dead_lettered" if outcome.action == "dead_letter" else "failed"
    try:
        event_id = await run.emit(
            error,
            outcome=end,
            status=JobStatus.FAILED,
            error=outcome.message,
            finished_at=time.time(),
        )
    except Superseded:
        return  # a newer attempt owns the job and will end it
    log.error("job failed", error=outcome.message)
    await _ended(run, end, outcome.message, event_id)


async def _end_if_cancelled(run: Run) -> None:
    """The attempt's task is being cancelled. If DELETE /jobs/{id} asked for it, the job ends
    cancelled; otherwise the worker is stopping and the job will run again elsewhere."""
    record = await run.services.jobs.get(run.job_id)
    if record is None or not record.cancel_requested:
        return
    await _end_cancelled(run, CancelledEvent())


async def _end_cancelled(run: Run, cancelled: CancelledEvent) -> None:
    fields = {"status": JobStatus.CANCELLED, "stage": "cancelled", "finished_at": time.time()}
    try:
        event_id = await run.emit(cancelled, outcome="cancelled", **fields)
    except Superseded:
        return
    await _ended(run, "cancelled", cancelled.message, event_id)


async def _ended(run: Run, outcome: Ending, reason: str, event_id: int) -> None:
    """The end's bookkeeping (ends.py). Its last event is written, so the job has ended
    whatever happens here: a failure (Valkey away for a moment) leaves the end in the ending
    set for a worker's heartbeat to finish, rather than failing an attempt that is over."""
    try:
        await ended(run.services.ends, run.record, outcome, reason, event_id=event_id)
    except Exception:
        log.exception("the job's end is left for a worker's heartbeat to settle")
