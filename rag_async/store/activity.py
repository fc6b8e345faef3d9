"""What the service is doing right now, as `GET /stats`, `/readyz`, `/metrics` and the web
page's live panel read it: which workers are alive (their beats, store/workers.py), how many
jobs wait and run (store/queue.py), and the latest failures (listed by the step that settles a
failed job's end, store/jobs.py, with this module's `FAILURES_LUA`).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import orjson
import structlog
from redis.asyncio import Redis

from rag_async.store.keys import Keys
from rag_async.store.queue import JobQueue

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
        """Queue depth, jobs in flight, jobs waiting by priority, the keys with the most
        waiting, live workers and recent failures (`GET /stats`)."""
        depths, activity, busiest = await asyncio.gather(
            self._queue.depth(),
            self.workers(dead_after),
            self._queue.busiest(),
        )
        return {
            # Waiting: ready, or a retry waiting out its backoff; not running.
            "queue_depth": sum(depth.total - depth.running for depth in depths.values()),
            # Waiting or running, per queue: what an autoscaler of each kind of worker watches.
            "queues": {lane: depth.total for lane, depth in depths.items()},
            "jobs_in_flight": sum(depth.running for depth in depths.values()),
            # Waiting in the keys' lists for the fair-share scheduler, per queue and priority.
            "waiting": {
                lane: {
                    priority: {"jobs": waited.jobs, "oldest_age": round(waited.oldest_age, 3)}
                    for priority, waited in depth.waiting.items()
                }
                for lane, depth in depths.items()
            },
            # The keys with the most jobs waiting, per queue: who the others wait beside.
            "busiest_keys": {
                lane: [{"key": key, "waiting": jobs} for key, jobs in keys]
                for lane, keys in busiest.items()
            },
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
