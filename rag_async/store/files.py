"""The records of files uploaded through OpenAI's Files API (/v1/files); their bytes are on
disk (file_bytes.py), never in Valkey: a file is kept until deleted, where an upload waiting
for its ingestion job (uploads.py) lives only as long as the job.

A hash per file (`Keys.file`), a sorted set of each owner's file ids by upload time
(`Keys.files`, for listing) and each owner's sizes (`Keys.file_bytes`, for the storage
quota), written together in one step.
"""

from __future__ import annotations

import secrets

from pydantic import BaseModel, ConfigDict
from redis.asyncio import Redis

from rag_async.store.keys import Keys
from rag_async.store.memory import LUA as MEMORY_LUA


def new_file_id() -> str:
    """OpenAI's shape (`file-` and letters and digits), with 96 random bits."""
    return f"file-{secrets.token_hex(12)}"


class StoredFile(BaseModel):
    """One uploaded file."""

    model_config = ConfigDict(frozen=True)

    file_id: str
    owner: str
    filename: str
    size: int
    purpose: str
    format: str  # the parser's name for its kind (text, markdown, html, pdf)
    created_at: int  # seconds, as OpenAI's objects have it


# KEYS: the file's hash, the owner's ids, the owner's sizes. ARGV: the memory reserve, the
# file id, its size, then its fields and values.
_PUT = (
    MEMORY_LUA
    + """
if memory_over(tonumber(ARGV[1]), 1024) then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 4))
local now = redis.call('TIME')
redis.call('ZADD', KEYS[2], 'NX', now[1] * 1000000 + now[2], ARGV[2])
redis.call('HSET', KEYS[3], ARGV[2], ARGV[3])
return 1
"""
)


class FileStore:
    def __init__(self, redis: Redis, keys: Keys, memory_reserve: float = 0.0) -> None:
        self._redis = redis
        self._keys = keys
        self._memory_reserve = memory_reserve
        self._put = redis.register_script(_PUT)

    async def put(self, file: StoredFile) -> bool:
        """Record the file; False, writing nothing, when Valkey is nearly full (memory.py):
        its bytes are on disk, but every file is a record here too."""
        keys = self._keys
        pairs = [str(item) for pair in file.model_dump().items() for item in pair]
        args: list[str | float] = [self._memory_reserve, file.file_id, file.size, *pairs]
        owner_keys = [keys.files(file.owner), keys.file_bytes(file.owner)]
        return bool(await self._put(keys=[keys.file(file.file_id), *owner_keys], args=args))

    async def get(self, file_id: str) -> StoredFile | None:
        raw: dict[bytes, bytes] = await self._redis.hgetall(self._keys.file(file_id))  # type: ignore[misc]
        if not raw:
            return None
        return StoredFile.model_validate({k.decode(): v.decode() for k, v in raw.items()})

    async def ids(self, owner: str) -> list[str]:
        """The owner's file ids, oldest first."""
        ids: list[bytes] = await self._redis.zrange(self._keys.files(owner), 0, -1)
        return [file_id.decode() for file_id in ids]

    async def many(self, file_ids: list[str]) -> list[StoredFile | None]:
        """The records of these files, in one round trip (None for one that is gone)."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for file_id in file_ids:
                pipe.hgetall(self._keys.file(file_id))
            entries: list[dict[bytes, bytes]] = await pipe.execute()
        return [
            StoredFile.model_validate({k.decode(): v.decode() for k, v in raw.items()})
            if raw
            else None
            for raw in entries
        ]

    async def remove(self, file: StoredFile) -> None:
        keys = self._keys
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.delete(keys.file(file.file_id))
            pipe.zrem(keys.files(file.owner), file.file_id)
            pipe.hdel(keys.file_bytes(file.owner), file.file_id)
            await pipe.execute()

    async def stored_bytes(self, owner: str) -> int:
        """The bytes of the owner's files."""
        sizes: list[bytes] = await self._redis.hvals(self._keys.file_bytes(owner))  # type: ignore[misc]
        return sum(int(size) for size in sizes)
