"""Freeing the jobs of a worker that died, in seconds rather than minutes.

arq marks a job it starts with an in-progress key that lives for the longest job timeout plus
10 s, and no worker may start the job again while that key exists. A worker killed with SIGKILL
(or lost with its machine) never deletes it, so its jobs would wait out the key: minutes.

So every worker records the ids of the jobs it runs in a set of its own, and beats a heartbeat
(activity.py). Any worker that finds another silent for `worker_dead_after` seconds deletes the
silent one's in-progress keys, and the jobs start again at the next poll of any worker. arq
counts the lost run as a try, which is true: the job was started and did not finish.

A worker that was only slow, its event loop blocked for longer than `worker_dead_after`, may
then run a job at the same time as the job's new owner. The event log's attempt fence
(eventlog.py) stops the older attempt at its next write, so clients still see one answer.
"""

from __future__ import annotations

import orjson
import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

from rag_async.store.keys import Keys

log = structlog.get_logger(__name__)

# KEYS: the workers' heartbeat hash, the silent worker's job set. ARGV: its id, the heartbeat
# the caller judged stale, arq's in-progress key prefix. Atomic and conditional, so a worker
# that beat again meanwhile keeps its jobs, and of two survivors only one frees them.
_FREE_JOBS = """
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then return false end
redis.call('HDEL', KEYS[1], ARGV[1])
local jobs = redis.call('SMEMBERS', KEYS[2])
for _, job_id in ipairs(jobs) do
  redis.call('DEL', ARGV[3] .. job_id)
end
redis.call('DEL', KEYS[2])
return jobs
"""


# KEYS: a worker's job set. ARGV: arq's in-progress key prefix, then job ids to free.
_FREE_OWN_JOBS = """
for i = 2, #ARGV do
  redis.call('DEL', ARGV[1] .. ARGV[i])
  redis.call('SREM', KEYS[1], ARGV[i])
end
"""


class RunningJobs:
    """This worker's running job ids: in memory, and in Valkey for whoever outlives it.

    The Valkey side is best effort: it is written from arq's job start and end hooks, where an
    exception would keep arq from finishing the job. A job whose end could not be recorded
    (Valkey away) may also have been left "in progress" by arq; `repair` frees it.
    """

    def __init__(self, redis: Redis, keys: Keys, worker_id: str) -> None:
        self._redis = redis
        self._key = keys.worker_jobs(worker_id)
        self._in_progress_prefix = keys.arq_in_progress("")
        self._here: set[str] = set()
        self._suspects: set[str] = set()
        self._free_own = redis.register_script(_FREE_OWN_JOBS)

    def __len__(self) -> int:
        return len(self._here)

    async def add(self, job_id: str) -> None:
        self._here.add(job_id)
        try:
            await self._redis.sadd(self._key, job_id)  # type: ignore[misc]
        except RedisError as error:
            log.warning("could not record a running job", job_id=job_id, error=str(error))

    async def discard(self, job_id: str) -> None:
        self._here.discard(job_id)
        try:
            await self._redis.srem(self._key, job_id)  # type: ignore[misc]
        except RedisError as error:
            log.warning("could not record a job's end", job_id=job_id, error=str(error))

    async def repair(self) -> list[str]:
        """Free the jobs recorded as running here that have not run here for a whole beat."""
        recorded = {job_id.decode() for job_id in await self._redis.smembers(self._key)}  # type: ignore[misc]
        # Seen twice, a beat apart: not a job whose end is being recorded right now.
        orphans, self._suspects = self._suspects & (recorded - self._here), recorded - self._here
        if not orphans:
            return []
        self._suspects -= orphans
        await self._free_own(keys=[self._key], args=[self._in_progress_prefix, *orphans])
        log.warning("jobs whose end went unrecorded freed", jobs=sorted(orphans))
        return sorted(orphans)


class DeadWorkerReaper:
    """Finds workers whose heartbeat went silent and frees the jobs they held."""

    def __init__(self, redis: Redis, keys: Keys, worker_id: str, dead_after: float) -> None:
        self._redis = redis
        self._keys = keys
        self._worker_id = worker_id
        self._dead_after = dead_after
        self._free_jobs = redis.register_script(_FREE_JOBS)

    async def reap(self, now: float) -> list[str]:
        """Free the jobs of every worker silent for too long; return their ids."""
        beats: dict[bytes, bytes] = await self._redis.hgetall(self._keys.workers)  # type: ignore[misc]
        freed: list[str] = []
        for raw_id, beat in beats.items():
            worker_id = raw_id.decode()
            if worker_id == self._worker_id:
                continue
            if now - float(orjson.loads(beat)["last_seen"]) <= self._dead_after:
                continue
            keys = [self._keys.workers, self._keys.worker_jobs(worker_id)]
            jobs = await self._free_jobs(
                keys=keys, args=[worker_id, beat, self._keys.arq_in_progress("")]
            )
            if jobs is None:  # it came back, or another worker got there first
                continue
            job_ids = [job_id.decode() for job_id in jobs]
            log.warning("worker silent, its jobs freed", worker=worker_id, jobs=job_ids)
            freed += job_ids
        return freed
