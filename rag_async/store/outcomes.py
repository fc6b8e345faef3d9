"""How jobs ended: a counter per kind and outcome in Valkey, incremented once per end by the
lifecycle (worker/ends.py) of every process, read by /metrics. A job's end is counted by the
job store's settling step, with this module's Lua (`LUA`); retries and requeues here."""

from __future__ import annotations

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

from rag_async.store.keys import Keys
from rag_async.store.queue import JOB_KINDS

log = structlog.get_logger(__name__)

# Counting an end, in Lua, so that the job store counts it in the one step that settles the
# end (jobs.py): a settle run again after a crash finds it settled and counts nothing.
LUA = """
local function outcomes_count(key, kind, outcome)
  redis.call('HINCRBY', key, kind .. ':' .. outcome, 1)
end
"""

OUTCOMES = ("complete", "failed", "cancelled", "retried", "dead_lettered", "requeued")


class JobOutcomes:
    """How jobs ended, counted in Valkey by every worker's lifecycle, so one scrape of any
    API process gives the totals of all workers (a worker's own counter would reset with it
    and be lost with it)."""

    def __init__(self, redis: Redis, keys: Keys) -> None:
        self._redis = redis
        self._key = keys.job_outcomes

    async def count(self, kind: str, outcome: str) -> None:
        try:
            await self._redis.hincrby(self._key, f"{kind}:{outcome}", 1)  # type: ignore[misc]
        except RedisError as error:  # a lost count is not worth failing the job's end
            log.warning("could not count the job's outcome", outcome=outcome, error=str(error))

    async def counts(self) -> dict[tuple[str, str], int]:
        """The counts of every kind and outcome, 0 for those not seen yet: a series that
        exists from the start lets `rate()` and `increase()` see its first job."""
        raw: dict[bytes, bytes] = await self._redis.hgetall(self._key)  # type: ignore[misc]
        counts: dict[tuple[str, str], int] = {
            (kind, outcome): 0 for kind in JOB_KINDS for outcome in OUTCOMES
        }
        for name, value in raw.items():
            kind, _, outcome = name.decode().partition(":")
            counts[kind, outcome] = int(value)
        return counts
