"""Which queue each kind of job waits in, which worker function runs it, and the queue itself:
how deep it is, where a job stands in it, and putting a job on it.

Questions and documents wait in separate queues, each served by its own arq worker inside every
worker process (workers/settings.py). A burst of uploads does not hold up a question queued
behind it, each queue has its own concurrency, and arq's in-progress TTL, which follows the
longest job timeout of a worker, is a question's own rather than a long ingestion's.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import orjson
from arq.connections import ArqRedis
from arq.constants import expires_extra_ms
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from rag_async.store.fair_share import BATCH, PRIORITIES, SCAN, FairContext, FairSettings, Priority
from rag_async.store.fair_share import LUA as FAIR_LUA
from rag_async.store.keys import Keys

Lane = Literal["questions", "documents"]
LANES: tuple[Lane, ...] = ("questions", "documents")

# The keys `busiest` names by default (/stats, /metrics): a bound on a metric's labels whatever
# the number of keys.
BUSIEST_KEYS = 5

# A kind of job is one name everywhere: the job record's `kind`, the arq function that runs
# it, its lifecycle spec (worker/jobs/) and its policy (worker/kinds.py).
Kind = Literal["answer", "search", "ingest", "delete"]


@dataclass(frozen=True, slots=True)
class JobKind:
    lane: Lane  # the queue its jobs wait in


JOB_KINDS: dict[Kind, JobKind] = {
    "answer": JobKind("questions"),
    # Retrieval alone (POST /search): a client waits for it, as for an answer.
    "search": JobKind("questions"),
    "ingest": JobKind("documents"),
    "delete": JobKind("documents"),
}

# The arq function names of the kinds before they were given one name: jobs an earlier
# version queued still find their function (worker/process.py registers both). A kind born
# after that has its one name only.
EARLIER_NAMES: dict[Kind, str] = {
    "answer": "answer_question",
    "ingest": "ingest_document",
    "delete": "delete_document",
}


# Putting a job on arq's queue as arq's `ArqRedis.enqueue_job` does, in Lua so that the
# scheduler can (fair_share.py, whose Lua follows), in the step that creates a job's record
# (jobs.py) or ends another's. `q` is arq's copy of the job, its result, the queue; `a` is the
# job id, arq's payload, its score (ms) and the payload's life (ms).
_ARQ_LUA = """
-- A job arq has (or had, its result kept) under this id is not enqueued again.
local function arq_taken(q)
  return redis.call('EXISTS', q[1], q[2]) > 0
end

-- Each queue put on is announced once per step on its channel (`Keys.nudge`: the queue's own
-- name), so that its workers start the job now rather than at their next poll (store/nudge.py).
-- A local of the script's body: a new table at each call.
local arq_nudged = {}

local function arq_enqueue(q, a)
  redis.call('PSETEX', q[1], a[4], a[2])
  redis.call('ZADD', q[3], a[3], a[1])
  if not arq_nudged[q[3]] then
    arq_nudged[q[3]] = true
    redis.call('PUBLISH', q[3], '')
  end
end
"""
LUA = _ARQ_LUA + FAIR_LUA

# Taking a job that no worker holds out of its waiting list or off arq's queue (`t` is
# `take_off_keys`), in Lua so that the event log can do it in the same step as the job's
# `cancelled` event (events.py). A worker that read arq's queue just before and marks the job in
# progress after finds arq's copy gone, and arq drops the run without calling the job's
# function. False if the job is not waiting (running, or gone).
TAKE_OFF_LUA = (
    LUA
    + """
local function arq_take_off(t, id)
  if fair_remove({jobs = t[4], rings = {t[5], t[6]}, wait = t[7]}, id) then return true end
  if redis.call('EXISTS', t[2]) == 1 then return false end
  if redis.call('ZREM', t[1], id) == 0 then return false end
  redis.call('DEL', t[3])
  return true
end
"""
)

# KEYS: the scheduler's (`FairContext.keys`), arq's job and result. ARGV: the scheduler's
# (`FairContext.args`), then the waiting entry (`Waiting.args`). A job that waits, or that arq
# has, is not put again. Returns 1 if put.
_PUT = (
    LUA
    + """
local f = fair_of(KEYS, ARGV)
if arq_taken({KEYS[7], KEYS[8]}) then return 0 end
local a = {unpack(ARGV, 12)}
if fair_put(f, a[1], a[2], tonumber(a[3]), tonumber(a[4]), a[5]) then return 1 end
return 0
"""
)

# KEYS, ARGV: the scheduler's (`FairContext`) of one lane after another. Returns how many jobs
# it handed on.
_SCHEDULE = (
    LUA
    + """
local handed = 0
for l = 1, #KEYS / 6 do
  local f = fair_of({unpack(KEYS, 6 * l - 5, 6 * l)}, {unpack(ARGV, 11 * l - 10, 11 * l)})
  handed = handed + fair_schedule(f)
end
return handed
"""
)

# KEYS, ARGV: the scheduler's, then the job id. 1 + the jobs ahead of a waiting job (fair
# share's order), or of one on arq's queue (the unfinished jobs ahead of it there); 0 if it
# is in neither.
_POSITION = (
    LUA
    + """
local f = fair_of(KEYS, ARGV)
local ahead = fair_position(f, ARGV[12])
if ahead then return ahead + 1 end
local rank = redis.call('ZRANK', f.queue, ARGV[12])
if rank then return rank + 1 end
return 0
"""
)


def fair_context(keys: Keys, lane: Lane, fair: FairSettings) -> FairContext:
    """The scheduler's keys and settings for one lane, as `fair_of` (fair_share.py) takes them."""
    return FairContext(
        keys=[
            keys.waiting_jobs(lane),
            *(keys.waiting_ring(lane, priority) for priority in range(len(PRIORITIES))),
            keys.fair_state(lane),
            keys.queue(lane),
            keys.workers,
        ],
        args=[
            keys.waiting_list_prefix(lane),
            keys.running_prefix(lane),
            keys.arq_job(""),
            keys.arq_result(""),
            lane,
            fair.running_cap,
            fair.background_share,
            fair.dead_after,
            expires_extra_ms,
            BATCH,
            SCAN,
        ],
    )


@dataclass(frozen=True, slots=True)
class Waiting:
    """A job to put in line, as `fair_put` takes it."""

    job_id: str
    owner: str  # the key whose share it is ("" the local user of an instance without keys)
    priority: Priority
    weight: float  # the key's weight (1: an equal share)
    payload: bytes  # what arq will run: its function and the job id as the one argument

    @property
    def args(self) -> list[str | int | float | bytes]:
        return [self.job_id, self.owner, PRIORITIES.index(self.priority), self.weight, self.payload]


def waiting(
    job_id: str, kind: Kind, owner: str, priority: Priority = "interactive", weight: float = 1.0
) -> Waiting:
    """The job as arq itself would enqueue it now (its function and id as the one argument,
    serialized with the workers' serializer, orjson), to wait for its turn. A kind of the
    documents lane is background work whatever is asked."""
    if JOB_KINDS[kind].lane == "documents":
        priority = "background"
    now_ms = round(time.time() * 1000)
    payload: dict[str, object] = {"t": None, "f": kind, "a": [job_id], "k": {}, "et": now_ms}
    return Waiting(job_id, owner, priority, weight, orjson.dumps(payload))


def take_off_keys(keys: Keys, job_id: str, kind: Kind) -> list[str]:
    """What `TAKE_OFF_LUA` takes as `t`: the job's queue, its in-progress key, arq's copy, then
    its lane's waiting jobs, rings and list prefix (fair_share.py's `fair_remove`)."""
    lane = JOB_KINDS[kind].lane
    rings = [keys.waiting_ring(lane, priority) for priority in range(len(PRIORITIES))]
    return [
        keys.queue(lane),
        keys.arq_in_progress(job_id),
        keys.arq_job(job_id),
        keys.waiting_jobs(lane),
        *rings,
        keys.waiting_list_prefix(lane),
    ]


class JobQueue:
    """The arq queues, as the API and the lifecycle use them (the workers read them through
    arq): the one module that knows arq's keys."""

    def __init__(self, redis: Redis, keys: Keys, fair: FairSettings | None = None) -> None:
        # The same pool, with arq's enqueue and the workers' (JSON) serializer.
        self._redis = ArqRedis(
            connection_pool=redis.connection_pool,
            job_serializer=orjson.dumps,
            job_deserializer=orjson.loads,
        )
        self._keys = keys
        self._depth = self._redis.register_script(_DEPTH)
        self._put = self._redis.register_script(_PUT)
        self._schedule = self._redis.register_script(_SCHEDULE)
        self._position = self._redis.register_script(_POSITION)
        self._busiest = self._redis.register_script(_BUSIEST)
        self.fair = fair or FairSettings()

    def name(self, kind: Kind) -> str:
        return self._keys.queue(JOB_KINDS[kind].lane)

    def context(self, lane: Lane) -> FairContext:
        return fair_context(self._keys, lane, self.fair)

    async def position(self, job_id: str, kind: Kind) -> int | None:
        """1 + the jobs ahead of it (those due on arq's queue, running or not, then the waiting
        ones the scheduler hands on first), or None if it is not waiting."""
        context = self.context(JOB_KINDS[kind].lane)
        args = [*context.args, job_id]
        position = int(await self._position(keys=context.keys, args=args))
        return position or None

    async def put(
        self, job_id: str, kind: Kind, owner: str | None, priority: Priority = "interactive"
    ) -> None:
        """Put a recorded job in its owner's waiting list again (a dead letter requeued), under
        its own id, so a repeat puts nothing. A new job waits from the step that records it
        (jobs.py)."""
        context = self.context(JOB_KINDS[kind].lane)
        entry = waiting(job_id, kind, owner or "", priority)
        keys = [*context.keys, self._keys.arq_job(job_id), self._keys.arq_result(job_id)]
        await self._put(keys=keys, args=[*context.args, *entry.args])

    async def schedule(self, lanes: Sequence[Lane] = LANES) -> int:
        """Hand waiting jobs to arq's queues while the workers have room (a job has ended, a
        worker has started or beaten); how many."""
        keys, args = self._schedule_call(lanes)
        return int(await self._schedule(keys=keys, args=args))

    def schedule_in(self, pipe: Pipeline, lanes: Sequence[Lane] = LANES) -> None:
        """`schedule` as a command of `pipe` (arq's finish of a job, whose slot it hands on):
        by its script's hash alone, so that the pipeline sends no SCRIPT EXISTS first; a
        Valkey that has lost its scripts answers that command with NOSCRIPT, and the caller
        schedules apart."""
        keys, args = self._schedule_call(lanes)
        pipe.evalsha(self._schedule.sha, len(keys), *keys, *map(str, args))

    def _schedule_call(self, lanes: Sequence[Lane]) -> tuple[list[str], list[str | int | float]]:
        keys: list[str] = []
        args: list[str | int | float] = []
        for lane in lanes:
            context = self.context(lane)
            keys += context.keys
            args += context.args
        return keys, args

    async def abort(self, job_id: str, kind: Kind) -> None:
        """Ask the worker running the job to cancel its task (arq's allow_abort_jobs), which it
        reads at its next poll: nudged, now."""
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.zadd(self._keys.arq_aborts, {job_id: int(time.time() * 1000)})
            pipe.publish(self._keys.nudge(JOB_KINDS[kind].lane), b"")
            await pipe.execute()

    async def take_back_try(self, job_id: str) -> None:
        """Uncount arq's latest start of the job: it was deferred, not tried."""
        await self._redis.decr(self._keys.arq_tries(job_id))

    async def forget_tries(self, job_id: str) -> None:
        """Reset arq's count of tries, so a requeued job gets all its tries again."""
        await self._redis.delete(self._keys.arq_tries(job_id))

    async def put_delivery(self, function: str, job_id: str, message_id: str, kind: Kind) -> None:
        """Queue the delivery of a job's webhook message on the job's own queue, under the
        message's id (arq queues one job of an id at a time)."""
        await self._redis.enqueue_job(
            function, job_id, message_id, _job_id=message_id, _queue_name=self.name(kind)
        )
        await self._redis.publish(self._keys.nudge(JOB_KINDS[kind].lane), b"")

    async def size(self, kind: Kind) -> int:
        """Every job of the lane of `kind`, waiting or on arq's queue whatever its state
        (`LaneDepth.total`): for admission, on every request, in one round trip."""
        lane = JOB_KINDS[kind].lane
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.zcard(self._keys.queue(lane))
            pipe.hlen(self._keys.waiting_jobs(lane))
            queued, waiting = await pipe.execute()
        return int(queued) + int(waiting)

    async def depth(self, lanes: Sequence[Lane] = LANES) -> dict[Lane, LaneDepth]:
        """Each lane's waiting, ready, running and scheduled jobs and its oldest ready job's
        age, read in one round trip: the one count that admission, `/stats` and `/metrics`
        share."""
        keys, prefixes = [], []
        for lane in lanes:
            context = self.context(lane)
            keys += [self._keys.queue(lane), *context.keys[:3]]
            prefixes.append(self._keys.waiting_list_prefix(lane))
        args: list[str | int] = [self._keys.arq_in_progress(""), HEAD, SCAN, *prefixes]
        now, *counts = await self._depth(keys=keys, args=args)
        depths: dict[Lane, LaneDepth] = {}
        width = 4 + 2 * len(PRIORITIES)
        for i, lane in enumerate(lanes):
            ready, running, scheduled, oldest, *by_priority = counts[width * i : width * (i + 1)]
            waiting = {
                priority: Waited(int(by_priority[2 * p]), _age(now, by_priority[2 * p + 1]))
                for p, priority in enumerate(PRIORITIES)
            }
            depths[lane] = LaneDepth(
                int(ready), int(running), int(scheduled), _age(now, oldest), waiting
            )
        return depths

    async def busiest(
        self, lanes: Sequence[Lane] = LANES, top: int = BUSIEST_KEYS
    ) -> dict[Lane, list[tuple[str, int]]]:
        """Per lane, the `top` keys with the most jobs waiting and how many, most first."""
        found: dict[Lane, list[tuple[str, int]]] = {}
        for lane in lanes:
            context = self.context(lane)
            args = [*context.args[:1], SCAN, top]
            flat = await self._busiest(keys=context.keys[:3], args=args)
            found[lane] = [
                (key.decode(), int(n)) for key, n in zip(flat[::2], flat[1::2], strict=True)
            ]
        return found


def _age(now: int, since: int) -> float:
    """Seconds from `since` (ms, or -1 for none) to `now` (ms)."""
    return max(0.0, (now - since) / 1000) if since >= 0 else 0.0


@dataclass(frozen=True, slots=True)
class Waited:
    """One priority's jobs waiting in the keys' lists for their turn (fair_share.py)."""

    jobs: int
    oldest_age: float  # seconds the oldest has waited; 0 when none waits


@dataclass(frozen=True, slots=True)
class LaneDepth:
    """One queue's jobs by state. arq keeps a running job in its queue, scored by when it was
    due, until it ends, and marks it with an in-progress key while a worker holds it."""

    queued: int  # on arq's queue, due and waiting for a worker
    running: int  # held by a worker (its in-progress key is set)
    scheduled: int  # not due yet: a retry waiting out its backoff, a deferred job
    queued_age: float  # seconds the oldest queued job has been due; 0 when none is
    waiting: dict[Priority, Waited]  # in the keys' lists, for the scheduler to hand on

    @property
    def ready(self) -> int:
        """Waiting for a worker: in the keys' lists or on arq's queue."""
        return self.queued + sum(waited.jobs for waited in self.waiting.values())

    @property
    def oldest_age(self) -> float:
        """Seconds the oldest job waiting for a worker has waited; 0 when none waits."""
        return max([self.queued_age, *(waited.oldest_age for waited in self.waiting.values())])

    @property
    def total(self) -> int:
        """Every job of the lane, whatever its state."""
        return self.ready + self.running + self.scheduled


# How many of a queue's due jobs, from its head, are looked at one by one (for a running
# job's in-progress key). Running jobs are due and, first in first out, sit at the head: the
# head finds them without walking a deep queue. Beyond the jobs a deployment runs at once.
HEAD = 1000

# KEYS: per lane, its arq queue, its waiting jobs and its two rings (fair_share.py). ARGV:
# arq's in-progress key prefix, HEAD, SCAN, then each lane's waiting-list prefix. Returns
# Valkey's clock in ms, then per lane: ready, running and scheduled on arq's queue, the oldest
# ready job's score (due time, ms) or -1, then per priority the jobs waiting in the keys'
# lists and when the oldest came (ms) or -1. One script for every lane, so that the whole
# count is one round trip.
_DEPTH = """
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local limit, scan = tonumber(ARGV[2]), tonumber(ARGV[3])
local result = {now}
for l = 1, #KEYS / 4 do
  local queue, jobs = KEYS[4 * l - 3], KEYS[4 * l - 2]
  local due = redis.call('ZCOUNT', queue, '-inf', now)
  local all = redis.call('ZCARD', queue)
  local head = redis.call('ZRANGEBYSCORE', queue, '-inf', now, 'WITHSCORES', 'LIMIT', 0, limit)
  local running, oldest = 0, -1
  for i = 1, #head, 2 do
    if redis.call('EXISTS', ARGV[1] .. head[i]) == 1 then
      running = running + 1
    elseif oldest < 0 then
      oldest = tonumber(head[i + 1])
    end
  end
  if oldest < 0 and due > limit then
    local after = redis.call('ZRANGEBYSCORE', queue, '-inf', now, 'WITHSCORES', 'LIMIT', limit, 1)
    if #after > 0 then oldest = tonumber(after[2]) end
  end
  for _, n in ipairs({due - running, running, all - due, oldest}) do
    result[#result + 1] = n
  end
  for class = 0, 1 do
    local waiting, came = 0, -1
    for _, key in ipairs(redis.call('ZRANGE', KEYS[4 * l - 1 + class], 0, scan - 1)) do
      local list = ARGV[3 + l] .. class .. ':' .. key
      waiting = waiting + redis.call('ZCARD', list)
      local first = redis.call('ZRANGE', list, 0, 0)[1]
      local entry = first and redis.call('HGET', jobs, first)
      if entry then
        local at = cjson.decode(entry)[4]
        if came < 0 or at < came then came = at end
      end
    end
    result[#result + 1] = waiting
    result[#result + 1] = came
  end
end
return result
"""

# KEYS: a lane's waiting jobs and its two rings. ARGV: its waiting-list prefix, SCAN, how many.
# The keys with the most jobs waiting (both priorities), most first: key, count, key, ...
_BUSIEST = """
local counts = {}
for class = 0, 1 do
  for _, key in ipairs(redis.call('ZRANGE', KEYS[2 + class], 0, tonumber(ARGV[2]) - 1)) do
    counts[key] = (counts[key] or 0) + redis.call('ZCARD', ARGV[1] .. class .. ':' .. key)
  end
end
local keys = {}
for key in pairs(counts) do keys[#keys + 1] = key end
table.sort(keys, function(a, b)
  if counts[a] ~= counts[b] then return counts[a] > counts[b] end
  return a < b
end)
local result = {}
for i = 1, math.min(#keys, tonumber(ARGV[3])) do
  result[#result + 1] = keys[i]
  result[#result + 1] = counts[keys[i]]
end
return result
"""
