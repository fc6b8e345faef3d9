"""Idempotency-Key: a repeated request stands for the job the first one created.

A string per key (by its digest, so any key the client sends makes a safe Redis key) holds
"<job id> <request fingerprint>" for the result's lifetime.

A claim is made before its job's record, so a request that fails in between (a 429, Valkey
away or full, any 500) would leave it standing for a job that never existed. Such a request
releases its claim; and should it not manage to (Valkey was what failed), a claim whose job
still has no record `STALE_AFTER` seconds on is taken by the next request with its key.
Until then a repeat is told that the first request is still being accepted (409).
"""

from __future__ import annotations

import hashlib

from redis.asyncio import Redis

from rag_async.domain.errors import BadRequest, Conflict
from rag_async.domain.identity import Principal
from rag_async.store.keys import Keys

# Longer than a request takes from its claim to its job's record (a few round trips, each
# waiting at most the API pool's 5 s for a connection).
STALE_AFTER = 30

# KEYS: an Idempotency-Key's claim. ARGV: the new claim ("<job id> <fingerprint>"), the ttl,
# the prefix of job records, STALE_AFTER. Returns the claim that stands: the new one if the key
# was free or its claim stale (no record of its job, made long enough ago), else the earlier
# one, with "?" before it when its job has no record yet.
_CLAIM = """
local ttl = tonumber(ARGV[2])
local earlier = redis.call('GET', KEYS[1])
if earlier then
  local job = string.sub(earlier, 1, (string.find(earlier, ' ', 1, true) or 1) - 1)
  if redis.call('EXISTS', ARGV[3] .. job) == 1 then return earlier end
  if ttl - redis.call('TTL', KEYS[1]) < tonumber(ARGV[4]) then return '?' .. earlier end
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ttl)
return ARGV[1]
"""

# KEYS: an Idempotency-Key's claim, the record of the job it must still stand for. ARGV: that
# job's id. A job that was created keeps its claim, whatever failed after.
_RELEASE = """
local claim = redis.call('GET', KEYS[1])
if claim and string.sub(claim, 1, #ARGV[1] + 1) == ARGV[1] .. ' '
    and redis.call('EXISTS', KEYS[2]) == 0 then
  redis.call('DEL', KEYS[1])
end
"""


class IdempotencyKeys:
    def __init__(self, redis: Redis, keys: Keys, ttl: int) -> None:
        self._redis = redis
        self._keys = keys
        self._ttl = ttl
        self._claim = redis.register_script(_CLAIM)
        self._release = redis.register_script(_RELEASE)

    async def claim(self, key: str | None, caller: Principal, request: bytes, job_id: str) -> str:
        """The job this request stands for: `job_id` for a new key (or none), the earlier
        job for a repeat of the same request; 409 for the key reused on another request, or
        for a repeat while the first request has not yet created its job. Each caller has
        its own keys: another's key is new to it, and tells it nothing."""
        if key is None:
            return job_id
        if not 0 < len(key) <= 255:
            raise BadRequest(
                "Idempotency-Key must be 1 to 255 characters", code="bad_idempotency_key"
            )
        fingerprint = hashlib.sha256(request).hexdigest()
        keys = [self._redis_key(key, caller)]
        args: list[str | int] = [
            f"{job_id} {fingerprint}",
            self._ttl,
            self._keys.job(""),
            STALE_AFTER,
        ]
        standing: bytes = await self._claim(keys=keys, args=args)
        pending, claim = standing.startswith(b"?"), standing.decode().lstrip("?")
        claimed_job, _, claimed_fingerprint = claim.partition(" ")
        if claimed_fingerprint != fingerprint:
            raise Conflict(
                "this Idempotency-Key was already used for a different request",
                code="idempotency_key_reused",
            )
        if pending:
            raise Conflict(
                "a request with this Idempotency-Key is still being accepted; retry shortly",
                code="idempotency_key_in_use",
            )
        return claimed_job

    async def release(self, key: str | None, caller: Principal, job_id: str) -> None:
        """Drop the claim of `job_id` unless the job was created: its request failed before
        (a limit's 429, Valkey away, any error), and the client's retry with the same key is
        then a new request, rather than one standing for a job that never existed."""
        if key is not None:
            keys = [self._redis_key(key, caller), self._keys.job(job_id)]
            await self._release(keys=keys, args=[job_id])

    def _redis_key(self, key: str, caller: Principal) -> str:
        scoped = f"{caller.name}\x00{key}".encode()
        return self._keys.idempotency(hashlib.sha256(scoped).hexdigest())
