"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from ...activity import service_stats
from ..errors import json_response
from ..state import State

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is up (it does not look at Redis)."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(state: State) -> Response:
    """Ready to take work: Redis answers (503 otherwise). Also tells the providers' breaker
    states as the workers last reported them (an open breaker defers jobs; it does not make
    the API unready)."""
    try:
        await state.redis.ping()
        stats = await service_stats(state.redis, state.keys, state.settings.worker_dead_after)
    except Exception as error:  # any failure means "not ready"; say which
        return json_response({"status": "unavailable", "redis": str(error)}, status=503)
    return json_response(
        {
            "status": "ready",
            "redis": "ok",
            "queued": stats["queue_depth"],
            "workers": len(stats["workers"]),
            "breakers": stats["breakers"],
        }
    )
