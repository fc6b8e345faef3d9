"""What the service is doing now, for people (the web page's live panel) and dashboards."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from ...activity import service_stats
from ..state import State

router = APIRouter(tags=["health"])


@router.get("/stats")
async def stats(state: State) -> dict[str, Any]:
    """Queue depth (waiting jobs), jobs in flight, live workers and the latest failures."""
    return await service_stats(state.redis, state.keys, state.settings.worker_dead_after)
