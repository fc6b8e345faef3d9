"""The records of OpenAI's vector stores (/v1/vector_stores): a vector store is a collection
of its owner's (named by its id), and each file attached to it one document of that
collection, ingested by the same job as any upload. What is kept here is what OpenAI's objects
say that the document registry does not: a store's name and metadata, which file is which
document (with its attributes and chunking), and the batches files were attached in.

A JSON string per store (`Keys.vector_store`), a sorted set of each owner's stores by creation
(`Keys.vector_stores`), a hash of each store's attachments (`Keys.vector_store_files`) and a
JSON string per batch (`Keys.file_batch`). Their statuses are not stored: they are read from the
documents (api/openai_compat/vector_store_objects.py).
"""

from __future__ import annotations

import secrets

from pydantic import BaseModel, ConfigDict
from redis.asyncio import Redis

from rag_async.store.keys import Keys
from rag_async.store.memory import LUA as MEMORY_LUA

# Booleans first, then numbers, so that a stored `true` or `2024` reads back as it was sent.
Attributes = dict[str, bool | int | float | str]


def new_vector_store_id() -> str:
    """OpenAI's shape (`vs_`, letters and digits), 96 random bits; a valid collection name."""
    return f"vs_{secrets.token_hex(12)}"


def new_batch_id() -> str:
    return f"vsfb_{secrets.token_hex(12)}"


class VectorStore(BaseModel):
    model_config = ConfigDict(frozen=True)

    store_id: str
    owner: str
    name: str | None = None
    metadata: dict[str, str] = {}
    created_at: int  # seconds
    last_active_at: int


class Attachment(BaseModel):
    """A file attached to a vector store: the document it was ingested as, by which job."""

    model_config = ConfigDict(frozen=True)

    file_id: str
    document_id: str
    job_id: str
    created_at: int
    attached_at: float = 0.0  # the API's clock, finer than `created_at`: the list's order
    attributes: Attributes = {}
    max_chunk_size_tokens: int
    chunk_overlap_tokens: int
    batch_id: str | None = None
    # Why a file of a batch was not queued ({code, message}): a batch takes every file it
    # names, and one refused (a limit reached) is a failed file of it, not a failed request.
    refused: dict[str, str] | None = None


class FileBatch(BaseModel):
    model_config = ConfigDict(frozen=True)

    batch_id: str
    store_id: str
    file_ids: list[str]
    created_at: int
    cancelled: bool = False


# KEYS: the store's record, the owner's ids. ARGV: the memory reserve, the store id, its
# record.
_PUT = (
    MEMORY_LUA
    + """
if memory_over(tonumber(ARGV[1]), string.len(ARGV[3])) then return 0 end
redis.call('SET', KEYS[1], ARGV[3])
local now = redis.call('TIME')
redis.call('ZADD', KEYS[2], 'NX', now[1] * 1000000 + now[2], ARGV[2])
return 1
"""
)


class VectorStores:
    def __init__(self, redis: Redis, keys: Keys, memory_reserve: float = 0.0) -> None:
        self._redis = redis
        self._keys = keys
        self._memory_reserve = memory_reserve
        self._put = redis.register_script(_PUT)

    async def put(self, store: VectorStore) -> bool:
        """Create or update the store's record; False, writing nothing, when Valkey is
        nearly full (memory.py)."""
        keys = self._keys
        record = store.model_dump_json()
        args: list[str | float] = [self._memory_reserve, store.store_id, record]
        stored = [keys.vector_store(store.store_id), keys.vector_stores(store.owner)]
        return bool(await self._put(keys=stored, args=args))

    async def get(self, store_id: str) -> VectorStore | None:
        raw: bytes | None = await self._redis.get(self._keys.vector_store(store_id))
        return None if raw is None else VectorStore.model_validate_json(raw)

    async def ids(self, owner: str) -> list[str]:
        """The owner's store ids, oldest first."""
        ids: list[bytes] = await self._redis.zrange(self._keys.vector_stores(owner), 0, -1)
        return [store_id.decode() for store_id in ids]

    async def remove(self, store: VectorStore) -> None:
        """The store's record and attachments go (its batches expire with nothing to name)."""
        keys = self._keys
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.delete(keys.vector_store(store.store_id), keys.vector_store_files(store.store_id))
            pipe.zrem(keys.vector_stores(store.owner), store.store_id)
            await pipe.execute()

    # Its files.

    async def attach(self, store_id: str, attachment: Attachment) -> None:
        key = self._keys.vector_store_files(store_id)
        await self._redis.hset(key, attachment.file_id, attachment.model_dump_json())  # type: ignore[misc]

    async def attachment(self, store_id: str, file_id: str) -> Attachment | None:
        key = self._keys.vector_store_files(store_id)
        raw: bytes | None = await self._redis.hget(key, file_id)  # type: ignore[misc]
        return None if raw is None else Attachment.model_validate_json(raw)

    async def attachments(self, store_id: str) -> list[Attachment]:
        """The store's files, oldest attached first."""
        key = self._keys.vector_store_files(store_id)
        raw: list[bytes] = await self._redis.hvals(key)  # type: ignore[misc]
        found = [Attachment.model_validate_json(value) for value in raw]
        return sorted(found, key=lambda a: (a.created_at, a.attached_at, a.file_id))

    async def detach(self, store_id: str, file_id: str) -> bool:
        key = self._keys.vector_store_files(store_id)
        return bool(await self._redis.hdel(key, file_id))  # type: ignore[misc]

    # Its batches: kept as long as the results of the jobs they ran.

    async def put_batch(self, batch: FileBatch, ttl: int) -> None:
        key = self._keys.file_batch(batch.batch_id)
        await self._redis.set(key, batch.model_dump_json(), ex=ttl)

    async def batch(self, batch_id: str) -> FileBatch | None:
        raw: bytes | None = await self._redis.get(self._keys.file_batch(batch_id))
        return None if raw is None else FileBatch.model_validate_json(raw)

    async def cancel_batch(self, batch: FileBatch) -> None:
        key = self._keys.file_batch(batch.batch_id)
        cancelled = batch.model_copy(update={"cancelled": True}).model_dump_json()
        await self._redis.set(key, cancelled, xx=True, keepttl=True)
