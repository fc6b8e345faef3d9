"""How full Valkey is, as new work sees it.

Valkey runs with `noeviction`: at `maxmemory` every write fails. A worker needs writes to end
a job (its events, a retry, its heartbeat), and a job's end is what frees the upload it holds,
so a Valkey filled by new work would never empty again. New work is therefore refused before
the limit: once used memory passes `maxmemory` less a reserve (a fraction of it), which is
left for the writes of the jobs already accepted. Without a `maxmemory` there is no limit.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import structlog
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from rag_async.domain.errors import StoreFull

log = structlog.get_logger(__name__)

# How long a reading is reused. Within it, this process adds up the bytes it lets in, so a
# burst of uploads re-reads as soon as it could pass the line; other API processes' writes
# within the second fall in the reserve.
_FRESH_FOR = 1.0


@dataclass(frozen=True, slots=True)
class MemoryUse:
    used: int  # bytes
    maxmemory: int  # bytes; 0: no limit


async def memory_use(redis: Redis) -> MemoryUse:
    """Valkey's used memory and its limit, from INFO (which managed services allow where they
    refuse CONFIG). A server that refuses INFO too is taken to have no limit."""
    try:
        info = await redis.info("memory")
    except ResponseError as error:
        log.warning("cannot read Valkey's memory use: no reserve is kept", error=str(error))
        return MemoryUse(0, 0)
    return MemoryUse(int(info.get("used_memory", 0)), int(info.get("maxmemory", 0)))


class MemoryGauge:
    """Refuses new work once Valkey's used memory would pass `maxmemory` less `reserve` (a
    fraction of it). A reading serves for a second, so most requests cost no round trip."""

    def __init__(self, redis: Redis, reserve: float) -> None:
        self._redis = redis
        self._reserve = reserve
        self._reading = MemoryUse(0, 0)
        self._read_at = -_FRESH_FOR  # monotonic; nothing read yet
        self._added = 0  # bytes let in since the reading

    async def check(self, incoming: int = 0) -> None:
        """Raise `StoreFull` (507) if `incoming` more bytes would pass the line; else count
        them as let in."""
        stale = time.monotonic() - self._read_at >= _FRESH_FOR
        if stale or self._over(incoming):
            self._reading = await memory_use(self._redis)
            self._read_at, self._added = time.monotonic(), 0
        if self._over(incoming):
            used, limit = self._reading.used, self._reading.maxmemory
            raise StoreFull(
                f"the job store (Valkey) is nearly full ({used / 2**20:.1f} of "
                f"{limit / 2**20:.1f} MiB used), so new work is not accepted while the jobs "
                "already accepted finish and free memory; try again shortly",
                retry_after=10,
            )
        self._added += incoming

    def _over(self, incoming: int) -> bool:
        limit = self._reading.maxmemory
        line = limit - int(limit * self._reserve)
        return limit > 0 and self._reading.used + self._added + incoming > line
