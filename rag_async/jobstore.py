"""The job record: one Redis hash per job, the answer to "where is my job?".

Fields are plain strings (JSON for the structured ones) so that the event log's Lua script can
update them in the same atomic step that appends an event. The record expires with the result.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Mapping
from typing import Any

import orjson
from arq.constants import abort_jobs_ss, in_progress_key_prefix, job_key_prefix
from redis.asyncio import Redis

from .keys import Keys

# 128 random bits as 32 hex characters: unguessable, and easy to tell from anything else.
_JOB_ID = re.compile(r"[0-9a-f]{32}")


def new_job_id() -> str:
    return secrets.token_hex(16)


def is_job_id(value: str) -> bool:
    return _JOB_ID.fullmatch(value) is not None


class JobRecord:
    """A decoded view of the hash; missing fields read as their empty value."""

    def __init__(self, job_id: str, raw: Mapping[bytes, bytes]) -> None:
        self.job_id = job_id
        self._raw = {k.decode(): v.decode() for k, v in raw.items()}

    def text(self, field: str) -> str | None:
        return self._raw.get(field)

    def number(self, field: str) -> float | None:
        value = self._raw.get(field)
        return float(value) if value else None

    def json(self, field: str) -> Any:
        value = self._raw.get(field)
        return orjson.loads(value) if value else None

    @property
    def kind(self) -> str:
        return self._raw.get("kind", "chat")

    @property
    def status(self) -> str:
        return self._raw.get("status", "queued")

    @property
    def attempt(self) -> int:
        return int(self._raw.get("attempt", "0"))

    @property
    def last_event_id(self) -> int:
        return int(self._raw.get("seq", "0"))


class JobStore:
    def __init__(self, redis: Redis, keys: Keys, ttl: int) -> None:
        self._redis = redis
        self._keys = keys
        self._ttl = ttl

    async def create(self, job_id: str, kind: str, fields: Mapping[str, str]) -> None:
        """Write a new queued job's record; must happen before the job is enqueued."""
        key = self._keys.job(job_id)
        record = {"kind": kind, "status": "queued", "created_at": f"{time.time():.6f}", **fields}
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping=record)
            pipe.expire(key, self._ttl)
            await pipe.execute()

    async def get(self, job_id: str) -> JobRecord | None:
        raw: dict[bytes, bytes] = await self._redis.hgetall(self._keys.job(job_id))  # type: ignore[misc]
        return JobRecord(job_id, raw) if raw else None

    async def start_attempt(self, job_id: str) -> int:
        """Count a new attempt (arq delivers at least once) and return its number."""
        attempt = await self._redis.hincrby(self._keys.job(job_id), "attempt", 1)  # type: ignore[misc]
        return int(attempt)

    async def keep(self, job_id: str) -> None:
        """Restart the record's and the log's TTL, so a finished result lives `ttl` from now."""
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.expire(self._keys.job(job_id), self._ttl)
            pipe.expire(self._keys.events(job_id), self._ttl)
            await pipe.execute()


# KEYS: arq queue, arq's in-progress key of the job, job record. ARGV: job id.
# Atomic, so a worker cannot start the job between the check and the removal; a worker that
# read the queue just before still finds the record cancelled and does nothing.
_CANCEL_QUEUED = """
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
if redis.call('ZREM', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('HSET', KEYS[3], 'status', 'cancelled')
return 1
"""


class Cancellation:
    """Cancel a job: take it off the queue if no worker has it, else ask its worker to abort."""

    def __init__(self, redis: Redis, keys: Keys) -> None:
        self._redis = redis
        self._keys = keys
        self._cancel_queued = redis.register_script(_CANCEL_QUEUED)

    async def cancel_queued(self, job_id: str, queue: str) -> bool:
        """True if the job was waiting in `queue` and is now off it, marked cancelled."""
        keys = [queue, in_progress_key_prefix + job_id, self._keys.job(job_id)]
        if not await self._cancel_queued(keys=keys, args=[job_id]):
            return False
        await self._redis.delete(job_key_prefix + job_id)  # arq's copy of the job's arguments
        return True

    async def abort_running(self, job_id: str) -> None:
        """Mark the cancellation as asked for, and have the running worker cancel the task."""
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(self._keys.job(job_id), "cancel_requested", "1")
            # The set arq's workers (allow_abort_jobs) read at every poll to cancel tasks.
            pipe.zadd(abort_jobs_ss, {job_id: int(time.time() * 1000)})
            await pipe.execute()


def dumps(value: Any) -> str:
    """JSON for a record field."""
    return orjson.dumps(value).decode()
