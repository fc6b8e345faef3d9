"""What the API process holds, built in the lifespan and reached by routes through `Depends`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from rag_async.api.quotas import StreamSlots
from rag_async.config import Settings
from rag_async.domain.identity import EventsTokens, KeyRing
from rag_async.metrics import ClusterStores
from rag_async.store.activity import Activity
from rag_async.store.conversations import Conversations
from rag_async.store.events import LiveHub
from rag_async.store.file_bytes import FileBytes
from rag_async.store.files import FileStore
from rag_async.store.idempotency import IdempotencyKeys
from rag_async.store.keys import Keys
from rag_async.store.pool import Connection
from rag_async.store.rate import RateLimiter
from rag_async.store.server_secrets import ServerSecrets
from rag_async.store.vector_stores import VectorStores
from rag_async.worker.ends import Ends, HoldsEnds


@dataclass(slots=True)
class AppState(HoldsEnds):
    settings: Settings
    keys: Keys
    ends: Ends  # the stores a job's end writes, shared with the workers (worker/ends.py)
    hub: LiveHub
    conversations: Conversations
    activity: Activity
    idempotency: IdempotencyKeys
    keyring: KeyRing
    tokens: EventsTokens
    rate: RateLimiter  # requests a minute per key (shared through Valkey)
    streams: StreamSlots  # open event streams per key (this process's)
    # Those opened with an events token, counted apart: a token that leaked can then take
    # these, never the streams its owner opens with the key.
    token_streams: StreamSlots
    secrets: ServerSecrets  # made once, kept in Valkey (document ids)
    # OpenAI's files (records in Valkey, bytes on disk) and vector stores (/v1).
    files: FileStore
    file_bytes: FileBytes
    vector_stores: VectorStores

    def cluster_stores(self) -> ClusterStores:
        """What /metrics reads the service's figures from."""
        return ClusterStores(self.queue, self.activity, self.ends.outcomes, self.dead_letters)

    @classmethod
    def open(cls, settings: Settings, redis: Connection) -> AppState:
        """Every store of the API process, over one Redis pool."""
        keys = Keys(settings.key_prefix)
        ttl = settings.result_ttl
        keyring = KeyRing.from_settings(settings)
        ends = Ends.open(redis, keys, settings)
        return cls(
            settings=settings,
            keys=keys,
            ends=ends,
            activity=Activity(redis, keys, ends.queue),
            hub=LiveHub(redis, keys),
            conversations=ends.conversations,
            idempotency=IdempotencyKeys(redis, keys, ttl),
            keyring=keyring,
            tokens=EventsTokens(keyring.token_secret(settings), settings.events_token_ttl),
            rate=RateLimiter(
                redis, keys, settings.rate_limit_per_minute, settings.rate_limit_burst
            ),
            streams=StreamSlots(settings.max_streams_per_key, settings.max_streams_without_keys),
            token_streams=StreamSlots(
                settings.max_token_streams_per_key,
                settings.max_streams_without_keys,
                noun="event streams opened by events token",
            ),
            secrets=ServerSecrets(redis, keys),
            files=FileStore(redis, keys, settings.valkey_memory_reserve),
            file_bytes=FileBytes(settings.data_dir / "files"),
            vector_stores=VectorStores(redis, keys, settings.valkey_memory_reserve),
        )


async def get_state(request: Request) -> AppState:
    # async: FastAPI runs a plain `def` dependency in a thread pool, a hand-off per request.
    state: AppState = request.state.rag
    return state


State = Annotated[AppState, Depends(get_state)]
