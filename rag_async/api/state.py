"""What the API process holds, built in the lifespan and reached by routes through `Depends`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from arq.connections import ArqRedis
from fastapi import Depends, Request

from ..config import Settings
from ..eventlog import EventLog, LiveHub
from ..jobstore import Cancellation, JobStore
from ..keys import Keys


@dataclass(slots=True)
class AppState:
    settings: Settings
    keys: Keys
    redis: ArqRedis  # one bounded pool for jobs, events and enqueueing
    jobs: JobStore
    events: EventLog
    hub: LiveHub
    cancellation: Cancellation


async def get_state(request: Request) -> AppState:
    # async: FastAPI runs a plain `def` dependency in a thread pool, a hand-off per request.
    state: AppState = request.state.rag
    return state


State = Annotated[AppState, Depends(get_state)]
