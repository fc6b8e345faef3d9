"""The dead-letter queue: jobs that failed every try with errors that might have passed.

A dead letter keeps its job record (request, last error, attempts, timestamps); the queue is a
sorted set of job ids by the time they gave up. Requeueing puts the same job, with the same id
and event stream, back on the work queue, so a client following it sees it resume.
"""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis

from rag_async.domain.job import JobRecord
from rag_async.store.keys import Keys

# A dead letter added in the one step that settles its job's end (jobs.py), so once.
LUA = """
local function dead_letters_add(key, id, now)
  redis.call('ZADD', key, now, id)
end
"""


class DeadLetters:
    def __init__(self, redis: Redis, keys: Keys) -> None:
        self._redis = redis
        self._keys = keys

    async def contains(self, job_id: str) -> bool:
        return await self._redis.zscore(self._keys.dead_letters, job_id) is not None

    async def count(self) -> int:
        return int(await self._redis.zcard(self._keys.dead_letters))

    async def remove(self, job_id: str) -> bool:
        return bool(await self._redis.zrem(self._keys.dead_letters, job_id))

    async def entries(self, limit: int = 100) -> list[dict[str, Any]]:
        """The newest dead letters with what their records tell; expired records are pruned."""
        ids = await self._redis.zrevrange(self._keys.dead_letters, 0, limit - 1, withscores=True)
        async with self._redis.pipeline(transaction=False) as pipe:
            for job_id, _ in ids:
                pipe.hgetall(self._keys.job(job_id.decode()))
            records = await pipe.execute()
        entries, expired = [], []
        for (raw_id, dead_at), raw in zip(ids, records, strict=True):
            job_id = raw_id.decode()
            if not raw:
                expired.append(job_id)
                continue
            record = JobRecord.from_hash(job_id, raw)
            entries.append(
                {
                    "job_id": job_id,
                    "kind": record.kind,
                    "request": record.query or record.title or record.source,
                    "error": record.error,
                    "attempts": record.attempt,
                    "created_at": record.created_at,
                    "dead_lettered_at": dead_at,
                }
            )
        if expired:
            await self._redis.zrem(self._keys.dead_letters, *expired)
        return entries
