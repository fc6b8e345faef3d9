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

from rag_async.store.keys import Keys

Lane = Literal["questions", "documents"]
LANES: tuple[Lane, ...] = ("questions", "documents")
# A kind of job is one name everywhere: the job record's `kind`, the arq function that runs
# it, its lifecycle spec (worker/jobs/) and its policy (worker/kinds.py).
Kind = Literal["answer", "ingest", "delete"]


@dataclass(frozen=True, slots=True)
class JobKind:
    lane: Lane  # the queue its jobs wait in


JOB_KINDS: dict[Kind, JobKind] = {
    "answer": JobKind("questions"),
    "ingest": JobKind("documents"),
    "delete": JobKind("documents"),
}

# The arq function names of the kinds before they were given one name: jobs an earlier
# version queued still find their function (worker/process.py registers both).
EARLIER_NAMES: dict[Kind, str] = {
    "answer": "answer_question",
    "ingest": "ingest_document",
    "delete": "delete_document",
}


# Putting a job on arq's queue as arq's `ArqRedis.enqueue_job` does, in Lua so that the job
# store can do it in the same step as the job's record (jobs.py). `q` is `ArqEntry.keys`: arq's
# copy of the job, its result, the queue; `a` is `ArqEntry.args`.
LUA = """
-- A job arq has (or had, its result kept) under this id is not enqueued again.
local function arq_taken(q)
  return redis.call('EXISTS', q[1], q[2]) > 0
end

local function arq_enqueue(q, a)
  redis.call('PSETEX', q[1], a[4], a[2])
  redis.call('ZADD', q[3], a[3], a[1])
end
"""

# Taking a job that no worker holds off arq's queue (`t` is `take_off_keys`), in Lua so that
# the event log can do it in the same step as the job's `cancelled` event (events.py). A
# worker that read the queue just before and marks the job in progress after finds arq's
# copy gone, and arq drops the run without calling the job's function. False if the job is
# not waiting there (running, or gone).
TAKE_OFF_LUA = """
local function arq_take_off(t, id)
  if redis.call('EXISTS', t[2]) == 1 then return false end
  if redis.call('ZREM', t[1], id) == 0 then return false end
  redis.call('DEL', t[3])
  return true
end
"""

_PUT = (
    LUA
    + """
local q = {KEYS[1], KEYS[2], KEYS[3]}
if arq_taken(q) then return 0 end
arq_enqueue(q, ARGV)
return 1
"""
)


@dataclass(frozen=True, slots=True)
class ArqEntry:
    """What `LUA` writes to put one job on arq's queue."""

    keys: list[str]  # arq's job, arq's result, the queue
    args: list[str | int | bytes]  # job id, arq's payload, score (ms), the payload's life (ms)


def arq_entry(keys: Keys, job_id: str, kind: Kind) -> ArqEntry:
    """The job as arq itself would enqueue it now: its function and id as the one argument,
    serialized with the workers' serializer (orjson), first in line at its enqueue time."""
    now_ms = round(time.time() * 1000)
    payload: dict[str, object] = {
        "t": None,
        "f": kind,
        "a": [job_id],
        "k": {},
        "et": now_ms,
    }
    queue = keys.queue(JOB_KINDS[kind].lane)
    return ArqEntry(
        keys=[keys.arq_job(job_id), keys.arq_result(job_id), queue],
        args=[job_id, orjson.dumps(payload), now_ms, expires_extra_ms],
    )


def take_off_keys(keys: Keys, job_id: str, kind: Kind) -> list[str]:
    """The keys `TAKE_OFF_LUA` takes as `t`: the job's queue, its in-progress key, arq's copy."""
    queue = keys.queue(JOB_KINDS[kind].lane)
    return [queue, keys.arq_in_progress(job_id), keys.arq_job(job_id)]


class JobQueue:
    """The arq queues, as the API and the lifecycle use them (the workers read them through
    arq): the one module that knows arq's keys."""

    def __init__(self, redis: Redis, keys: Keys) -> None:
        # The same pool, with arq's enqueue and the workers' (JSON) serializer.
        self._redis = ArqRedis(
            connection_pool=redis.connection_pool,
            job_serializer=orjson.dumps,
            job_deserializer=orjson.loads,
        )
        self._keys = keys
        self._depth = self._redis.register_script(_DEPTH)
        self._put = self._redis.register_script(_PUT)

    def name(self, kind: Kind) -> str:
        return self._keys.queue(JOB_KINDS[kind].lane)

    async def position(self, job_id: str, kind: Kind) -> int | None:
        """1 + the unfinished jobs ahead of it, or None if it is not on its queue."""
        rank = await self._redis.zrank(self.name(kind), job_id)
        return None if rank is None else int(rank) + 1

    async def put(self, job_id: str, kind: Kind) -> None:
        """Hand a recorded job to arq again (a dead letter requeued), under its own id, so a
        repeat enqueues nothing. A new job is put on the queue with its record (jobs.py)."""
        entry = arq_entry(self._keys, job_id, kind)
        await self._put(keys=entry.keys, args=entry.args)

    async def abort(self, job_id: str) -> None:
        """Ask the worker running the job to cancel its task (arq's allow_abort_jobs)."""
        await self._redis.zadd(self._keys.arq_aborts, {job_id: int(time.time() * 1000)})

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

    async def size(self, kind: Kind) -> int:
        """Every job on the queue of `kind`, whatever its state (`LaneDepth.total`): one
        ZCARD, for admission, which needs no more than that on every request."""
        return int(await self._redis.zcard(self.name(kind)))

    async def depth(self, lanes: Sequence[Lane] = LANES) -> dict[Lane, LaneDepth]:
        """Each lane's ready, running and scheduled jobs and its oldest ready job's age, read
        in one round trip: the one count that admission, `/stats` and `/metrics` share."""
        keys = [self._keys.queue(lane) for lane in lanes]
        now, *counts = await self._depth(keys=keys, args=[self._keys.arq_in_progress(""), HEAD])
        depths: dict[Lane, LaneDepth] = {}
        for i, lane in enumerate(lanes):
            ready, running, scheduled, oldest = counts[4 * i : 4 * i + 4]
            age = max(0.0, (now - oldest) / 1000) if oldest >= 0 else 0.0
            depths[lane] = LaneDepth(int(ready), int(running), int(scheduled), age)
        return depths


@dataclass(frozen=True, slots=True)
class LaneDepth:
    """One queue's jobs by state. arq keeps a running job in its queue, scored by when it was
    due, until it ends, and marks it with an in-progress key while a worker holds it."""

    ready: int  # due and waiting for a worker
    running: int  # held by a worker (its in-progress key is set)
    scheduled: int  # not due yet: a retry waiting out its backoff, a deferred job
    oldest_age: float  # seconds the oldest ready job has been due; 0 when none is ready

    @property
    def total(self) -> int:
        """Every job on the queue, whatever its state."""
        return self.ready + self.running + self.scheduled


# How many of a queue's due jobs, from its head, are looked at one by one (for a running
# job's in-progress key). Running jobs are due and, first in first out, sit at the head: the
# head finds them without walking a deep queue. Beyond the jobs a deployment runs at once.
HEAD = 1000

# KEYS: the arq queues. ARGV: arq's in-progress key prefix, HEAD. Returns Valkey's clock in
# ms, then per queue: ready, running, scheduled, the oldest ready job's score (due time, ms)
# or -1. One script for every queue, so that the whole count is one round trip.
_DEPTH = """
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local limit = tonumber(ARGV[2])
local result = {now}
for _, queue in ipairs(KEYS) do
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
end
return result
"""
