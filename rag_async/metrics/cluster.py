"""The figures of the whole service, read from Valkey when Prometheus scrapes the API: queue
depths, jobs in flight, the oldest waiting job, dead letters, live workers, job outcomes of
every worker, and the providers' breakers.

Any API replica answers the same, so Prometheus may scrape one or all (then take `max`, not
`sum`, of these). A read is three reads at once and is cached for a second, so several scrapers
cost Valkey no more than one.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import structlog
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from redis.asyncio import Redis
from redis.exceptions import RedisError

from rag_async.store.activity import worker_activity
from rag_async.store.keys import Keys
from rag_async.store.queue import JOB_KINDS, JobQueue, Lane, LaneDepth

log = structlog.get_logger(__name__)

OUTCOMES = ("complete", "failed", "cancelled", "retried", "dead_lettered", "requeued")


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
class Figures:
    queues: dict[Lane, LaneDepth] = field(default_factory=dict)
    dead_letters: int = 0
    workers_alive: int = 0
    outcomes: dict[tuple[str, str], int] = field(default_factory=dict)
    breakers: dict[str, str] = field(default_factory=dict)


async def read_figures(redis: Redis, keys: Keys, queue: JobQueue, dead_after: float) -> Figures:
    """Every figure, in one round trip's time (three reads at once)."""

    async def counts() -> tuple[int, dict[bytes, bytes]]:
        async with redis.pipeline(transaction=False) as pipe:
            pipe.zcard(keys.dead_letters)
            pipe.hgetall(keys.job_outcomes)
            dead_letters, outcomes = await pipe.execute()
        return int(dead_letters), outcomes

    depths, activity, (dead_letters, outcomes) = await asyncio.gather(
        queue.depth(), worker_activity(redis, keys, dead_after), counts()
    )
    return Figures(
        queues=depths,
        dead_letters=dead_letters,
        workers_alive=len(activity.workers),
        outcomes=_outcome_counts(outcomes),
        breakers=activity.breakers,
    )


class ClusterCollector(Collector):
    """Serves the latest figures to prometheus_client, whose collect() cannot wait: the
    /metrics route awaits `refresh()` first. When Valkey cannot be read the figures are left
    out (stale ones would mislead an alert), and the process's own metrics still answer."""

    def __init__(
        self, redis: Redis, keys: Keys, queue: JobQueue, dead_after: float, max_age: float = 1.0
    ) -> None:
        self._redis, self._keys, self._queue, self._dead_after = redis, keys, queue, dead_after
        self._max_age = max_age
        self._figures: Figures | None = None
        self._read_at = float("-inf")
        self._lock = asyncio.Lock()

    async def refresh(self) -> None:
        async with self._lock:  # concurrent scrapes share one read
            if time.monotonic() - self._read_at < self._max_age:
                return
            try:
                self._figures = await read_figures(
                    self._redis, self._keys, self._queue, self._dead_after
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
