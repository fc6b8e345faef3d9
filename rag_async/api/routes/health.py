"""Liveness and readiness."""

from __future__ import annotations

import structlog
from fastapi import APIRouter
from fastapi.responses import Response

from rag_async.api.errors import error_response, json_response
from rag_async.api.state import State
from rag_async.domain.schemas import ErrorBody

log = structlog.get_logger(__name__)

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is up (it does not look at Redis)."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"model": ErrorBody}})
async def readyz(state: State) -> Response:
    """Ready to take work: Redis answers (503 otherwise). Also tells the providers' breaker
    states as the workers last reported them (an open breaker defers jobs; it does not make
    the API unready)."""
    try:
        await state.activity.ping()
        stats = await state.activity.stats(state.settings.worker_dead_after)
    except Exception as error:  # any failure means "not ready": say what, not the details
        log.warning("not ready", error=str(error))
        message = f"the job store (Redis/Valkey) cannot be reached ({type(error).__name__})"
        return error_response(503, "not_ready", message)
    return json_response(
        {
            "status": "ready",
            "redis": "ok",
            "queued": stats["queue_depth"],
            "workers": len(stats["workers"]),
            "breakers": stats["breakers"],
        }
    )
