"""A job's webhook in Valkey: its delivery queued when the job ends (each try is written on
the job record's `webhook` field by store/jobs.py: url, state, attempts), and the deliveries
that failed every try, which can be requeued or dropped.

The delivery is an arq job of its own (jobs/webhook.py), on the queue of the job it tells
of: a worker that serves a kind of job delivers its webhooks too (also under arq's CLI, one
queue per process), it survives a worker's crash as any job does, and a question's webhook
does not wait behind a burst of uploads.
"""

from __future__ import annotations

import time
from typing import Any

import structlog
from redis.asyncio import Redis

from rag_async.domain.job import JobRecord, JobStatus, WebhookDelivery
from rag_async.store.jobs import JobStore
from rag_async.store.keys import Keys
from rag_async.store.queue import JobQueue

log = structlog.get_logger(__name__)

DELIVERY_FUNCTION = "deliver_webhook"  # the arq function (workers/settings.py)

EVENTS = {
    JobStatus.COMPLETE: "job.completed",
    JobStatus.FAILED: "job.failed",
    JobStatus.CANCELLED: "job.cancelled",
}


class Webhooks:
    def __init__(self, redis: Redis, keys: Keys, jobs: JobStore, queue: JobQueue) -> None:
        self._redis = redis
        self._keys = keys
        self._jobs = jobs
        self._queue = queue

    async def job_ended(self, record: JobRecord) -> None:
        """Queue the delivery of the webhook of a job that has ended, if it asked for one.

        Safe to repeat: an end's message (its id is the job's and its last event's) is queued
        once, so a job run again after its end (its worker died before queuing this) queues
        what is missing and nothing twice. Never raises: the job's end stands whatever
        becomes of its webhook."""
        if record.webhook is None:
            return  # given when the job was created, or never: no need to read the record
        try:
            await self._queue_delivery(record.job_id)
        except Exception:
            log.exception("could not queue the job's webhook", job_id=record.job_id)

    async def _queue_delivery(self, job_id: str) -> None:
        record = await self._jobs.get(job_id)
        if record is None or record.webhook is None or not record.status.ended:
            return
        message_id = f"msg_{job_id}_{record.seq}"
        if record.webhook.id == message_id:
            return  # queued already
        event = EVENTS[record.status]
        delivery = WebhookDelivery(url=record.webhook.url, id=message_id, event=event)
        if await self._jobs.save_webhook(job_id, delivery):
            await self._queue.put_delivery(DELIVERY_FUNCTION, job_id, message_id, record.kind)

    async def dead_letter(self, job_id: str) -> None:
        await self._redis.zadd(self._keys.webhook_dead_letters, {job_id: time.time()})

    async def requeue(self, job_id: str) -> str | None:
        """Deliver a dead-lettered webhook again, with all its tries, and return its message
        id: the same message, so a receiver that got an earlier try can drop the repeat.
        None if it is no dead letter (requeued or dropped already, or its record expired)."""
        record = await self._jobs.get(job_id)
        delivery = record.webhook if record is not None else None
        if record is None or delivery is None or delivery.id is None:
            await self.drop(job_id)  # an expired record's entry goes with it
            return None
        if not await self.drop(job_id):
            return None
        await self._queue.forget_tries(delivery.id)
        again = delivery.model_copy(update={"state": "pending", "attempts": []})
        if not await self._jobs.save_webhook(job_id, again):
            return None
        await self._queue.put_delivery(DELIVERY_FUNCTION, job_id, delivery.id, record.kind)
        return delivery.id

    async def drop(self, job_id: str) -> bool:
        """Forget a dead-lettered webhook (the delivery stays failed on its job); False if
        there is none."""
        return bool(await self._redis.zrem(self._keys.webhook_dead_letters, job_id))

    async def dead_letters(self, limit: int = 100) -> list[dict[str, Any]]:
        """The newest deliveries that failed every try, with what their records tell;
        expired records are pruned."""
        key = self._keys.webhook_dead_letters
        ids = await self._redis.zrevrange(key, 0, limit - 1, withscores=True)
        entries, expired = [], []
        for raw_id, dead_at in ids:
            job_id = raw_id.decode()
            raw = await self._redis.hget(self._keys.job(job_id), "webhook")  # type: ignore[misc]
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
            await self._redis.zrem(key, *expired)
        return entries
