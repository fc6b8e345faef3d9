"""The job record in Redis: one hash per job (domain/job.py says what it holds), created with
its upload and its place on arq's queue in one step, and each owner's unfinished jobs (the
per-key limit on them).

This is the one writer of a job's hash outside the event log, whose Lua script updates fields
in the same step that appends an event (store/events.py): creation, attempts, the settling of
an end (once, in one step with the outcome counted, the dead letter and the failure listed,
composed from their modules' Lua), a cancel asked of a running job, a requeue, and the state
of the job's webhook. The record
expires with the result. arq's keys are store/queue.py's alone: its Lua (`arq_enqueue`) is
part of the creating script here, as the uploads' and the memory line's are.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from redis.asyncio import Redis
from redis.exceptions import OutOfMemoryError

from rag_async.domain.errors import StoreFull
from rag_async.domain.job import Ending, JobRecord, JobStatus, WebhookDelivery, record_fields
from rag_async.store.activity import FAILURES_KEPT, FAILURES_LUA, failure_entry
from rag_async.store.dead_letters import LUA as DEAD_LETTERS_LUA
from rag_async.store.ending import LUA as ENDING_LUA
from rag_async.store.fair_share import FairSettings, Priority
from rag_async.store.keys import Keys
from rag_async.store.memory import LUA as MEMORY_LUA
from rag_async.store.outcomes import LUA as OUTCOMES_LUA
from rag_async.store.queue import JOB_KINDS, Kind, fair_context, waiting
from rag_async.store.queue import LUA as QUEUE_LUA
from rag_async.store.results import LUA as RESULTS_LUA
from rag_async.store.results import ResultBytes
from rag_async.store.uploads import LUA as UPLOADS_LUA
from rag_async.store.uploads import Uploads

_ENDED = [status.value for status in JobStatus if status.ended]

# KEYS: job hash. ARGV: the statuses that end a job. Returns the new attempt's number, or 0 for
# a job that has ended (a late write of a superseded attempt may have finished it) or is gone.
_START_ATTEMPT = """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return 0 end
for _, ended in ipairs(ARGV) do
  if status == ended then return 0 end
end
return redis.call('HINCRBY', KEYS[1], 'attempt', 1)
"""


# Each owner's unfinished jobs are a sorted set of job ids by creation time: added with the
# record, removed when the job ends or is cancelled off the queue. A set, so that a retried
# job, or an end written twice (arq delivers at least once), still counts once.

# A job is created in one step: its record, its upload (uploads.py) and its place in its
# owner's waiting list, whence the scheduler hands it to arq's queue at once if the workers
# have room (fair_share.py), or nothing at all. The `#!lua` line (with no `allow-oom` flag)
# has Valkey refuse the whole script at its memory limit; a script without it is refused only
# at its first write, and a prune that writes first would let the rest of the job past the
# limit.
# KEYS: 1 job hash, 2 the owner's unfinished jobs, 3-6 the upload's, 7-12 the scheduler's
# (`FairContext.keys`), 13-14 the owner's result bytes (results.py). ARGV: 1 job id, 2 ttl, 3
# the owner's limit (0: none), 4 the bound on pending uploads (0: none), 5 '1' if there is an
# upload, 6 the upload, 7 the memory reserve (memory.py), 8 the bound on the owner's result
# bytes (0: none), 9-13 the waiting entry (`Waiting.args`), 14-24 the scheduler's
# (`FairContext.args`), 25 the bound on the lane's jobs, queued or waiting (0: none), then the
# record's fields and values. Returns 'created', or what refused the job.
_CREATE = (
    "#!lua\n"
    + MEMORY_LUA
    + UPLOADS_LUA
    + RESULTS_LUA
    + QUEUE_LUA
    + """
local ttl = tonumber(ARGV[2])
local deepest = tonumber(ARGV[25])
if deepest > 0 and redis.call('ZCARD', KEYS[11]) + redis.call('HLEN', KEYS[7]) >= deepest then
  return 'queue_full'
end
local now = tonumber(redis.call('TIME')[1])
local u = {KEYS[3], KEYS[4], KEYS[5], KEYS[6]}
-- A job still unfinished a result's life after it was created has lost its record (which
-- expires then unless the job ended) and will never end: it no longer counts.
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - ttl)
local limit = tonumber(ARGV[3])
if limit > 0 and redis.call('ZCARD', KEYS[2]) >= limit then return 'too_many_jobs' end
local r = {KEYS[13], KEYS[14]}
results_prune(r, now)
if results_over(r, tonumber(ARGV[8])) then return 'too_many_result_bytes' end
local size = string.len(ARGV[6])
if memory_over(tonumber(ARGV[7]), size) then return 'store_full' end
local upload = ARGV[5] == '1'
if upload then
  uploads_prune(u, now)
  if not uploads_fit(u, size, tonumber(ARGV[4])) then return 'uploads_pending' end
end
redis.call('HSET', KEYS[1], unpack(ARGV, 26))
redis.call('EXPIRE', KEYS[1], ttl)
local bytes = 0
for i = 26, #ARGV do bytes = bytes + string.len(ARGV[i]) end
results_add(r, ARGV[1], bytes, ttl, now)
if upload then uploads_keep(u, ARGV[1], ARGV[6], ttl, now) end
redis.call('ZADD', KEYS[2], now, ARGV[1])
local f = fair_of({unpack(KEYS, 7, 12)}, {unpack(ARGV, 14, 24)})
fair_put(f, ARGV[9], ARGV[10], tonumber(ARGV[11]), tonumber(ARGV[12]), ARGV[13])
return 'created'
"""
)

# A job's end settled in one step, once: its record and events live `ttl` from now, its upload
# dropped (or kept, a dead letter's), it no longer counts as its owner's unfinished job, its
# outcome counted (outcomes.py), its dead letter added (dead_letters.py) and its failure listed
# (activity.py). The record's `settled` names the end done, so a settle run again (its process
# killed after this step, the end found in the ending set) counts nothing twice; an end whose
# job has ended again since (a dead letter requeued), or whose record is gone, is moot.
# KEYS: 1 job hash, 2 its events, 3-6 its upload's, 7 the outcome counts, 8 the dead letters,
# 9 the recent failures. ARGV: 1 ttl, 2 job id, 3 the prefix of the owners' unfinished-job sets
# (the owner is read from the record, so no caller can name another), 4 '1' to keep the upload
# for the record's life, 5 the end's event id, 6 the kind, 7 the outcome, 8 the failure's entry
# ('' for none), 9 how many failures are kept, 10-11 the prefixes of the owners' result keys
# (the bytes its events wrote now count toward its owner's results, and expire with them), 12
# '1' when this is the end's last step: the end leaves the ending set (KEYS 10, ending.py) in it,
# whatever the settle finds, rather than in a round trip of its own.
# Returns 'settled' (now), 'done' (before), 'moot'.
_SETTLE = (
    ENDING_LUA
    + UPLOADS_LUA
    + RESULTS_LUA
    + OUTCOMES_LUA
    + DEAD_LETTERS_LUA
    + FAILURES_LUA
    + """
if ARGV[12] == '1' then ending_remove(KEYS[10], ARGV[2], ARGV[5]) end
if redis.call('HGET', KEYS[1], 'seq') ~= ARGV[5] then return 'moot' end
if redis.call('HGET', KEYS[1], 'settled') == ARGV[5] then return 'done' end
redis.call('HSET', KEYS[1], 'settled', ARGV[5])
local ttl = tonumber(ARGV[1])
local t = redis.call('TIME')
redis.call('EXPIRE', KEYS[1], ttl)
redis.call('EXPIRE', KEYS[2], ttl)
local u = {KEYS[3], KEYS[4], KEYS[5], KEYS[6]}
if ARGV[4] == '1' then
  uploads_retain(u, ARGV[2], ttl, tonumber(t[1]))
else
  uploads_drop(u, ARGV[2])
end
local owner = redis.call('HGET', KEYS[1], 'owner') or ''
redis.call('ZREM', ARGV[3] .. owner, ARGV[2])
results_settle(results_of({ARGV[10], ARGV[11]}, owner), KEYS[1], ARGV[2], ttl, tonumber(t[1]))
outcomes_count(KEYS[7], ARGV[6], ARGV[7])
if ARGV[7] == 'dead_lettered' then dead_letters_add(KEYS[8], ARGV[2], t[1] + t[2] / 1000000) end
if ARGV[8] ~= '' then failures_record(KEYS[9], ARGV[8], tonumber(ARGV[9])) end
return 'settled'
"""
)

# How long uploads are refused without a word to Valkey after it was found past the line.
_FULL_FOR = 1.0

# KEYS: job hash. ARGV: the field's new value. A record that has expired stays gone, rather
# than coming back as a hash of one field without a TTL.
# One field of a record that may have expired meanwhile (an HSET would recreate it, forever).
_SET_IF_KEPT = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
"""

# What refused a job's creation, or "created".
Created = Literal[
    "created",
    "queue_full",
    "too_many_jobs",
    "too_many_result_bytes",
    "store_full",
    "uploads_pending",
]
# What a settle found: an end it settled now, one settled before, or one that is moot.
Settled = Literal["settled", "done", "moot"]


@dataclass(frozen=True, slots=True)
class JobEnd:
    """One end of a job, as its bookkeeping needs it."""

    job_id: str
    kind: Kind
    outcome: Ending
    event_id: int  # the job's last event: which end this is
    reason: str = ""  # why a job that did not complete ended so


class JobStore:
    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        ttl: int,
        uploads: Uploads | None = None,
        *,
        memory_reserve: float = 0.0,
        results: ResultBytes | None = None,
        fair: FairSettings | None = None,
    ) -> None:
        self._redis = redis
        self._keys = keys
        self._ttl = ttl
        self.uploads = uploads or Uploads(redis, keys)
        self.results = results or ResultBytes(redis, keys)
        self._fair = fair or FairSettings()
        # New jobs are refused once Valkey's used memory would pass its maxmemory less this
        # share of it (memory.py); the workers' writes use the rest.
        self._memory_reserve = memory_reserve
        # Valkey holds a command's bytes before its script can refuse them, so uploads sent at
        # once could pass the memory line together, by as many as were on their way: one at a
        # time from this process, the reserve needs to hold one upload per API process.
        self._sending_upload = asyncio.Lock()
        # Once Valkey is found past the line, uploads are refused here for a moment rather
        # than each sent whole to be refused there (its bytes held by Valkey meanwhile).
        self._full_until = 0.0  # monotonic
        self._start_attempt = redis.register_script(_START_ATTEMPT)
        self._create = redis.register_script(_CREATE)
        self._settle = redis.register_script(_SETTLE)
        self._set_if_kept = redis.register_script(_SET_IF_KEPT)

    async def create(
        self,
        job_id: str,
        kind: Kind,
        fields: Mapping[str, str],
        *,
        upload: bytes | None = None,
        max_unfinished: int = 0,
        max_result_bytes: int = 0,
        max_depth: int = 0,
        priority: Priority = "interactive",
        weight: float = 1.0,
    ) -> Created:
        """Write a new job in one step: its record, the bytes it will ingest (they expire with
        the record if nobody takes the job) and its place in its owner's waiting list (with
        the owner's `weight` and the job's `priority`, fair_share.py), handed on to arq's queue
        in the same step if the workers have room. A job is never recorded but not queued,
        nor queued without its record.

        The job counts as unfinished for its owner (`fields["owner"]`) until it ends. Nothing
        is written, and what refused the job is returned, when its lane already holds
        `max_depth` jobs, queued or waiting (`LaneDepth.total`; 0: no bound), the owner has
        `max_unfinished` jobs or `max_result_bytes` of results (results.py; 0: no bound),
        when Valkey's used memory would pass the line below its
        maxmemory (memory.py), or when the upload would take the pending uploads past their
        bound: checked in the same step, so concurrent requests cannot overshoot any of them.
        Raises `StoreFull`, having written nothing, when Valkey is at its memory limit."""
        owner = fields.get("owner", "")
        entry = waiting(job_id, kind, owner, priority, weight)
        status, now = JobStatus.QUEUED, time.time()
        record = record_fields(
            kind=kind, status=status, created_at=now, priority=entry.priority, **fields
        )
        pairs = [item for field in record.items() for item in field]
        fair = fair_context(self._keys, JOB_KINDS[kind].lane, self._fair)
        keys = [self._keys.job(job_id), self._keys.unfinished_jobs(owner)]
        keys += [*self.uploads.script_keys(job_id), *fair.keys, *self.results.script_keys(owner)]
        bound = self.uploads.max_pending_bytes
        has_upload = "1" if upload is not None else ""
        args: list[str | int | float | bytes] = [job_id, self._ttl, max_unfinished, bound]
        args += [has_upload, upload or b"", self._memory_reserve, max_result_bytes]
        args += [*entry.args, *fair.args, max_depth, *pairs]
        if upload is not None and time.monotonic() < self._full_until:
            return "store_full"
        return await self._run_create(keys, args, sends_upload=upload is not None)

    async def _run_create(
        self, keys: list[str], args: list[str | int | float | bytes], *, sends_upload: bool
    ) -> Created:
        """`_CREATE`, an upload's one at a time; Valkey at its memory limit is `StoreFull`."""
        try:
            if not sends_upload:
                created = await self._create(keys=keys, args=args)
            else:
                async with self._sending_upload:
                    created = await self._create(keys=keys, args=args)
        except OutOfMemoryError:
            raise StoreFull(
                "the job store (Valkey) is full, so this job was not accepted; try again once "
                "running jobs have ended and freed memory",
                retry_after=10,
            ) from None
        result: Created = created.decode()
        if result == "store_full":
            self._full_until = time.monotonic() + _FULL_FOR
        return result

    async def get(self, job_id: str) -> JobRecord | None:
        raw: dict[bytes, bytes] = await self._redis.hgetall(self._keys.job(job_id))  # type: ignore[misc]
        return JobRecord.from_hash(job_id, raw) if raw else None

    async def start_attempt(self, job_id: str) -> int:
        """Count a new attempt (arq delivers at least once) and return its number; 0 if the
        job has ended meanwhile. Conditional and atomic, so an ended job never runs again."""
        return int(await self._start_attempt(keys=[self._keys.job(job_id)], args=_ENDED))

    async def settle(
        self, end: JobEnd, *, keep_upload: bool = False, last_step: bool = False
    ) -> Settled:
        """Settle the job's end once, in one step (`_SETTLE`): its result lives `ttl` from
        now, it no longer counts as its owner's unfinished job, the bytes it was given, if
        any, are dropped (or with `keep_upload`, a dead letter's, live as long as its record),
        its outcome is counted, a dead letter added and a failure listed. Safe to repeat:
        'done' if this end was settled before, 'moot' if the job has ended again since (or
        its record is gone), when nothing is written. With `last_step`, nothing is left of
        the end's bookkeeping after this: the end leaves the ending set in the same step."""
        failed = end.outcome in ("failed", "dead_lettered")
        entry = failure_entry(end.job_id, end.reason) if failed else b""
        keys = [self._keys.job(end.job_id), self._keys.events(end.job_id)]
        keys += self.uploads.script_keys(end.job_id)
        keys += [self._keys.job_outcomes, self._keys.dead_letters, self._keys.failures]
        keys.append(self._keys.ending)
        args: list[str | int | bytes] = [self._ttl, end.job_id, self._keys.unfinished_jobs("")]
        args += ["1" if keep_upload else "", end.event_id, end.kind, end.outcome, entry]
        args += [FAILURES_KEPT, *self.results.prefixes(), "1" if last_step else ""]
        settled: bytes = await self._settle(keys=keys, args=args)
        return settled.decode()  # type: ignore[return-value]

    async def reopened(self, job_id: str, owner: str | None) -> None:
        """An ended job runs again (a dead letter requeued): it counts as its owner's
        unfinished job again, beyond the limit if need be (an admin chose to run it)."""
        await self._redis.zadd(self._keys.unfinished_jobs(owner or ""), {job_id: int(time.time())})

    async def request_cancel(self, job_id: str) -> None:
        """Mark a running job for cancelling: its worker, told by store/queue.py's abort,
        ends it cancelled rather than taking the cancel for a stop of its own."""
        await self._redis.hset(self._keys.job(job_id), mapping=record_fields(cancel_requested=True))  # type: ignore[misc]

    async def save_webhook(self, job_id: str, delivery: WebhookDelivery) -> bool:
        """Write the state of the job's webhook delivery; False if the record has expired."""
        value = record_fields(webhook=delivery)["webhook"]
        return bool(await self._set_if_kept(keys=[self._keys.job(job_id)], args=["webhook", value]))

    async def hide(self, job_id: str) -> bool:
        """Mark the job deleted for its readers (DELETE /v1/responses/{id}): its record
        expires with its result's time to live, as any, but is read by nobody meanwhile.
        False if it has expired already."""
        value = record_fields(deleted=True)["deleted"]
        return bool(await self._set_if_kept(keys=[self._keys.job(job_id)], args=["deleted", value]))
