"""What the service is doing right now: which workers are alive, how many jobs they run, and
the latest failures (listed by the step that settles a failed job's end, jobs.py, with this
module's `FAILURES_LUA`). Workers write it; `GET /stats` (and the web page's live panel) read it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

from rag_async.store.keys import Keys
from rag_async.store.queue import JobQueue, Lane
from rag_async.store.workers import DeadWorkerReaper, RunningJobs

log = structlog.get_logger(__name__)

FAILURES_KEPT = 20

# A failure listed in the one step that settles its job's end (jobs.py), so once: `entry`
# is `failure_entry`'s.
FAILURES_LUA = """
local function failures_record(key, entry, kept)
  redis.call('LPUSH', key, entry)
  redis.call('LTRIM', key, 0, kept - 1)
end
"""


def failure_entry(job_id: str, error: str) -> bytes:
    """A failed job as the list of recent failures holds it."""
    return orjson.dumps({"job_id": job_id, "error": error, "at": time.time()})


# KEYS: the workers' hash. ARGV: the worker's id, the rest of its beat (a JSON object). The
# beat is stamped with Valkey's clock, not the worker's: a beat held up on the way (a network
# partition healing) arrives fresh, and workers' clocks need not agree. Returns the stamp.
_BEAT = """
local t = redis.call('TIME')
local now = t[1] .. '.' .. string.format('%06d', t[2])
redis.call('HSET', KEYS[1], ARGV[1], '{"last_seen":' .. now .. ',' .. string.sub(ARGV[2], 2))
return now
"""


class Heartbeat:
    """A worker's periodic "still here, running N jobs" in one hash shared by all workers.

    After each beat it also frees the jobs of workers gone silent or that died before
    recording a job they took, and its own jobs whose end it could not record (workers.py),
    then calls `settle`: the worker finishes the ends that a process left half done
    (worker/ends.py). `in_progress_ttls` is the TTL arq gives a job's in-progress key, per
    queue.
    """

    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        worker_id: str,
        report: Callable[[], dict[str, Any]],
        running: RunningJobs,
        interval: float,
        dead_after: float,
        in_progress_ttls: Mapping[Lane, float],
        settle: Callable[[], Awaitable[object]] | None = None,
    ) -> None:
        # At least three beats fit in the silence that declares a worker dead, so one late
        # beat (a busy event loop, a Valkey hiccup) never does.
        self._interval = min(interval, dead_after / 3)
        self._redis = redis
        self._keys = keys
        self._worker_id = worker_id
        self._report = report  # what the worker says of itself: in_flight, breakers
        self._reaper = DeadWorkerReaper(redis, keys, worker_id, dead_after, in_progress_ttls)
        self._running = running
        self._settle = settle
        self._beat = redis.register_script(_BEAT)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._beat_forever(), name="heartbeat")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(RedisError):
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.hdel(self._keys.workers, self._worker_id)
                pipe.delete(self._keys.worker_jobs(self._worker_id))
                await pipe.execute()

    async def _beat_forever(self) -> None:
        last_beat = float("-inf")  # monotonic time of the last beat that reached Valkey
        while True:
            report = orjson.dumps(self._report())
            try:
                beat = await self._beat(keys=[self._keys.workers], args=[self._worker_id, report])
                # Judge others only when this worker was not cut off itself: after a Valkey
                # outage every beat is old, and the others need a beat's time to catch up.
                if time.monotonic() - last_beat < 2 * self._interval + 1:
                    await self._reaper.reap(float(beat))
                    await self._running.repair()
                    if self._settle is not None:
                        await self._settle()
                last_beat = time.monotonic()
            except RedisError as error:  # Valkey away for a moment: the next beat will do
                log.warning("heartbeat failed", error=str(error))
            await asyncio.sleep(self._interval)


@dataclass(frozen=True, slots=True)
class WorkerActivity:
    workers: list[dict[str, Any]]  # the live ones' latest beats, by id
    failures: list[dict[str, Any]]  # the latest failed jobs, newest first
    breakers: dict[str, str]  # provider -> the worst breaker state any live worker sees


class Activity:
    """What the workers report, read for `GET /stats`, `/readyz` and `/metrics`."""

    def __init__(self, redis: Redis, keys: Keys, queue: JobQueue) -> None:
        self._redis = redis
        self._keys = keys
        self._queue = queue

    async def ping(self) -> None:
        """Raises if Valkey does not answer."""
        await self._redis.ping()

    async def stats(self, dead_after: float) -> dict[str, Any]:
        """Queue depth, jobs in flight, live workers and recent failures (`GET /stats`)."""
        depths, activity = await asyncio.gather(self._queue.depth(), self.workers(dead_after))
        return {
            # Waiting: ready, or a retry waiting out its backoff; not running.
            "queue_depth": sum(depth.total - depth.running for depth in depths.values()),
            # Waiting or running, per queue: what an autoscaler of each kind of worker watches.
            "queues": {lane: depth.total for lane, depth in depths.items()},
            "jobs_in_flight": sum(depth.running for depth in depths.values()),
            "workers": activity.workers,
            "recent_failures": activity.failures,
            "breakers": activity.breakers,
        }

    async def workers(self, dead_after: float) -> WorkerActivity:
        """The live workers, their breakers and the latest failures, in one round trip."""
        keys = self._keys
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(keys.workers)
            pipe.lrange(keys.failures, 0, 9)
            pipe.time()  # beats carry Valkey's clock
            beats, failures, (seconds, microseconds) = await pipe.execute()
        return _activity(beats, failures, seconds + microseconds / 1e6, dead_after)


def _activity(
    beats: dict[bytes, bytes], failures: list[bytes], now: float, dead_after: float
) -> WorkerActivity:
    workers = []
    for worker_id, raw in beats.items():
        beat = orjson.loads(raw)
        if now - beat["last_seen"] <= dead_after:
            workers.append({"id": worker_id.decode(), **beat})
    breakers: dict[str, str] = {}
    for worker in workers:  # a provider is as bad as the worst state any worker sees
        for provider, state in worker.get("breakers", {}).items():
            if _SEVERITY[state] > _SEVERITY[breakers.get(provider, "closed")]:
                breakers[provider] = state
            breakers.setdefault(provider, state)
    return WorkerActivity(
        sorted(workers, key=lambda worker: str(worker["id"])),
        [orjson.loads(entry) for entry in failures],
        breakers,
    )


_SEVERITY = {"closed": 0, "half_open": 1, "open": 2}
