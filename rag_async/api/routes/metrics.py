"""GET /metrics: Prometheus' text format, for operators only.

Who may read it is who may read the operator's routes: an admin key when the API has keys
(Prometheus sends it as a bearer token), else the local user, as for every route of an API
without keys (which listens on loopback only unless told otherwise). The figures say how
busy the service is and how its jobs end, nothing of anyone's questions.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from rag_async.api.auth import Admin
from rag_async.metrics import CONTENT_TYPE_LATEST, ClusterCollector, exposition

router = APIRouter(tags=["health"])


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text"}},
)
async def metrics(request: Request, _: Admin) -> Response:
    """The service's figures (queues, jobs in flight, outcomes, dead letters, live workers,
    breakers: read from Valkey, cached for a second) and this API process's own (HTTP
    request durations, open event streams), in Prometheus' text format."""
    cluster: ClusterCollector = request.state.metrics
    await cluster.refresh()
    return Response(exposition(cluster), media_type=CONTENT_TYPE_LATEST)
