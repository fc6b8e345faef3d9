"""The ends of a job, and the transitions that end or reopen one outside a worker's attempt.

Whichever way a job ends (its work done, failed, dead-lettered, cancelled by its worker or
cancelled in the queue by the API), it ends in `ended`: the upload dropped or kept by its
kind's policy (kinds.py), the outcome counted once, the kind's failure hook, the webhook
queued. The API cancels a queued job (`cancel`) and requeues a dead letter (`requeue`) here
too, so both processes end and reopen jobs alike. Nothing here needs a provider: the API
imports it without the worker's clients.

    cancel ── waiting in its queue ── taken off ── `cancelled` event ──► ended
          └── running ─────────────── asked of its worker ─────────────► its lifecycle ends it
    requeue ── counted, tries reset, reopened, `requeued` event, queued; the dead letter cleared
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal

from rag_async.config import Settings
from rag_async.domain.events import CancelledEvent, StatusEvent
from rag_async.domain.job import JobRecord, JobStatus, WebhookDelivery, record_fields
from rag_async.store.activity import RecentFailures
from rag_async.store.dead_letters import DeadLetters
from rag_async.store.documents import DocumentRegistry
from rag_async.store.events import EventLog
from rag_async.store.jobs import JobStore
from rag_async.store.keys import Keys
from rag_async.store.outcomes import JobOutcomes
from rag_async.store.pool import Connection
from rag_async.store.queue import JobQueue
from rag_async.store.uploads import Uploads
from rag_async.store.webhooks import Webhooks
from rag_async.worker.kinds import KIND_POLICIES

Ending = Literal["complete", "failed", "dead_lettered", "cancelled"]


@dataclass(frozen=True, slots=True)
class Ends:
    """The stores an end (or a requeue) of a job writes, held alike by the API's state and
    the worker's services."""

    jobs: JobStore
    events: EventLog
    queue: JobQueue
    outcomes: JobOutcomes  # how jobs ended, counted for /metrics
    webhooks: Webhooks  # a job's webhook queued at its end, and each try recorded
    dead_letters: DeadLetters
    failures: RecentFailures
    registry: DocumentRegistry  # for the document kinds' failure hook

    @classmethod
    def open(cls, redis: Connection, keys: Keys, settings: Settings) -> Ends:
        ttl = settings.result_ttl
        uploads = Uploads(redis, keys, settings.max_pending_upload_bytes)
        reserve = settings.valkey_memory_reserve
        jobs = JobStore(redis, keys, ttl, uploads, memory_reserve=reserve)
        queue = JobQueue(redis, keys)
        return cls(
            jobs=jobs,
            events=EventLog(redis, keys, ttl),
            queue=queue,
            outcomes=JobOutcomes(redis, keys),
            webhooks=Webhooks(redis, keys, jobs, queue),
            dead_letters=DeadLetters(redis, keys),
            failures=RecentFailures(redis, keys),
            registry=DocumentRegistry(redis, keys),
        )


async def ended(ends: Ends, record: JobRecord, outcome: Ending, reason: str = "") -> None:
    """What every end of a job does once its last event is written, whichever the end and
    whoever wrote it: a dead letter kept and a failure listed, the upload dropped (unless its
    kind keeps it for a dead letter's requeue), the outcome counted, the kind's hook for a
    job that did not complete, the webhook queued. Each job end comes here once: the one
    that wrote the last event."""
    job_id = record.job_id
    policy = KIND_POLICIES[record.kind]
    if outcome == "dead_lettered":
        await ends.dead_letters.add(job_id)
    if outcome in ("failed", "dead_lettered"):
        await ends.failures.record(job_id, reason)
    keep = outcome == "dead_lettered" and policy.keeps_upload
    await ends.jobs.ended(job_id, keep_upload=keep)
    await ends.outcomes.count(record.kind, outcome)
    if outcome != "complete" and policy.on_failure is not None:
        await policy.on_failure(ends, record, outcome, reason)
    await ends.webhooks.job_ended(record)


async def cancel(ends: Ends, record: JobRecord) -> Literal["cancelled", "cancelling"]:
    """Cancel a job that has not ended: at once if it waits in its queue (no worker will see
    it, so its end is written here), else by asking its worker, whose lifecycle ends it."""
    job_id = record.job_id
    # Marked first: should the job start meanwhile, its worker reads the cancel as asked.
    await ends.jobs.request_cancel(job_id)
    if not await ends.queue.take_off(job_id, record.kind):
        await ends.queue.abort(job_id)
        return "cancelling"
    event = CancelledEvent(message="cancelled before it started")
    fields = record_fields(status=JobStatus.CANCELLED, stage="cancelled", finished_at=time.time())
    await ends.events.append(job_id, event, fields)
    await ended(ends, record, "cancelled", event.message)
    return "cancelled"


async def requeue(ends: Ends, record: JobRecord) -> None:
    """Run a dead-lettered job again with all its tries; its event stream continues (the
    status event repeats its latest attempt, so clients keep the text they have until a new
    one). Its dead letter is cleared last: a requeue cut short stays requeueable."""
    job_id = record.job_id
    await ends.outcomes.count(record.kind, "requeued")
    await ends.queue.forget_tries(job_id)
    await ends.jobs.reopened(job_id, record.owner)
    queued = JobStatus.QUEUED
    # Its webhook is called again at its next end, with tries of its own.
    webhook = None if record.webhook is None else WebhookDelivery(url=record.webhook.url)
    await ends.events.append(
        job_id,
        StatusEvent(status=queued, stage="requeued", attempt=record.attempt),
        record_fields(
            status=queued, stage="requeued", error=None, finished_at=None, webhook=webhook
        ),
    )
    await ends.queue.put(job_id, record.kind)
    await ends.dead_letters.remove(job_id)


async def forget(ends: Ends, job_id: str) -> bool:
    """Drop a dead letter (its job stays failed) and the upload it kept; False if none."""
    if not await ends.dead_letters.remove(job_id):
        return False
    await ends.jobs.uploads.drop(job_id)
    return True
