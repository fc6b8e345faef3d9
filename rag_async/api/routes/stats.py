"""What the service is doing now, for people (the web page's live panel) and dashboards."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from rag_async.api.auth import Caller
from rag_async.api.state import State

router = APIRouter(tags=["health"])

# What a key that is not an admin's may see: counts, not other users' jobs or the workers.
_COUNTS = ("queue_depth", "queues", "jobs_in_flight", "waiting", "breakers")


@router.get("/stats")
async def stats(state: State, caller: Caller) -> dict[str, Any]:
    """Queue depth (waiting jobs), jobs in flight, jobs waiting for their turn by priority
    and the providers' breakers; for an admin key (or the local user) also the keys with the
    most jobs waiting, the live workers and the latest failures."""
    figures = await state.activity.stats(state.settings.worker_dead_after)
    if caller.admin:
        return figures
    return {name: figures[name] for name in _COUNTS} | {"workers_alive": len(figures["workers"])}
