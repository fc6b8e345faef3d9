"""The figures of the whole service, read from Valkey when Prometheus scrapes the API: queue
depths, jobs in flight, the oldest waiting job, dead letters, live workers, job outcomes of
every worker, and the providers' breakers.

Any API replica answers the same, so Prometheus may scrape one or all (then take `max`, not
`sum`, of these). A read is a few round trips and is cached for a second, so several scrapers
cost Valkey no more than one.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import structlog
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from redis.asyncio import Redis
from redis.exceptions import RedisError

from rag_async.store.activity import service_stats
from rag_async.store.keys import Keys
from rag_async.store.queue import JOB_KINDS, LANES

log = structlog.get_logger(__name__)

OUTCOMES = ("complete", "failed", "cancelled", "retried", "dead_lettered", "requeued")

# KEYS: an arq queue. ARGV: arq's in-progress key prefix, how many of the oldest ready jobs to
# look at one by one. arq keeps a running job in its queue (scored by when it was due, in
# ms) until it ends, so "ready" = due now and no in-progress key. Running jobs are due, and
# with first-in-first-out they sit at the head: looking at the head finds them without
# walking a deep queue. Returns {ready, running, the oldest ready job's score or -1, now}.
_QUEUE = """
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local due = redis.call('ZCOUNT', KEYS[1], '-inf', now)
local limit = tonumber(ARGV[2])
local head = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'WITHSCORES', 'LIMIT', 0, limit)
local running, oldest = 0, -1
for i = 1, #head, 2 do
  if redis.call('EXISTS', ARGV[1] .. head[i]) == 1 then
    running = running + 1
  elseif oldest < 0 then
    oldest = tonumber(head[i + 1])
  end
end
if oldest < 0 and due > limit then
  local next = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'WITHSCORES', 'LIMIT', limit, 1)
  if #next > 0 then oldest = tonumber(next[2]) end
end
return {due - running, running, oldest, now}
"""
_HEAD = 1000  # beyond the jobs a deployment runs at once


class JobOutcomes:
    """How jobs ended, counted in Valkey by every worker's lifecycle, so one scrape of any
    API process gives the totals of all workers (a worker's own counter would reset with it
    and be lost with it)."""

    def __init__(self, redis: Redis, keys: Keys) -> None:
        self._redis = redis
        self._key = keys.job_outcomes

    async def count(self, kind: str, outcome: str) -> None:
        try:
            await self._redis.hincrby(self._key, f"{kind}:{outcome}", 1)  # type: ignore[misc]
        except RedisError as error:  # a lost count is not worth failing the job's end
            log.warning("could not count the job's outcome", outcome=outcome, error=str(error))


def _outcome_counts(raw: dict[bytes, bytes]) -> dict[tuple[str, str], int]:
    """The counts of every kind and outcome, 0 for those not seen yet: a series that exists
    from the start lets `rate()` and `increase()` see its first job."""
    counts: dict[tuple[str, str], int] = {
        (kind, outcome): 0 for kind in JOB_KINDS for outcome in OUTCOMES
    }
    for name, value in raw.items():
        kind, _, outcome = name.decode().partition(":")
        counts[kind, outcome] = int(value)
    return counts


@dataclass(slots=True)
class QueueFigures:
    ready: int
    running: int
    oldest_age: float


@dataclass(slots=True)
class Figures:
    queues: dict[str, QueueFigures] = field(default_factory=dict)
    dead_letters: int = 0
    workers_alive: int = 0
    outcomes: dict[tuple[str, str], int] = field(default_factory=dict)
    breakers: dict[str, str] = field(default_factory=dict)


async def read_figures(redis: Redis, keys: Keys, dead_after: float, queue_script: Any) -> Figures:
    """Every figure, in two round trips (the queues' and dead letters', then /stats')."""
    in_progress = keys.arq_in_progress("")
    async with redis.pipeline(transaction=False) as pipe:
        for lane in LANES:
            await queue_script(keys=[keys.queue(lane)], args=[in_progress, _HEAD], client=pipe)
        pipe.zcard(keys.dead_letters)
        pipe.hgetall(keys.job_outcomes)
        *per_lane, dead_letters, outcomes = await pipe.execute()
    stats = await service_stats(redis, keys, dead_after)
    figures = Figures(
        dead_letters=int(dead_letters),
        workers_alive=len(stats["workers"]),
        outcomes=_outcome_counts(outcomes),
        breakers=stats["breakers"],
    )
    for lane, (ready, running, oldest, now) in zip(LANES, per_lane, strict=True):
        age = max(0.0, (now - oldest) / 1000) if oldest >= 0 else 0.0
        figures.queues[lane] = QueueFigures(int(ready), int(running), age)
    return figures


class ClusterCollector(Collector):
    """Serves the latest figures to prometheus_client, whose collect() cannot wait: the
    /metrics route awaits `refresh()` first. When Valkey cannot be read the figures are left
    out (stale ones would mislead an alert), and the process's own metrics still answer."""

    def __init__(self, redis: Redis, keys: Keys, dead_after: float, max_age: float = 1.0) -> None:
        self._redis, self._keys, self._dead_after = redis, keys, dead_after
        self._max_age = max_age
        self._figures: Figures | None = None
        self._read_at = float("-inf")
        self._lock = asyncio.Lock()
        self._queue_script = redis.register_script(_QUEUE)

    async def refresh(self) -> None:
        async with self._lock:  # concurrent scrapes share one read
            if time.monotonic() - self._read_at < self._max_age:
                return
            try:
                self._figures = await read_figures(
                    self._redis, self._keys, self._dead_after, self._queue_script
                )
            except RedisError as error:
                log.warning("metrics: could not read Valkey", error=str(error))
                self._figures = None
            self._read_at = time.monotonic()

    def collect(self) -> Iterator[Metric]:
        figures = self._figures
        if figures is None:
            return
        yield from _queue_metrics(figures)
        yield GaugeMetricFamily(
            "rag_dead_letters", "Jobs in the dead-letter queue", value=figures.dead_letters
        )
        yield GaugeMetricFamily(
            "rag_workers_alive", "Workers whose heartbeat is recent", value=figures.workers_alive
        )
        jobs = CounterMetricFamily(
            "rag_jobs",
            "Jobs ended by every worker, by kind and outcome",
            labels=["kind", "outcome"],
        )
        for (kind, outcome), count in sorted(figures.outcomes.items()):
            jobs.add_metric([kind, outcome], count)
        yield jobs
        breakers = GaugeMetricFamily(
            "rag_breaker_open",
            "1 when some live worker has the provider's circuit breaker open",
            labels=["provider"],
        )
        for provider, state in sorted(figures.breakers.items()):
            breakers.add_metric([provider], 1 if state == "open" else 0)
        yield breakers


def _queue_metrics(figures: Figures) -> Iterator[Metric]:
    depth = GaugeMetricFamily(
        "rag_queue_depth", "Jobs due and waiting for a worker (not running)", labels=["queue"]
    )
    in_flight = GaugeMetricFamily(
        "rag_jobs_in_flight", "Jobs a worker is running", labels=["queue"]
    )
    oldest = GaugeMetricFamily(
        "rag_queue_oldest_age_seconds",
        "How long the oldest waiting job has been due (0 when none waits)",
        labels=["queue"],
    )
    for lane, queue in figures.queues.items():
        depth.add_metric([lane], queue.ready)
        in_flight.add_metric([lane], queue.running)
        oldest.add_metric([lane], queue.oldest_age)
    yield from (depth, in_flight, oldest)
