"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from ..errors import json_response
from ..state import State

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is up (it does not look at Redis)."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(state: State) -> Response:
    """Ready to take work: Redis answers. 503 otherwise."""
    try:
        await state.redis.ping()
        queued = await state.redis.zcard(state.keys.queue)
    except Exception as error:  # any failure means "not ready"; say which
        return json_response({"status": "unavailable", "redis": str(error)}, status=503)
    return json_response({"status": "ready", "redis": "ok", "queued": queued})
