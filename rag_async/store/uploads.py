"""The bytes of documents waiting for their ingestion jobs, and the bound on their sum.

An upload lives in Valkey, not in a folder: the API and the workers may run on different
hosts with nothing shared but Valkey. So that a flood of uploads cannot fill Valkey, the bytes
of every pending upload are summed in one key, changed in the same Lua step that writes or
drops an upload, and an upload that would take the sum past `max_pending_bytes` is refused.

This module is the one writer of these keys. Its Lua functions (`LUA`) run inside the job
store's scripts (jobs.py), so that an upload is written with its job's record and dropped, or
kept for a dead letter, with its job's end.

An upload expires with its job's record. One that expires before it is dropped (its job lost,
its dead letter forgotten) leaves the sum too: an index of the uploads by expiry lets the next
upload prune it.
"""

from __future__ import annotations

from redis.asyncio import Redis

from rag_async.store.keys import Keys

# `u` is the upload's keys, in `Uploads.script_keys` order: the upload, the index by expiry,
# the sizes, the sum. `now` is in seconds (Valkey's TIME), as the index's scores are.
LUA = """
local function uploads_prune(u, now)
  local expired = redis.call('ZRANGEBYSCORE', u[2], '-inf', now, 'LIMIT', 0, 100)
  for _, id in ipairs(expired) do
    redis.call('DECRBY', u[4], tonumber(redis.call('HGET', u[3], id) or '0'))
    redis.call('HDEL', u[3], id)
    redis.call('ZREM', u[2], id)
  end
end

-- One upload always fits when none is pending, so a document within the size limit is
-- never refused for good by a bound set below it.
local function uploads_fit(u, size, limit)
  if limit <= 0 then return true end
  local pending = tonumber(redis.call('GET', u[4]) or '0')
  return pending <= 0 or pending + size <= limit
end

local function uploads_keep(u, id, content, ttl, now)
  local size = string.len(content)
  redis.call('SET', u[1], content, 'EX', ttl)
  redis.call('ZADD', u[2], now + ttl, id)
  redis.call('HSET', u[3], id, size)
  redis.call('INCRBY', u[4], size)
end

-- A dead letter keeps its upload as long as its record lives, so that it can be requeued.
local function uploads_retain(u, id, ttl, now)
  if redis.call('EXPIRE', u[1], ttl) == 1 then
    redis.call('ZADD', u[2], 'XX', now + ttl, id)
  end
end

local function uploads_drop(u, id)
  redis.call('DEL', u[1])
  local size = redis.call('HGET', u[3], id)
  if size then
    redis.call('DECRBY', u[4], size)
    redis.call('HDEL', u[3], id)
    redis.call('ZREM', u[2], id)
  end
end
"""

_DROP = LUA + "uploads_drop({KEYS[1], KEYS[2], KEYS[3], KEYS[4]}, ARGV[1])"


class Uploads:
    """The pending uploads: read by the ingestion job, written by the job store's scripts,
    dropped here when a job is taken off the queue or its dead letter is forgotten."""

    def __init__(self, redis: Redis, keys: Keys, max_pending_bytes: int = 0) -> None:
        self._redis = redis
        self._keys = keys
        self.max_pending_bytes = max_pending_bytes  # 0: no bound
        self._drop = redis.register_script(_DROP)

    def script_keys(self, job_id: str) -> list[str]:
        """The keys `LUA`'s functions take as `u`, for a script that declares them."""
        keys = self._keys
        return [keys.upload(job_id), keys.upload_expiries, keys.upload_sizes, keys.upload_bytes]

    async def get(self, job_id: str) -> bytes | None:
        """The bytes an ingestion job was given, while they have not expired."""
        content: bytes | None = await self._redis.get(self._keys.upload(job_id))
        return content

    async def drop(self, job_id: str) -> None:
        """Drop the job's upload, if it has one. Safe to repeat."""
        await self._drop(keys=self.script_keys(job_id), args=[job_id])

    async def pending_bytes(self) -> int:
        """The bytes of every pending upload."""
        return int(await self._redis.get(self._keys.upload_bytes) or 0)
