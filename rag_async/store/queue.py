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
from redis.asyncio import Redis

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


# KEYS: arq queue, arq's in-progress key of the job, arq's copy of the job. ARGV: job id.
# Atomic, so a worker cannot start the job between the check and the removal; a worker that
# read the queue just before and marks the job in progress after finds arq's copy gone, and
# arq drops the run without calling the job's function.
_TAKE_OFF = """
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
if redis.call('ZREM', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('DEL', KEYS[3])
return 1
"""


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
        self._take_off = self._redis.register_script(_TAKE_OFF)

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
        """Hand a recorded job to arq, under its own id (so a repeat enqueues nothing)."""
        function = JOB_KINDS[kind].function
        await self._redis.enqueue_job(function, job_id, _job_id=job_id, _queue_name=self.name(kind))

    async def take_off(self, job_id: str, kind: Kind) -> bool:
        """Take a job that no worker has started off its queue; False if it is not waiting
        there (running, or gone)."""
        keys = [self.name(kind), self._keys.arq_in_progress(job_id), self._keys.arq_job(job_id)]
        return bool(await self._take_off(keys=keys, args=[job_id]))

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
