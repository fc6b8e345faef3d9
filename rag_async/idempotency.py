"""Idempotency-Key: a repeated request stands for the job the first one created.

A string per key (by its digest, so any key the client sends makes a safe Redis key) holds
"<job id> <request fingerprint>" for the result's lifetime.
"""

from __future__ import annotations

import hashlib

from redis.asyncio import Redis

from .errors import BadRequest, Conflict
from .keys import Keys


class IdempotencyKeys:
    def __init__(self, redis: Redis, keys: Keys, ttl: int) -> None:
        self._redis = redis
        self._keys = keys
        self._ttl = ttl

    async def claim(self, key: str | None, request: bytes, job_id: str) -> str:
        """The job this request stands for: `job_id` for a new key (or none), the earlier
        job for a repeat of the same request; 409 for the key reused on another request."""
        if key is None:
            return job_id
        if not 0 < len(key) <= 255:
            raise BadRequest(
                "Idempotency-Key must be 1 to 255 characters", code="bad_idempotency_key"
            )
        redis_key = self._keys.idempotency(hashlib.sha256(key.encode()).hexdigest())
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
