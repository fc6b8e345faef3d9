"""Fair share: each key's jobs wait in lists of their own, and a scheduler hands them to arq's
queue in turn as the workers have room, so that a key with a thousand questions waiting does not
hold another key's first one behind them.

Per lane (store/queue.py), in Valkey:
- each key's waiting list per priority, a sorted set of job ids in the order they came;
- per priority, a ring of the keys with jobs waiting, scored by their pass (stride scheduling:
  the key with the lowest pass goes next, and its pass then grows by 1 / its weight, so a key
  of weight 2 is served twice as often as one of weight 1 while both wait). A key that starts
  waiting joins at the pass of the latest job handed on, so a burst does not buy it credit;
- one hash of every waiting job: its key, priority, weight, when it came and arq's payload for
  it; and the scheduler's state (each priority's pass, the background's credit).

A new job goes straight to arq's queue when no job waits and the workers have room (a service
that keeps up never fills the lists: `fair_put`). Else it waits, and the scheduling step
(`fair_schedule`, one Lua script) runs when a job is created, when a job ends and at each
worker heartbeat. It counts the room on arq's queue (the slots that the live
workers' heartbeats report, less the jobs due there, running or about to be) and fills it. A
per-key running cap (`max_running_jobs_per_key`) skips a key whose jobs already hold that many
slots; its jobs wait for one of them to end.

Interactive questions (a client is waiting for them) go ahead of background work (background
`/v1` responses, ingestion): a background job is handed on once the interactive ones handed on
since the last have earned it a credit (`background_share` each), so it waits but never starves.

The Lua here is appended to queue.py's (it calls `arq_taken` and `arq_enqueue`), and the
scripts that take part in a job's life compose it: creating a job (jobs.py), cancelling one
that waits (events.py through queue.py), scheduling and a job's place in line (queue.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Priority = Literal["interactive", "background"]
PRIORITIES: tuple[Priority, ...] = ("interactive", "background")

# How many keys of a ring one step looks at, for a key below its running cap or for a job's
# place in line: a bound on a step's work however many keys wait.
SCAN = 1000
# Jobs one scheduling step hands on at most: a step stays short, and the next job end or
# heartbeat takes the rest.
BATCH = 200

# `f` is the scheduler's context for one lane (`fair_of`): its keys (KEYS) and settings (ARGV)
# as `FairContext` lists them. A waiting job's entry is [key, priority (0 or 1), weight, came
# (ms), arq's payload].
LUA = """
local function fair_of(k, a)
  return {jobs = k[1], rings = {k[2], k[3]}, state = k[4], queue = k[5], workers = k[6],
    wait = a[1], running = a[2], arq_job = a[3], arq_result = a[4], lane = a[5],
    cap = tonumber(a[6]), share = tonumber(a[7]), dead_after = tonumber(a[8]),
    expires = tonumber(a[9]), batch = tonumber(a[10]), scan = tonumber(a[11])}
end

local function fair_list(f, class, key)
  return f.wait .. class .. ':' .. key
end

local function fair_entry(f, id)
  local raw = redis.call('HGET', f.jobs, id)
  if not raw then return nil end
  return cjson.decode(raw)
end

local function fair_now_ms()
  local t = redis.call('TIME')
  return t[1] * 1000 + math.floor(t[2] / 1000), tonumber(t[1])
end

-- Put a job in its key's waiting list (once: a job already waiting is left as it is).
local function fair_add(f, id, key, class, weight, payload)
  local now = fair_now_ms()
  if redis.call('HSETNX', f.jobs, id, cjson.encode({key, class, weight, now, payload})) == 0 then
    return false
  end
  redis.call('ZADD', fair_list(f, class, key), redis.call('HINCRBY', f.state, 'seq', 1), id)
  local ring = f.rings[class + 1]
  if not redis.call('ZSCORE', ring, key) then
    redis.call('ZADD', ring, redis.call('HGET', f.state, 'pass' .. class) or 0, key)
  end
  return true
end

-- Take a waiting job out of its list (a cancel). False if it was not waiting.
local function fair_remove(f, id)
  local e = fair_entry(f, id)
  if not e then return false end
  local list = fair_list(f, e[2], e[1])
  redis.call('ZREM', list, id)
  redis.call('HDEL', f.jobs, id)
  if redis.call('ZCARD', list) == 0 then redis.call('ZREM', f.rings[e[2] + 1], e[1]) end
  return true
end

-- The slots of the lane that the live workers report in their heartbeats (store/workers.py).
local function fair_capacity(f, now_s)
  local total = 0
  for _, raw in ipairs(redis.call('HVALS', f.workers)) do
    local ok, beat = pcall(cjson.decode, raw)
    if ok and type(beat) == 'table' and type(beat.slots) == 'table'
      and now_s - (tonumber(beat.last_seen) or 0) < f.dead_after then
      total = total + (tonumber(beat.slots[f.lane]) or 0)
    end
  end
  return total
end

-- How many of the key's jobs hold a slot: those handed on that are still on arq's queue
-- (running, or retrying); the ones gone have ended, and leave the set here.
local function fair_running(f, key)
  local set = f.running .. key
  local n = 0
  for _, id in ipairs(redis.call('ZRANGE', set, 0, -1)) do
    if redis.call('ZSCORE', f.queue, id) then n = n + 1 else redis.call('ZREM', set, id) end
  end
  return n
end

-- The key of a priority to serve next, and its pass: the lowest pass below its running cap
-- (without a cap, the lowest pass: one read).
local function fair_pick(f, class)
  local last = 0
  if f.cap > 0 then last = f.scan - 1 end
  local ring = redis.call('ZRANGE', f.rings[class + 1], 0, last, 'WITHSCORES')
  for i = 1, #ring, 2 do
    if f.cap <= 0 or fair_running(f, ring[i]) < f.cap then
      return ring[i], tonumber(ring[i + 1])
    end
  end
  return nil
end

-- Put a job on arq's queue, as held by its key (for the running cap); false if arq has it.
local function fair_hand_on(f, id, key, payload, now)
  local q = {f.arq_job .. id, f.arq_result .. id, f.queue}
  if arq_taken(q) then return false end
  arq_enqueue(q, {id, payload, now, f.expires})
  if f.cap > 0 then
    redis.call('ZADD', f.running .. key, now, id)
    redis.call('PEXPIRE', f.running .. key, f.expires)
  end
  return true
end

-- Hand waiting jobs to arq's queue while the workers have room. Returns how many.
local function fair_schedule(f)
  if redis.call('EXISTS', f.rings[1], f.rings[2]) == 0 then return 0 end
  local now, now_s = fair_now_ms()
  local room = fair_capacity(f, now_s) - redis.call('ZCOUNT', f.queue, '-inf', now)
  local sent = 0
  while room > 0 and sent < f.batch do
    local credit = tonumber(redis.call('HGET', f.state, 'credit') or '0')
    local order = {0, 1}
    if credit >= 1 - 1e-9 then order = {1, 0} end
    local class, key, pass
    for _, c in ipairs(order) do
      key, pass = fair_pick(f, c)
      if key then
        class = c
        break
      end
    end
    if not key then break end
    local ring, list = f.rings[class + 1], fair_list(f, class, key)
    local id = redis.call('ZRANGE', list, 0, 0)[1]
    local e = id and fair_entry(f, id)
    if id then
      redis.call('ZREM', list, id)
      redis.call('HDEL', f.jobs, id)
    end
    if redis.call('ZCARD', list) == 0 then
      redis.call('ZREM', ring, key)
    elseif e then
      redis.call('ZADD', ring, pass + 1 / e[3], key)
    end
    if e then
      redis.call('HSET', f.state, 'pass' .. class, pass)
      if class == 1 then
        redis.call('HSET', f.state, 'credit', math.max(0, credit - 1))
      elseif redis.call('ZCARD', f.rings[2]) > 0 then
        -- At most one turn owed: background jobs held by their keys' running cap meanwhile
        -- do not come back as a burst.
        redis.call('HSET', f.state, 'credit', math.min(1, credit + f.share))
      else
        redis.call('HSET', f.state, 'credit', 0)
      end
      if fair_hand_on(f, id, key, e[5], now) then
        room = room - 1
        sent = sent + 1
      end
    end
  end
  return sent
end

-- Put a new job in line: straight on arq's queue when no job waits and the workers have room
-- (every job, on a service that keeps up), else in its key's list, whence the scheduler hands
-- it on in turn. False if it waits already, or arq has it.
local function fair_put(f, id, key, class, weight, payload)
  if redis.call('EXISTS', f.rings[1], f.rings[2]) == 0 then
    local now, now_s = fair_now_ms()
    if fair_capacity(f, now_s) > redis.call('ZCOUNT', f.queue, '-inf', now)
      and (f.cap <= 0 or fair_running(f, key) < f.cap) then
      return fair_hand_on(f, id, key, payload, now)
    end
  end
  if not fair_add(f, id, key, class, weight, payload) then return false end
  fair_schedule(f)
  return true
end

-- How many of a priority's waiting jobs go before the job `e` (which waits `rank` places into
-- its key's list): for every key, those whose turn (pass + n / weight) comes before its own.
-- Returns that count and the priority's waiting jobs in all.
local function fair_ahead_in_class(f, e, rank)
  local ring = redis.call('ZRANGE', f.rings[e[2] + 1], 0, f.scan - 1, 'WITHSCORES')
  local mine = tonumber(redis.call('ZSCORE', f.rings[e[2] + 1], e[1]) or 0)
  local turn = mine + rank / e[3]
  local ahead, total = 0, 0
  for i = 1, #ring, 2 do
    local key, pass = ring[i], tonumber(ring[i + 1])
    local list = fair_list(f, e[2], key)
    local n = redis.call('ZCARD', list)
    total = total + n
    if key == e[1] then
      ahead = ahead + rank
    elseif n > 0 then
      local head = fair_entry(f, redis.call('ZRANGE', list, 0, 0)[1])
      local turns = (turn - pass) * (head and head[3] or 1)
      local k
      -- Of two keys at the same pass the ring serves the one first in name order.
      if key < e[1] then k = math.floor(turns + 1e-9) + 1 else k = math.ceil(turns - 1e-9) end
      ahead = ahead + math.min(n, math.max(0, k))
    end
  end
  return ahead, total
end

-- The jobs ahead of a waiting job: those due on arq's queue, then the waiting ones the
-- scheduler hands on first (its own priority's by turn, the other's by the credit rule).
-- False if the job is not waiting.
local function fair_position(f, id)
  local e = fair_entry(f, id)
  if not e then return false end
  local rank = redis.call('ZRANK', fair_list(f, e[2], e[1]), id) or 0
  local ahead, total = fair_ahead_in_class(f, e, rank)
  local others = math.max(0, redis.call('HLEN', f.jobs) - total)
  local credit = tonumber(redis.call('HGET', f.state, 'credit') or '0')
  local across
  if e[2] == 0 then
    across = math.floor(ahead * f.share + credit)
  else
    across = math.ceil((ahead + 1 - credit) / f.share)
  end
  local now = fair_now_ms()
  return redis.call('ZCOUNT', f.queue, '-inf', now) + ahead + math.min(others, math.max(0, across))
end
"""


@dataclass(frozen=True, slots=True)
class FairSettings:
    """The scheduler's settings, as config.py gives them."""

    running_cap: int = 0  # jobs of one key running at once, per lane (0: no cap)
    background_share: float = 0.25  # background jobs handed on per interactive one, at least
    dead_after: float = 15.0  # a worker silent this long has no slots


@dataclass(frozen=True, slots=True)
class FairContext:
    """What a script passes for `fair_of`: `keys` among its KEYS, `args` among its ARGV."""

    keys: list[str]
    args: list[str | int | float]
