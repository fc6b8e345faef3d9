"""Prometheus metrics: the process's own (process.py), the service's read from Valkey
(cluster.py), and how they are served (http.py). The metric names are a contract with the
dashboards, alerts and autoscaler of deploy/ and docs/operations.md."""

from rag_async.metrics.cluster import ClusterCollector, ClusterStores
from rag_async.metrics.http import (
    CONTENT_TYPE_LATEST,
    ProcessMetricsServer,
    RequestTimer,
    exposition,
    serve_process_metrics,
)
from rag_async.metrics.process import SSE_CONNECTIONS, count_tokens, observe_stages

__all__ = [
    "CONTENT_TYPE_LATEST",
    "SSE_CONNECTIONS",
    "ClusterCollector",
    "ClusterStores",
    "ProcessMetricsServer",
    "RequestTimer",
    "count_tokens",
    "exposition",
    "observe_stages",
    "serve_process_metrics",
]
