"""What the API process holds, built in the lifespan and reached by routes through `Depends`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from arq.connections import ArqRedis
from fastapi import Depends, Request

from rag_async.api.quotas import RateLimiter, StreamSlots
from rag_async.config import Settings
from rag_async.domain.identity import EventsTokens, KeyRing
from rag_async.store.dead_letters import DeadLetters
from rag_async.store.documents import DocumentRegistry
from rag_async.store.events import EventLog, LiveHub
from rag_async.store.idempotency import IdempotencyKeys
from rag_async.store.jobs import Cancellation, JobStore
from rag_async.store.keys import Keys
from rag_async.store.queue import JobQueue
from rag_async.store.uploads import Uploads


@dataclass(slots=True)
class AppState:
    settings: Settings
    keys: Keys
    redis: ArqRedis  # one bounded pool, shared by the stores below
    jobs: JobStore
    uploads: Uploads
    queue: JobQueue
    events: EventLog
    hub: LiveHub
    cancellation: Cancellation
    idempotency: IdempotencyKeys
    registry: DocumentRegistry
    dead_letters: DeadLetters
    keyring: KeyRing
    tokens: EventsTokens
    rate: RateLimiter  # requests a minute per key (shared through Valkey)
    streams: StreamSlots  # open event streams per key (this process's)

    @classmethod
    def open(cls, settings: Settings, redis: ArqRedis) -> AppState:
        """Every store of the API process, over one Redis pool."""
        keys = Keys(settings.key_prefix)
        ttl = settings.result_ttl
        events = EventLog(redis, keys, ttl)
        queue = JobQueue(redis, keys)
        keyring = KeyRing.from_settings(settings)
        uploads = Uploads(redis, keys, settings.max_pending_upload_bytes)
        return cls(
            settings=settings,
            keys=keys,
            redis=redis,
            jobs=JobStore(redis, keys, ttl, uploads, memory_reserve=settings.valkey_memory_reserve),
            uploads=uploads,
            queue=queue,
            events=events,
            hub=LiveHub(redis, keys),
            cancellation=Cancellation(redis, keys, events, queue, uploads),
            idempotency=IdempotencyKeys(redis, keys, ttl),
            registry=DocumentRegistry(redis, keys),
            dead_letters=DeadLetters(redis, keys),
            keyring=keyring,
            tokens=EventsTokens(keyring.token_secret(settings), settings.events_token_ttl),
            rate=RateLimiter(
                redis, keys, settings.rate_limit_per_minute, settings.rate_limit_burst
            ),
            streams=StreamSlots(settings.max_streams_per_key),
        )


async def get_state(request: Request) -> AppState:
    # async: FastAPI runs a plain `def` dependency in a thread pool, a hand-off per request.
    state: AppState = request.state.rag
    return state


State = Annotated[AppState, Depends(get_state)]
