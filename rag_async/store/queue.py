"""Which queue each kind of job waits in, which worker function runs it, and the queue itself:
how deep it is, where a job stands in it, and putting a job on it.

Questions and documents wait in separate queues, each served by its own arq worker inside every
worker process (workers/settings.py). A burst of uploads does not hold up a question queued
behind it, each queue has its own concurrency, and arq's in-progress TTL, which follows the
longest job timeout of a worker, is a question's own rather than a long ingestion's.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal

import orjson
from arq.connections import ArqRedis
from arq.constants import expires_extra_ms

from rag_async.store.keys import Keys

Lane = Literal["questions", "documents"]
LANES: tuple[Lane, ...] = ("questions", "documents")
Kind = Literal["chat", "ingest", "delete"]


@dataclass(frozen=True, slots=True)
class JobKind:
    function: str  # the arq function name
    lane: Lane


JOB_KINDS: dict[Kind, JobKind] = {
    "chat": JobKind("answer_question", "questions"),
    "ingest": JobKind("ingest_document", "documents"),
    "delete": JobKind("delete_document", "documents"),
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
        "f": JOB_KINDS[kind].function,
        "a": [job_id],
        "k": {},
        "et": now_ms,
    }
    queue = keys.queue(JOB_KINDS[kind].lane)
    return ArqEntry(
        keys=[keys.arq_job(job_id), keys.arq_result(job_id), queue],
        args=[job_id, orjson.dumps(payload), now_ms, expires_extra_ms],
    )


class JobQueue:
    """The arq queues, as the API uses them (the workers read them through arq)."""

    def __init__(self, redis: ArqRedis, keys: Keys) -> None:
        self._redis = redis
        self._keys = keys
        self._put = redis.register_script(_PUT)

    def name(self, kind: Kind) -> str:
        return self._keys.queue(JOB_KINDS[kind].lane)

    async def depth(self, kind: Kind) -> int:
        """Jobs waiting or running in the queue of `kind` (arq keeps a running job queued)."""
        return int(await self._redis.zcard(self.name(kind)))

    async def position(self, job_id: str, kind: Kind) -> int | None:
        """1 + the unfinished jobs ahead of it, or None if it is not on its queue."""
        rank = await self._redis.zrank(self.name(kind), job_id)
        return None if rank is None else int(rank) + 1

    async def put(self, job_id: str, kind: Kind) -> None:
        """Hand a recorded job to arq again (a dead letter requeued), under its own id, so a
        repeat enqueues nothing. A new job is put on the queue with its record (jobs.py)."""
        entry = arq_entry(self._keys, job_id, kind)
        await self._put(keys=entry.keys, args=entry.args)
