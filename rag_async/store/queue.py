"""Which queue each kind of job waits in, which worker function runs it, and the queue itself:
how deep it is, where a job stands in it, and putting a job on it.

Questions and documents wait in separate queues, each served by its own arq worker inside every
worker process (workers/settings.py). A burst of uploads does not hold up a question queued
behind it, each queue has its own concurrency, and arq's in-progress TTL, which follows the
longest job timeout of a worker, is a question's own rather than a long ingestion's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from arq.connections import ArqRedis

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


class JobQueue:
    """The arq queues, as the API uses them (the workers read them through arq)."""

    def __init__(self, redis: ArqRedis, keys: Keys) -> None:
        self._redis = redis
        self._keys = keys

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
