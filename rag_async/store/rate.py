"""The request rate of each key: a token bucket in Valkey, shared by every API process."""

from __future__ import annotations

import math

from redis.asyncio import Redis

from rag_async.domain.errors import LimitReached
from rag_async.domain.identity import Principal, held_to_quotas
from rag_async.store.keys import Keys

# KEYS: the owner's bucket. ARGV: tokens a second, the bucket's size. One round trip, atomic,
# and on Valkey's clock, so every API process shares one bucket per key whatever their clocks.
# Returns 0 when a token was taken, else the milliseconds until there will be one.
_TAKE = """
local rate, size = tonumber(ARGV[1]), tonumber(ARGV[2])
local time = redis.call('TIME')
local now = tonumber(time[1]) + tonumber(time[2]) / 1000000
local bucket = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(bucket[1]) or size
local at = tonumber(bucket[2]) or now
tokens = math.min(size, tokens + math.max(0, now - at) * rate)
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
else
  wait = math.ceil((1 - tokens) / rate * 1000)
end
redis.call('HSET', KEYS[1], 'tokens', string.format('%.6f', tokens),
  'at', string.format('%.6f', now))
-- A bucket that has refilled is as good as none: an idle key's expires.
redis.call('PEXPIRE', KEYS[1], math.ceil(size / rate * 1000) + 1000)
return wait
"""


class RateLimiter:
    """Requests a minute per key: a token bucket of `burst` tokens refilled at `per_minute`."""

    def __init__(self, redis: Redis, keys: Keys, per_minute: int, burst: int | None) -> None:
        self._keys = keys
        self._per_second = per_minute / 60
        self._burst = burst or per_minute
        self._take = redis.register_script(_TAKE)

    async def admit(self, principal: Principal) -> None:
        """Take one of the caller's tokens, or raise `LimitReached` (429 `rate_limited`) with
        the seconds until the next one."""
        if not self._per_second or not held_to_quotas(principal):
            return
        wait_ms = int(
            await self._take(
                keys=[self._keys.rate(principal.name)], args=[self._per_second, self._burst]
            )
        )
        if wait_ms:
            seconds = math.ceil(wait_ms / 1000)
            raise LimitReached(
                f"this key may make {round(self._per_second * 60)} requests a minute; "
                f"retry in {seconds} s",
                code="rate_limited",
                retry_after=seconds,
            )
