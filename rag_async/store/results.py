"""The bytes of each key's results, and the bound on them.

A job's result is its record and its event log, kept in Valkey for `result_ttl` after it
ends. Left alone, one key asking questions whose results are large (long passages, long
answers) could fill Valkey for every other key within its rate and job limits. So the bytes
of each owner's results are summed (a record's when the job is created, its events' when it
ends: an unfinished job's are bounded by the caps on its passages and answer, and by the
owner's unfinished jobs), and new jobs of an owner at its bound are refused until old
results expire.

Per owner, two keys: an index of its jobs by when their results expire (a job written to
again, or settled, moves its expiry on), and a hash of each job's bytes with their sum under
`total`. An expired result leaves the sum when the owner next creates a job (`results_prune`),
so a sum never counts what Valkey no longer holds for long. Both keys live as long as the
latest result they count: an owner who stops asking leaves nothing behind.

This module is the one writer of these keys. Its Lua functions (`LUA`) run inside the job
store's scripts (jobs.py: a job's creation counts its record and checks the bound, its end
counts its events and moves its expiry) and the event log's (events.py: each event adds its
bytes to its record's `result_pending`), so the sum changes in the same step as what it
counts.
"""

from __future__ import annotations

import math
import time

from redis.asyncio import Redis

from rag_async.store.keys import Keys

# `r` is an owner's keys, in `ResultBytes.script_keys` order: the index by expiry, the sizes.
# `now` is in seconds (Valkey's TIME), as the index's scores are. `prefixes` are the two keys'
# names without the owner, for scripts that read the owner from a job's record.
LUA = """
local function results_of(prefixes, owner)
  return {prefixes[1] .. owner, prefixes[2] .. owner}
end

local function results_add(r, id, bytes, ttl, now)
  redis.call('ZADD', r[1], now + ttl, id)
  if bytes > 0 then
    redis.call('HINCRBY', r[2], id, bytes)
    redis.call('HINCRBY', r[2], 'total', bytes)
  end
  -- The keys live as long as the latest result they count, never shorter.
  for _, key in ipairs(r) do
    if redis.call('TTL', key) < ttl then redis.call('EXPIRE', key, ttl) end
  end
end

-- A job's bytes written since its result was last counted wait in its record's field
-- `result_pending` (one command an event); its end moves them into the owner's sum.
local function results_pending(job, bytes)
  redis.call('HINCRBY', job, 'result_pending', bytes)
end

local function results_settle(r, job, id, ttl, now)
  local bytes = tonumber(redis.call('HGET', job, 'result_pending') or '0')
  if bytes > 0 then redis.call('HSET', job, 'result_pending', 0) end
  results_add(r, id, bytes, ttl, now)
end

local function results_prune(r, now)
  for _ = 1, 10 do
    local expired = redis.call('ZRANGEBYSCORE', r[1], '-inf', now, 'LIMIT', 0, 200)
    if #expired == 0 then return end
    for _, id in ipairs(expired) do
      local size = redis.call('HGET', r[2], id)
      if size then
        redis.call('HINCRBY', r[2], 'total', -tonumber(size))
        redis.call('HDEL', r[2], id)
      end
      redis.call('ZREM', r[1], id)
    end
  end
end

local function results_over(r, limit)
  return limit > 0 and tonumber(redis.call('HGET', r[2], 'total') or '0') >= limit
end
"""

_PRUNE = (
    LUA
    + """
results_prune({KEYS[1], KEYS[2]}, tonumber(redis.call('TIME')[1]))
return tonumber(redis.call('HGET', KEYS[2], 'total') or '0')
"""
)


class ResultBytes:
    """Each owner's result bytes: written by the job store's and the event log's scripts,
    read here (how many, and when the oldest frees its share)."""

    def __init__(self, redis: Redis, keys: Keys) -> None:
        self._redis = redis
        self._keys = keys
        self._prune = redis.register_script(_PRUNE)

    def script_keys(self, owner: str) -> list[str]:
        """The keys `LUA`'s functions take as `r`, for a script that declares them."""
        return [self._keys.result_expiries(owner), self._keys.result_sizes(owner)]

    def prefixes(self) -> list[str]:
        """The keys' names without an owner, for a script that reads the owner itself."""
        return self.script_keys("")

    async def stored(self, owner: str) -> int:
        """The bytes of the owner's results that have not expired."""
        return int(await self._prune(keys=self.script_keys(owner)))

    async def seconds_until_freed(self, owner: str) -> int:
        """How long until the owner's oldest result expires (and frees its bytes)."""
        oldest = await self._redis.zrange(self.script_keys(owner)[0], 0, 0, withscores=True)
        if not oldest:
            return 1
        return max(1, math.ceil(float(oldest[0][1]) - time.time()))
