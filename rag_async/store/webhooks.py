"""A job's webhook in Valkey: its delivery queued when the job ends, each try written on the
job record (`webhook` field: url, state, attempts), and the deliveries that failed every try.

The delivery is an arq job of its own (jobs/webhook.py), on the queue of the job it tells
of: a worker that serves a kind of job delivers its webhooks too (also under arq's CLI, one
queue per process), it survives a worker's crash as any job does, and a question's webhook
does not wait behind a burst of uploads.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
import structlog
from arq.connections import ArqRedis
from redis.asyncio import Redis

from rag_async.domain.job import JobRecord, JobStatus, WebhookDelivery, record_fields
from rag_async.store.keys import Keys
from rag_async.store.queue import JOB_KINDS

log = structlog.get_logger(__name__)

DELIVERY_FUNCTION = "deliver_webhook"  # the arq function (workers/settings.py)

EVENTS = {
    JobStatus.COMPLETE: "job.completed",
    JobStatus.FAILED: "job.failed",
    JobStatus.CANCELLED: "job.cancelled",
}

# KEYS: job hash. ARGV: the field's new value. A record that has expired stays gone, rather
# than coming back as a hash of one field without a TTL.
_SAVE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'webhook', ARGV[1])
return 1
"""


class Webhooks:
    def __init__(self, redis: Redis, keys: Keys) -> None:
        # The same pool, with arq's enqueue and the workers' (JSON) serializer.
        self._arq = ArqRedis(
            connection_pool=redis.connection_pool,
            job_serializer=orjson.dumps,
            job_deserializer=orjson.loads,
        )
        self._keys = keys
        self._save = self._arq.register_script(_SAVE)

    async def job_ended(self, record: JobRecord) -> None:
        """Queue the delivery of the webhook of a job that has ended, if it asked for one.

        Safe to repeat: an end's message (its id is the job's and its last event's) is queued
        once, so a job run again after its end (its worker died before queuing this) queues
        what is missing and nothing twice. Never raises: the job's end stands whatever
        becomes of its webhook."""
        if record.webhook is None:
            return  # given when the job was created, or never: no need to read the record
        try:
            await self._queue(record.job_id)
        except Exception:
            log.exception("could not queue the job's webhook", job_id=record.job_id)

    async def _queue(self, job_id: str) -> None:
        raw = await self._arq.hgetall(self._keys.job(job_id))  # type: ignore[misc]
        record = JobRecord.from_hash(job_id, raw) if raw else None
        if record is None or record.webhook is None or not record.status.ended:
            return
        message_id = f"msg_{job_id}_{record.seq}"
        if record.webhook.id == message_id:
            return  # queued already
        event = EVENTS[record.status]
        if not await self.save(
            job_id, WebhookDelivery(url=record.webhook.url, id=message_id, event=event)
        ):
            return
        await self._arq.enqueue_job(
            DELIVERY_FUNCTION,
            job_id,
            message_id,
            _job_id=message_id,  # arq queues one job of an id at a time
            _queue_name=self._keys.queue(JOB_KINDS[record.kind].lane),
        )

    async def save(self, job_id: str, delivery: WebhookDelivery) -> bool:
        """Write the delivery's state on the job record; False if the record has expired."""
        value = record_fields(webhook=delivery)["webhook"]
        return bool(await self._save(keys=[self._keys.job(job_id)], args=[value]))

    async def dead_letter(self, job_id: str) -> None:
        await self._arq.zadd(self._keys.webhook_dead_letters, {job_id: time.time()})

    async def dead_letters(self, limit: int = 100) -> list[dict[str, Any]]:
        """The newest deliveries that failed every try, with what their records tell;
        expired records are pruned."""
        key = self._keys.webhook_dead_letters
        ids = await self._arq.zrevrange(key, 0, limit - 1, withscores=True)
        entries, expired = [], []
        for raw_id, dead_at in ids:
            job_id = raw_id.decode()
            raw = await self._arq.hget(self._keys.job(job_id), "webhook")  # type: ignore[misc]
            if not raw:
                expired.append(job_id)
                continue
            delivery = WebhookDelivery.model_validate_json(raw)
            last = delivery.attempts[-1] if delivery.attempts else None
            entries.append(
                {
                    "job_id": job_id,
                    "url": delivery.url,
                    "event": delivery.event,
                    "attempts": len(delivery.attempts),
                    "error": last.error if last else None,
                    "dead_lettered_at": dead_at,
                }
            )
        if expired:
            await self._arq.zrem(key, *expired)
        return entries
