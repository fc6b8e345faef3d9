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

from rag_async.store.activity import Activity
from rag_async.store.dead_letters import DeadLetters
from rag_async.store.errors import StoreError
from rag_async.store.outcomes import JobOutcomes
from rag_async.store.queue import BUSIEST_KEYS, JobQueue, Lane, LaneDepth

log = structlog.get_logger(__name__)


@dataclass(slots=True)
class Figures:
    queues: dict[Lane, LaneDepth] = field(default_factory=dict)
    # Per lane, the keys with the most jobs waiting and how many (BUSIEST_KEYS at most).
    busiest: dict[Lane, list[tuple[str, int]]] = field(default_factory=dict)
    dead_letters: int = 0
    workers_alive: int = 0
    outcomes: dict[tuple[str, str], int] = field(default_factory=dict)
    breakers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ClusterStores:
    """What the figures are read from."""

    queue: JobQueue
    activity: Activity
    outcomes: JobOutcomes
    dead_letters: DeadLetters


async def read_figures(stores: ClusterStores, dead_after: float) -> Figures:
    """Every figure, in one round trip's time (the reads go at once)."""
    depths, activity, dead_letters, outcomes, busiest = await asyncio.gather(
        stores.queue.depth(),
        stores.activity.workers(dead_after),
        stores.dead_letters.count(),
        stores.outcomes.counts(),
        stores.queue.busiest(),
    )
    return Figures(
        queues=depths,
        busiest=busiest,
        dead_letters=dead_letters,
        workers_alive=len(activity.workers),
        outcomes=outcomes,
        breakers=activity.breakers,
    )


class ClusterCollector(Collector):
    """Serves the latest figures to prometheus_client, whose collect() cannot wait: the
    /metrics route awaits `refresh()` first. When Valkey cannot be read the figures are left
    out (stale ones would mislead an alert), and the process's own metrics still answer."""

    def __init__(self, stores: ClusterStores, dead_after: float, max_age: float = 1.0) -> None:
        self._stores, self._dead_after = stores, dead_after
        self._max_age = max_age
        self._figures: Figures | None = None
        self._read_at = float("-inf")
        self._lock = asyncio.Lock()

    async def refresh(self) -> None:
        async with self._lock:  # concurrent scrapes share one read
            if time.monotonic() - self._read_at < self._max_age:
                return
            try:
                self._figures = await read_figures(self._stores, self._dead_after)
            except StoreError as error:
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
    waiting = GaugeMetricFamily(
        "rag_jobs_waiting",
        "Jobs waiting in the keys' lists for the fair-share scheduler, by priority",
        labels=["queue", "priority"],
    )
    waited = GaugeMetricFamily(
        "rag_jobs_waiting_oldest_age_seconds",
        "How long the oldest job of a priority has waited in its key's list (0 when none)",
        labels=["queue", "priority"],
    )
    for lane, queue in figures.queues.items():
        depth.add_metric([lane], queue.ready)
        in_flight.add_metric([lane], queue.running)
        oldest.add_metric([lane], queue.oldest_age)
        for priority, jobs_waiting in queue.waiting.items():
            waiting.add_metric([lane, priority], jobs_waiting.jobs)
            waited.add_metric([lane, priority], jobs_waiting.oldest_age)
    by_key = GaugeMetricFamily(
        "rag_jobs_waiting_by_key",
        f"Jobs waiting, for the {BUSIEST_KEYS} keys with the most waiting (local: no keys)",
        labels=["queue", "key"],
    )
    for lane, keys in figures.busiest.items():
        for key, jobs in keys:
            by_key.add_metric([lane, key or "local"], jobs)
    yield from (depth, in_flight, oldest, waiting, waited, by_key)
