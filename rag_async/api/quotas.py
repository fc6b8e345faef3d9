"""Per-key quotas: who is held to them, and the request rate (a token bucket in Valkey).

The other per-key limits live with what they count: unfinished jobs in jobstore.py (a set per
owner, kept by create, end and cancel in the same Redis step), stored bytes in registry.py (a
tally per owner, kept by put and remove). Open event streams are counted here, per process.

Every key is held to them, admins' too: a script holding an admin key can run away like any
other. The local user of an instance without keys is not. Such an instance has one user and
listens on loopback (or, with RAG_ALLOW_ANONYMOUS, sits behind a proxy that authenticates and
should limit); limits that share a service fairly between keys would there only throttle its
owner's own bulk ingestion or page. The global limits (queue depth, body and header sizes,
connections) still hold for it.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable

from redis.asyncio import Redis

from rag_async.domain.errors import LimitReached
from rag_async.domain.identity import LOCAL, Principal
from rag_async.store.keys import Keys


def held_to_quotas(principal: Principal) -> bool:
    """Whether the per-key limits apply to this caller (see the module's docstring)."""
    return principal != LOCAL


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


class StreamSlots:
    """The event streams each owner holds open, counted in this API process: a stream lives
    and dies with its process, so no count can outlive it, as one kept in Valkey could after a
    crash. With several API processes, a key may hold the limit's worth in each."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._open: Counter[str] = Counter()

    def take(self, owner: str, *, limited: bool = True) -> Callable[[], None]:
        """Count one more stream of `owner`, or raise `LimitReached` (429 `too_many_streams`)
        if it is `limited` and has as many as a key may. Returns what gives the slot back;
        calling it more than once gives back one slot."""
        if limited and self._limit and self._open[owner] >= self._limit:
            raise LimitReached(
                f"this key has {self._limit} event streams open, as many as a key may; close "
                "one, or poll GET /jobs/{id}",
                code="too_many_streams",
                retry_after=5,
            )
        self._open[owner] += 1
        given_back = False

        def give_back() -> None:
            nonlocal given_back
            if not given_back:
                given_back = True
                self._open[owner] -= 1
                if not self._open[owner]:
                    del self._open[owner]

        return give_back
