"""Idempotency-Key: a repeated request stands for the job the first one created.

A string per key (by its digest, so any key the client sends makes a safe Redis key) holds
"<job id> <request fingerprint>" for the result's lifetime.
"""

from __future__ import annotations

import hashlib

from redis.asyncio import Redis

from rag_async.domain.errors import BadRequest, Conflict
from rag_async.domain.identity import Principal
from rag_async.store.keys import Keys

# KEYS: an Idempotency-Key's claim. ARGV: the job id whose claim it must still be to be dropped.
_RELEASE = """
local claim = redis.call('GET', KEYS[1])
if claim and string.sub(claim, 1, #ARGV[1] + 1) == ARGV[1] .. ' ' then
  redis.call('DEL', KEYS[1])
end
"""


class IdempotencyKeys:
    def __init__(self, redis: Redis, keys: Keys, ttl: int) -> None:
        self._redis = redis
        self._keys = keys
        self._ttl = ttl
        self._release = redis.register_script(_RELEASE)

    async def claim(self, key: str | None, caller: Principal, request: bytes, job_id: str) -> str:
        """The job this request stands for: `job_id` for a new key (or none), the earlier
        job for a repeat of the same request; 409 for the key reused on another request.
        Each caller has its own keys: another's key is new to it, and tells it nothing."""
        if key is None:
            return job_id
        if not 0 < len(key) <= 255:
            raise BadRequest(
                "Idempotency-Key must be 1 to 255 characters", code="bad_idempotency_key"
            )
        redis_key = self._redis_key(key, caller)
        fingerprint = hashlib.sha256(request).hexdigest()
        for _ in range(2):  # a second round only if the earlier claim expired in between
            claim = f"{job_id} {fingerprint}"
            if await self._redis.set(redis_key, claim, nx=True, ex=self._ttl):
                return job_id
            earlier: bytes | None = await self._redis.get(redis_key)
            if earlier is not None:
                earlier_job, _, earlier_fingerprint = earlier.decode().partition(" ")
                if earlier_fingerprint != fingerprint:
                    raise Conflict(
                        "this Idempotency-Key was already used for a different request",
                        code="idempotency_key_reused",
                    )
                return earlier_job
        return job_id

    async def release(self, key: str | None, caller: Principal, job_id: str) -> None:
        """Drop the claim of `job_id`, whose request was refused after claiming (a limit's
        429, say): the client's retry with the same key is then a new request, rather than
        one standing for a job that was never created."""
        if key is not None:
            await self._release(keys=[self._redis_key(key, caller)], args=[job_id])

    def _redis_key(self, key: str, caller: Principal) -> str:
        scoped = f"{caller.name}\x00{key}".encode()
        return self._keys.idempotency(hashlib.sha256(scoped).hexdigest())
