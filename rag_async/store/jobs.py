"""The job record in Redis: one hash per job (domain/job.py says what it holds), the upload
waiting for an ingestion job, and each owner's unfinished jobs (the per-key limit on them).

This is the one writer of a job's hash outside the event log, whose Lua script updates fields
in the same step that appends an event (store/events.py): creation, attempts, the end, a
cancel asked of a running job, a requeue, and the state of the job's webhook. The record
expires with the result. arq's keys are store/queue.py's alone.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from redis.asyncio import Redis

from rag_async.domain.job import JobRecord, JobStatus, WebhookDelivery, record_fields
from rag_async.store.keys import Keys
from rag_async.store.queue import Kind

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

# KEYS: job hash, the owner's unfinished jobs, the upload. ARGV: job id, ttl, the owner's limit
# (0: none), '1' if there is an upload, the upload, then the record's fields and values.
# Returns 0, writing nothing, when the owner is at the limit.
_CREATE = """
local ttl = tonumber(ARGV[2])
local now = tonumber(redis.call('TIME')[1])
-- A job still unfinished a result's life after it was created has lost its record (which
-- expires then unless the job ended) and will never end: it no longer counts.
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - ttl)
local limit = tonumber(ARGV[3])
if limit > 0 and redis.call('ZCARD', KEYS[2]) >= limit then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 6))
redis.call('EXPIRE', KEYS[1], ttl)
if ARGV[4] == '1' then redis.call('SET', KEYS[3], ARGV[5], 'EX', ttl) end
redis.call('ZADD', KEYS[2], now, ARGV[1])
return 1
"""

# KEYS: job hash, its events, its upload. ARGV: ttl, job id, the prefix of the owners'
# unfinished-job sets (the owner is read from the record, so no caller can name another),
# '1' to drop the upload (else it lives as long as the record: a dead letter's requeue reads it).
_END = """
redis.call('EXPIRE', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[2], ARGV[1])
if ARGV[4] == '1' then redis.call('DEL', KEYS[3]) else redis.call('EXPIRE', KEYS[3], ARGV[1]) end
redis.call('ZREM', ARGV[3] .. (redis.call('HGET', KEYS[1], 'owner') or ''), ARGV[2])
"""

# KEYS: job hash. ARGV: the field's new value. A record that has expired stays gone, rather
# than coming back as a hash of one field without a TTL.
_SAVE_WEBHOOK = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'webhook', ARGV[1])
return 1
"""


class JobStore:
    def __init__(self, redis: Redis, keys: Keys, ttl: int) -> None:
        self._redis = redis
        self._keys = keys
        self._ttl = ttl
        self._start_attempt = redis.register_script(_START_ATTEMPT)
        self._create = redis.register_script(_CREATE)
        self._end = redis.register_script(_END)
        self._save_webhook = redis.register_script(_SAVE_WEBHOOK)

    async def create(
        self,
        job_id: str,
        kind: Kind,
        fields: Mapping[str, str],
        *,
        upload: bytes | None = None,
        max_unfinished: int = 0,
    ) -> bool:
        """Write a new queued job's record (and the bytes it will ingest); must happen before
        the job is enqueued. The upload expires with the job if nobody takes it.

        The job counts as unfinished for its owner (`fields["owner"]`) until it ends; with
        `max_unfinished`, nothing is written and False returned when the owner already has
        that many (one atomic step, so concurrent requests cannot overshoot it)."""
        owner = fields.get("owner", "")
        record = record_fields(kind=kind, status=JobStatus.QUEUED, created_at=time.time(), **fields)
        pairs = [item for field in record.items() for item in field]
        keys = [self._keys.job(job_id), self._keys.unfinished_jobs(owner)]
        keys.append(self._keys.upload(job_id))
        has_upload = "1" if upload is not None else ""
        head: list[str | int | bytes] = [job_id, self._ttl, max_unfinished, has_upload]
        return bool(await self._create(keys=keys, args=[*head, upload or b"", *pairs]))

    async def get(self, job_id: str) -> JobRecord | None:
        raw: dict[bytes, bytes] = await self._redis.hgetall(self._keys.job(job_id))  # type: ignore[misc]
        return JobRecord.from_hash(job_id, raw) if raw else None

    async def start_attempt(self, job_id: str) -> int:
        """Count a new attempt (arq delivers at least once) and return its number; 0 if the
        job has ended meanwhile. Conditional and atomic, so an ended job never runs again."""
        return int(await self._start_attempt(keys=[self._keys.job(job_id)], args=_ENDED))

    async def ended(self, job_id: str, *, drop_upload: bool = True) -> None:
        """The job has ended, however: its result lives `ttl` from now, the bytes it was
        given, if any, are dropped at once (unless its kind keeps them, worker/kinds.py), and
        it no longer counts as its owner's unfinished job. Safe to repeat."""
        keys = [self._keys.job(job_id), self._keys.events(job_id), self._keys.upload(job_id)]
        drop = "1" if drop_upload else ""
        await self._end(keys=keys, args=[self._ttl, job_id, self._keys.unfinished_jobs(""), drop])

    async def drop_upload(self, job_id: str) -> None:
        """Drop the bytes a job kept past its end (a dead letter forgotten)."""
        await self._redis.delete(self._keys.upload(job_id))

    async def request_cancel(self, job_id: str) -> None:
        """Mark a running job for cancelling: its worker, told by store/queue.py's abort,
        ends it cancelled rather than taking the cancel for a stop of its own."""
        await self._redis.hset(self._keys.job(job_id), mapping=record_fields(cancel_requested=True))  # type: ignore[misc]

    async def save_webhook(self, job_id: str, delivery: WebhookDelivery) -> bool:
        """Write the state of the job's webhook delivery; False if the record has expired."""
        value = record_fields(webhook=delivery)["webhook"]
        return bool(await self._save_webhook(keys=[self._keys.job(job_id)], args=[value]))

    async def reopened(self, job_id: str, owner: str | None) -> None:
        """An ended job runs again (a dead letter requeued): it counts as its owner's
        unfinished job again, beyond the limit if need be (an admin chose to run it)."""
        await self._redis.zadd(self._keys.unfinished_jobs(owner or ""), {job_id: int(time.time())})

    async def upload(self, job_id: str) -> bytes | None:
        """The bytes an ingestion job was given, while they have not expired."""
        content: bytes | None = await self._redis.get(self._keys.upload(job_id))
        return content
