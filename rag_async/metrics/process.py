"""What one process measures of itself: the stages of the jobs it ran, the LLM tokens it
asked for, its open event streams and its HTTP requests.

Each process (API or worker) keeps its own; Prometheus scrapes each and sums. The figures of
the whole service (queues, outcomes, workers) are read from Valkey instead (cluster.py).
"""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.process_collector import ProcessCollector

REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=REGISTRY)  # CPU, memory and open files of the process

# From a cached answer's tens of milliseconds to a long ingestion's minutes.
_STAGE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
_HTTP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

JOB_STAGE_SECONDS = Histogram(
    "rag_job_stage_seconds",
    "Seconds a completed job spent in each stage (queue_wait, embedding, retrieval, "
    "first_token: from creation to the first answer text, generation, total)",
    ["kind", "stage"],
    buckets=_STAGE_BUCKETS,
    registry=REGISTRY,
)
LLM_TOKENS = Counter(
    "rag_llm_tokens",
    "Tokens of the LLM calls this process made, as the LLM server reported them "
    "(direction: prompt or completion)",
    ["direction"],
    registry=REGISTRY,
)
SSE_CONNECTIONS = Gauge(
    "rag_sse_connections", "Event streams (SSE) open in this API process", registry=REGISTRY
)
HTTP_REQUEST_SECONDS = Histogram(
    "rag_http_request_duration_seconds",
    "Seconds from a request's arrival to its response's end, by route template (an event "
    "stream lasts as long as its job)",
    ["method", "route", "status"],
    buckets=_HTTP_BUCKETS,
    registry=REGISTRY,
)

# Run.timings' names, as the stage label says them; a timing not listed is not exported, so
# a new timing cannot add series unnoticed.
_STAGES = {
    "queue_wait": "queue_wait",
    "embedding": "embedding",
    "retrieval": "retrieval",
    "time_to_first_token": "first_token",
    "generation": "generation",
    "total": "total",
}


def observe_stages(kind: str, timings: Mapping[str, float]) -> None:
    """Record a completed job's stage timings (seconds)."""
    for timing, seconds in timings.items():
        stage = _STAGES.get(timing)
        if stage is not None and seconds >= 0:
            JOB_STAGE_SECONDS.labels(kind, stage).observe(seconds)


def count_tokens(usage: Mapping[str, object]) -> None:
    """Add an LLM call's `usage` (prompt_tokens, completion_tokens) to the token counter."""
    for direction in ("prompt", "completion"):
        count = usage.get(f"{direction}_tokens")
        if isinstance(count, int) and count > 0:
            LLM_TOKENS.labels(direction).inc(count)
