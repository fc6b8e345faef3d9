"""A worker's heartbeat: its beat every few seconds, and, after each, the recovery that any
live worker does for the others (store/workers.py frees the jobs of workers gone silent)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import orjson
import structlog

from rag_async.store.errors import StoreError
from rag_async.store.keys import Keys
from rag_async.store.pool import Connection
from rag_async.store.queue import Lane
from rag_async.store.workers import DeadWorkerReaper, RunningJobs, WorkerBeats

log = structlog.get_logger(__name__)


class Heartbeat:
    """A worker's periodic "still here, running N jobs" in one hash shared by all workers.

    After each beat it also frees the jobs of workers gone silent or that died before
    recording a job they took, and its own jobs whose end it could not record
    (store/workers.py), then calls `settle`: the worker finishes the ends that a process left
    half done (worker/ends.py). `in_progress_ttls` is the TTL arq gives a job's in-progress
    key, per queue.
    """

    def __init__(
        self,
        redis: Connection,
        keys: Keys,
        worker_id: str,
        report: Callable[[], dict[str, Any]],
        running: RunningJobs,
        interval: float,
        dead_after: float,
        in_progress_ttls: Mapping[Lane, float],
        settle: Callable[[], Awaitable[object]] | None = None,
        schedule: Callable[[], Awaitable[object]] | None = None,
    ) -> None:
        # At least three beats fit in the silence that declares a worker dead, so one late
        # beat (a busy event loop, a Valkey hiccup) never does.
        self._interval = min(interval, dead_after / 3)
        self._beats = WorkerBeats(redis, keys, worker_id)
        self._report = report  # what the worker says of itself: in_flight, breakers
        self._reaper = DeadWorkerReaper(redis, keys, worker_id, dead_after, in_progress_ttls)
        self._running = running
        self._settle = settle
        self._schedule = schedule
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._beat_forever(), name="heartbeat")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(StoreError):
            await self._beats.leave()

    async def _beat_forever(self) -> None:
        last_beat = float("-inf")  # monotonic time of the last beat that reached Valkey
        while True:
            report = orjson.dumps(self._report())
            try:
                beat = await self._beats.beat(report)
                # Judge others only when this worker was not cut off itself: after a Valkey
                # outage every beat is old, and the others need a beat's time to catch up.
                if time.monotonic() - last_beat < 2 * self._interval + 1:
                    await self._reaper.reap(beat)
                    await self._running.repair()
                    if self._settle is not None:
                        await self._settle()
                if self._schedule is not None:
                    await self._schedule()
                last_beat = time.monotonic()
            except StoreError as error:  # Valkey away for a moment: the next beat will do
                log.warning("heartbeat failed", error=str(error))
            await asyncio.sleep(self._interval)
