"""The job ends whose bookkeeping is not done yet: the one key that makes a job's end
resumable.

A job's end is its last event, then its bookkeeping (worker/ends.py `ended`: the TTL, the
upload, the owner's unfinished jobs, the outcome counted, the dead letter, the failure hook,
the webhook). A process killed in between would leave the bookkeeping undone for good, so the
last event's own Lua step (events.py) adds the end here, "<job id>:<event id>" scored by when
it ended, and `ended` removes it last. Whoever finds an end still here finishes it: a worker
that arq hands the ended job again, or any worker's heartbeat once the end is older than a
grace (a queued job cancelled by an API process that died, which no worker will run again).

This module is the one writer of the key: its Lua (`LUA`) runs inside the event log's scripts,
and inside the job store's settle when that is an end's last step.
"""

from __future__ import annotations

from redis.asyncio import Redis

from rag_async.store.keys import Keys

# Scored by Valkey's clock (ms), as `stale` reads it, so that processes' clocks need not agree.
LUA = """
local function ending_add(key, job_id, event_id)
  local t = redis.call('TIME')
  redis.call('ZADD', key, t[1] * 1000 + math.floor(t[2] / 1000), job_id .. ':' .. event_id)
end

local function ending_remove(key, job_id, event_id)
  redis.call('ZREM', key, job_id .. ':' .. event_id)
end
"""

# KEYS: the ending set. ARGV: the grace (ms), how many. The oldest ends older than the grace.
_STALE = """
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[1]), 'LIMIT', 0, ARGV[2])
"""

# KEYS: the ending set. ARGV: job id, event id. The end scored now, if it is still there: one
# that could not be settled waits behind the others rather than holding up every batch.
_POSTPONE = (
    LUA
    + """
if redis.call('ZSCORE', KEYS[1], ARGV[1] .. ':' .. ARGV[2]) then
  ending_add(KEYS[1], ARGV[1], ARGV[2])
end
"""
)


class EndingJobs:
    """The ends not settled yet, each as (job id, the id of its last event)."""

    def __init__(self, redis: Redis, keys: Keys) -> None:
        self._redis = redis
        self._key = keys.ending
        self._stale = redis.register_script(_STALE)
        self._postpone = redis.register_script(_POSTPONE)

    async def stale(self, grace: float, limit: int) -> list[tuple[str, int]]:
        """The oldest `limit` ends that have waited longer than `grace` seconds."""
        members = await self._stale(keys=[self._key], args=[int(grace * 1000), limit])
        return [_parsed(member) for member in members]

    async def all(self) -> list[tuple[str, int]]:
        """Every end not settled yet, oldest first."""
        return [_parsed(member) for member in await self._redis.zrange(self._key, 0, -1)]

    async def settled(self, job_id: str, event_id: int) -> None:
        """The end's bookkeeping is done (or moot: the job ended again, or expired)."""
        await self._redis.zrem(self._key, _member(job_id, event_id))

    async def postpone(self, job_id: str, event_id: int) -> None:
        """Try this end again after the others (settling it failed for now)."""
        await self._postpone(keys=[self._key], args=[job_id, event_id])


def _member(job_id: str, event_id: int) -> str:
    return f"{job_id}:{event_id}"


def _parsed(member: bytes) -> tuple[str, int]:
    job_id, _, event_id = member.decode().rpartition(":")
    return job_id, int(event_id)
