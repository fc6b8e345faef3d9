"""The workers in Valkey: their heartbeats, the jobs each runs, and freeing the jobs of a worker
that died, in seconds rather than minutes. This module alone writes the workers' hash and
their job sets.

arq marks a job it starts with an in-progress key that lives for the longest job timeout plus
10 s, and no worker may start the job again while that key exists. A worker killed with SIGKILL
(or lost with its machine) never deletes it, so its jobs would wait out the key: minutes.

So every worker records the ids of the jobs it runs in a set of its own, and beats a heartbeat
(`WorkerBeats`). Any worker that finds another silent for `worker_dead_after` seconds deletes the
silent one's in-progress keys, and the jobs start again at the next poll of any worker. arq
counts the lost run as a try, which is true: the job was started and did not finish.

Our worker (RagWorker) takes a job and records it in its set in one step (`RunningJobs.claim`).
arq's own Worker (its CLI) records it two round trips later: a worker killed in between leaves
a key that no set names; the reaper frees such keys once they are older than a live worker
could take to record its job (`DeadWorkerReaper`).

A worker that was only slow, its event loop blocked for longer than `worker_dead_after`, may
then run a job at the same time as the job's new owner. The event log's attempt fence
(events.py) stops the older attempt at its next write, so clients still see one answer.
"""

from __future__ import annotations

from collections.abc import Mapping

import orjson
import structlog
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import RedisError

from rag_async.store.keys import Keys
from rag_async.store.queue import HEAD, Lane

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


# A job taken by this worker in one step: what arq's `start_jobs` does in four round trips
# (WATCH its in-progress key, EXISTS, ZSCORE, MULTI/PSETEX/EXEC), with the job entered in the
# worker's job set in the same step, so that no worker can die holding a job that no job set
# names. KEYS: the job's in-progress key, the queue, the worker's job set. ARGV: job id, now
# (ms), the in-progress TTL (ms). Returns the job's score, or nothing: running elsewhere, or
# no longer queued, or re-queued for later.
_CLAIM = """
if redis.call('EXISTS', KEYS[1]) == 1 then return false end
local score = redis.call('ZSCORE', KEYS[2], ARGV[1])
if not score or tonumber(score) > tonumber(ARGV[2]) then return false end
redis.call('PSETEX', KEYS[1], ARGV[3], '1')
redis.call('SADD', KEYS[3], ARGV[1])
return score
"""


# KEYS: the workers' heartbeat hash, then the arq queues. ARGV: the worker job sets' key
# prefix, arq's in-progress key prefix, the grace and the cap (how many due jobs of a queue
# to look at), then each queue's in-progress TTL (ms, as arq sets it). Frees the in-progress
# keys older than the grace of due jobs that no worker's job set holds: taken by a worker
# that died before it recorded them. Returns their ids.
_FREE_UNRECORDED = """
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local grace, cap = tonumber(ARGV[3]), tonumber(ARGV[4])
local recorded = nil
local freed = {}
for q = 2, #KEYS do
  local ttl = tonumber(ARGV[3 + q])
  for _, job_id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[q], '-inf', now, 'LIMIT', 0, cap)) do
    local left = redis.call('PTTL', ARGV[2] .. job_id)
    if left > 0 and ttl - left > grace then
      if recorded == nil then
        recorded = {}
        for _, worker in ipairs(redis.call('HKEYS', KEYS[1])) do
          for _, held in ipairs(redis.call('SMEMBERS', ARGV[1] .. worker)) do
            recorded[held] = true
          end
        end
      end
      if not recorded[job_id] then
        redis.call('DEL', ARGV[2] .. job_id)
        freed[#freed + 1] = job_id
      end
    end
  end
end
return freed
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
        self._claimed: set[str] = set()  # taken by `claim`, not started yet
        self._released: set[str] = set()  # left the job set with arq's finish (`release`)
        self._free_own = redis.register_script(_FREE_OWN_JOBS)
        self._claim = redis.register_script(_CLAIM)

    def __len__(self) -> int:
        return len(self._here)

    async def claim(self, job_id: str, queue: str, now_ms: int, ttl_ms: int) -> int | None:
        """Take a queued job for this worker, as arq's `start_jobs` does, and record it as
        running here, in one step (`_CLAIM`); its score, or None if it is not to be run now."""
        keys = [self._in_progress_prefix + job_id, queue, self._key]
        score: bytes | None = await self._claim(keys=keys, args=[job_id, now_ms, ttl_ms])
        if score is None:
            return None
        self._claimed.add(job_id)
        return int(float(score))

    async def add(self, job_id: str) -> None:
        """The job runs here (arq's start hook). Recorded in Valkey now, unless `claim` took
        it (RagWorker): then it was, in the claim's step (arq's own Worker, from its CLI,
        takes jobs without it)."""
        self._here.add(job_id)
        if job_id in self._claimed:
            self._claimed.discard(job_id)
            return
        try:
            await self._redis.sadd(self._key, job_id)  # type: ignore[misc]
        except RedisError as error:
            log.warning("could not record a running job", job_id=job_id, error=str(error))

    def ending(self, job_id: str) -> None:
        """The job no longer runs here; its record stays until `discard`, once arq has
        finished it. Should arq fail to (Valkey away), `repair` frees the job."""
        self._here.discard(job_id)

    def release(self, pipe: Pipeline, job_id: str) -> None:
        """Take the job out of the job set within `pipe`: arq's finish of the job, which
        deletes its in-progress key in the same step (RagWorker.finish_job); `released` once
        the step is done, and its slot handed on."""
        pipe.srem(self._key, job_id)

    def released(self, job_id: str) -> None:
        self._released.add(job_id)

    async def discard(self, job_id: str) -> bool:
        """The job is over here (arq's end hook, once arq has finished it). Taken out of the
        job set in Valkey now, unless arq's finish did it and handed on its slot (`release`,
        `released`): then True, and nothing is left to do."""
        self._here.discard(job_id)
        self._claimed.discard(job_id)
        if job_id in self._released:
            self._released.discard(job_id)
            return True
        try:
            await self._redis.srem(self._key, job_id)  # type: ignore[misc]
        except RedisError as error:
            log.warning("could not record a job's end", job_id=job_id, error=str(error))
        return False

    async def repair(self) -> list[str]:
        """Free the jobs recorded as running here that have not run here for a whole beat,
        and record again the ones running here whose start could not be recorded: a job
        that no job set holds is one a dead worker took, to the reaper."""
        running = set(self._here)
        recorded = {job_id.decode() for job_id in await self._redis.smembers(self._key)}  # type: ignore[misc]
        if unrecorded := (running & self._here) - recorded:
            await self._redis.sadd(self._key, *unrecorded)  # type: ignore[misc]
        # Seen twice, a beat apart: not a job whose end is being recorded right now.
        orphans, self._suspects = self._suspects & (recorded - self._here), recorded - self._here
        if not orphans:
            return []
        self._suspects -= orphans
        await self._free_own(keys=[self._key], args=[self._in_progress_prefix, *orphans])
        log.warning("jobs whose end went unrecorded freed", jobs=sorted(orphans))
        return sorted(orphans)


class DeadWorkerReaper:
    """Finds workers whose heartbeat went silent and frees the jobs they held, and the jobs
    that a worker took but died before recording.

    arq sets a job's in-progress key when it takes the job; under arq's own Worker (its CLI)
    the job enters the worker's job set two round trips later (`RunningJobs.add`, from arq's
    job start hook; RagWorker does both in one step). A worker killed in between leaves a key
    that no job set names. Such a key is freed once it is older than
    `dead_after`: its age is the TTL arq gave it (`in_progress_ttls`, per queue) less what is
    left of it, and a live worker records its job within milliseconds. Only due jobs can be
    running, and running jobs sit at the head of their queue, so `HEAD` of them are looked at.
    A job that any worker in the heartbeat hash holds is left alone, a silent worker's too:
    `reap` frees those with the worker, atomically with its beat.
    """

    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        worker_id: str,
        dead_after: float,
        in_progress_ttls: Mapping[Lane, float],
    ) -> None:
        self._redis = redis
        self._keys = keys
        self._worker_id = worker_id
        self._dead_after = dead_after
        self._in_progress_ttls = dict(in_progress_ttls)
        self._free_jobs = redis.register_script(_FREE_JOBS)
        self._free_unrecorded_jobs = redis.register_script(_FREE_UNRECORDED)

    async def reap(self, now: float) -> list[str]:
        """Free the jobs of every worker silent for too long, then those no worker recorded;
        return their ids."""
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
        return freed + await self.free_unrecorded()

    async def free_unrecorded(self) -> list[str]:
        """Free the in-progress keys of jobs that a worker took and died before recording."""
        lanes = list(self._in_progress_ttls)
        if not lanes:
            return []
        keys = [self._keys.workers, *(self._keys.queue(lane) for lane in lanes)]
        args: list[str | int] = [
            self._keys.worker_jobs(""),
            self._keys.arq_in_progress(""),
            int(self._dead_after * 1000),
            HEAD,
            *(int(self._in_progress_ttls[lane] * 1000) for lane in lanes),
        ]
        jobs = await self._free_unrecorded_jobs(keys=keys, args=args)
        job_ids = [job_id.decode() for job_id in jobs]
        if job_ids:
            log.warning(
                "jobs taken by a worker that died before recording them freed", jobs=job_ids
            )
        return job_ids


# KEYS: the workers' hash. ARGV: the worker's id, the rest of its beat (a JSON object). The
# beat is stamped with Valkey's clock, not the worker's: a beat held up on the way (a network
# partition healing) arrives fresh, and workers' clocks need not agree. Returns the stamp.
_BEAT = """
local t = redis.call('TIME')
local now = t[1] .. '.' .. string.format('%06d', t[2])
redis.call('HSET', KEYS[1], ARGV[1], '{"last_seen":' .. now .. ',' .. string.sub(ARGV[2], 2))
return now
"""


class WorkerBeats:
    """A worker's "still here" in the hash all workers share (read by store/activity.py)."""

    def __init__(self, redis: Redis, keys: Keys, worker_id: str) -> None:
        self._redis = redis
        self._keys = keys
        self._worker_id = worker_id
        self._beat = redis.register_script(_BEAT)

    async def beat(self, report: bytes) -> float:
        """Beat with `report` (a JSON object: jobs in flight, breakers); returns Valkey's
        time of the beat."""
        return float(await self._beat(keys=[self._keys.workers], args=[self._worker_id, report]))

    async def leave(self) -> None:
        """A worker stopping: no beat and no job set of it remain."""
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hdel(self._keys.workers, self._worker_id)
            pipe.delete(self._keys.worker_jobs(self._worker_id))
            await pipe.execute()
