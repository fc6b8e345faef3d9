"""The ends of a job, and the transitions that end or reopen one outside a worker's attempt.

Whichever way a job ends (its work done, failed, dead-lettered, cancelled by its worker or
cancelled in the queue by the API), its last event gives its outcome, and in the same step
puts its end in the ending set (store/ending.py); then `ended` does its bookkeeping: the
upload dropped or kept by its kind's policy (kinds.py), the outcome counted, a dead letter
kept and a failure listed (all once, in one step), the kind's failure hook, the webhook
queued, and last the end leaves the ending set. A process killed in between leaves the end
there, and whoever finds it finishes it (`settle`): a worker that arq hands the ended job
again, or any worker's heartbeat once it is older than a grace (`settle_stale`). Every part
is once-only or safe to repeat. The API cancels a queued job (`cancel`) and requeues a dead
letter (`requeue`) here too, so both processes end and reopen jobs alike. Nothing here needs
a provider: the API imports it without the worker's clients.

    cancel ── waiting in its queue ── one step: taken off, `cancelled` event, ending ──► ended
          └── running ─────────────── asked of its worker ────────► its lifecycle ends it
                                      (dropped by arq before it started: `cancel_dropped`)
    requeue ── counted, tries reset, reopened, `requeued` event, queued; the dead letter cleared
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import Literal

import structlog

from rag_async.config import Settings
from rag_async.domain.events import CancelledEvent, ErrorEvent, StatusEvent, decode_event
from rag_async.domain.job import Ending, JobRecord, JobStatus, WebhookDelivery, record_fields
from rag_async.store.conversations import Conversations
from rag_async.store.dead_letters import DeadLetters
from rag_async.store.documents import DocumentRegistry
from rag_async.store.ending import EndingJobs
from rag_async.store.events import EventLog, Superseded
from rag_async.store.fair_share import FairSettings
from rag_async.store.jobs import JobEnd, JobStore
from rag_async.store.keys import Keys
from rag_async.store.outcomes import JobOutcomes
from rag_async.store.pool import Connection
from rag_async.store.queue import JobQueue
from rag_async.store.uploads import Uploads
from rag_async.store.webhooks import Webhooks
from rag_async.worker.kinds import KIND_POLICIES

log = structlog.get_logger(__name__)

# How many stale ends one heartbeat settles: a backlog drains over a few beats, and no beat
# is held up for long.
SETTLE_BATCH = 20


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
    registry: DocumentRegistry  # for the document kinds' failure hook
    ending: EndingJobs  # the ends whose bookkeeping is not done yet
    # A question's end keeps an interrupted turn, and lets the next question start
    # (worker/answering.py).
    conversations: Conversations

    @classmethod
    def open(cls, redis: Connection, keys: Keys, settings: Settings) -> Ends:
        ttl = settings.result_ttl
        uploads = Uploads(redis, keys, settings.max_pending_upload_bytes)
        reserve = settings.valkey_memory_reserve
        fair = FairSettings(
            running_cap=settings.max_running_jobs_per_key,
            background_share=settings.background_share,
            dead_after=settings.worker_dead_after,
        )
        jobs = JobStore(redis, keys, ttl, uploads, memory_reserve=reserve, fair=fair)
        queue = JobQueue(redis, keys, fair)
        return cls(
            jobs=jobs,
            events=EventLog(redis, keys, ttl),
            queue=queue,
            outcomes=JobOutcomes(redis, keys),
            webhooks=Webhooks(redis, keys, jobs, queue),
            dead_letters=DeadLetters(redis, keys),
            registry=DocumentRegistry(redis, keys),
            ending=EndingJobs(redis, keys),
            conversations=Conversations(redis, keys, ttl),
        )


class HoldsEnds:
    """The stores of an `Ends`, by their own names, for what holds one (the API's state, a
    worker's services)."""

    __slots__ = ()
    ends: Ends

    @property
    def jobs(self) -> JobStore:
        return self.ends.jobs

    @property
    def events(self) -> EventLog:
        return self.ends.events

    @property
    def queue(self) -> JobQueue:
        return self.ends.queue

    @property
    def dead_letters(self) -> DeadLetters:
        return self.ends.dead_letters

    @property
    def outcomes(self) -> JobOutcomes:
        return self.ends.outcomes

    @property
    def registry(self) -> DocumentRegistry:
        return self.ends.registry

    @property
    def webhooks(self) -> Webhooks:
        return self.ends.webhooks

    @property
    def uploads(self) -> Uploads:
        return self.ends.jobs.uploads


async def ended(
    ends: Ends, record: JobRecord, outcome: Ending, reason: str = "", *, event_id: int
) -> None:
    """What every end of a job does once its last event (`event_id`) is written, whichever
    the end and whoever wrote it: in one step and once, the upload dropped (unless its kind
    keeps it for a dead letter's requeue), the outcome counted, a dead letter kept and a
    failure listed; then the kind's hook for a job that did not complete and the webhook
    (both safe to repeat); then a question leaves its conversation's answering set (after
    its hook kept an interrupted turn, so the next question's history holds it); last, the
    end leaves the ending set. Run again after a crash at any point, it does what is left
    and nothing twice."""
    policy = KIND_POLICIES[record.kind]
    keep = outcome == "dead_lettered" and policy.keeps_upload
    end = JobEnd(record.job_id, record.kind, outcome, event_id, reason)
    hook = policy.on_failure if outcome != "complete" else None
    # With nothing to do after the settle, the end leaves the ending set in its step.
    last = hook is None and record.webhook is None and record.conversation_id is None
    if await ends.jobs.settle(end, keep_upload=keep, last_step=last) != "moot":
        if hook is not None:
            await hook(ends, record, outcome, reason)
        await ends.webhooks.job_ended(record)
    if record.conversation_id is not None:
        await ends.conversations.finished(record.conversation_id, record.job_id)
    if not last:
        await ends.ending.settled(record.job_id, event_id)


async def settle(ends: Ends, record: JobRecord) -> None:
    """Finish the end of an ended job from its record (how it ended, why), whatever of it is
    left: a worker that arq hands the job again after its end, or a heartbeat that found the
    end unsettled. A job that ended before its outcome was recorded has only its webhook to
    make sure of."""
    if record.outcome is None:
        await ends.webhooks.job_ended(record)
        return
    reason = await _reason(ends, record)
    await ended(ends, record, record.outcome, reason, event_id=record.seq)


async def _reason(ends: Ends, record: JobRecord) -> str:
    """Why the job ended as it did: its error, or what its last event says (a cancel)."""
    if record.error or record.outcome == "complete":
        return record.error or ""
    logged = await ends.events.replay(record.job_id, after=record.seq - 1)
    last = decode_event(logged[-1].data) if logged else None
    return last.message if isinstance(last, CancelledEvent | ErrorEvent) else ""


async def settle_stale(ends: Ends, grace: float, batch: int = SETTLE_BATCH) -> int:
    """Settle the ends left unsettled for longer than `grace` seconds (their process died
    between the last event and the end of `ended`), the oldest `batch` of them; return how
    many were settled. Called on every worker's heartbeat: it catches the ends no worker will
    run again (a queued job cancelled by an API process that died). Never raises for one
    end: the others still settle, and it is tried again at the next beat."""
    settled = 0
    for job_id, event_id in await ends.ending.stale(grace, batch):
        try:
            record = await ends.jobs.get(job_id)
            if record is None or record.seq != event_id or not record.status.ended:
                await ends.ending.settled(job_id, event_id)  # expired, or ended again since
                continue
            await settle(ends, record)
            settled += 1
        except Exception:
            log.exception("could not settle the job's end", job_id=job_id)
            with contextlib.suppress(Exception):
                await ends.ending.postpone(job_id, event_id)
    if settled:
        log.warning("job ends left unsettled by their process settled", count=settled)
    return settled


async def cancel(ends: Ends, record: JobRecord) -> Literal["cancelled", "cancelling"]:
    """Cancel a job that has not ended: at once if it waits in its queue (no worker will see
    it, so its end is written here, in one step with its take-off), else by asking its
    worker, whose lifecycle ends it."""
    job_id = record.job_id
    # Marked first: should the job start meanwhile, its worker reads the cancel as asked.
    await ends.jobs.request_cancel(job_id)
    event_id = await cancel_waiting(ends, record)
    if not event_id:
        await ends.queue.abort(job_id, record.kind)
        return "cancelling"
    await ended(ends, record, "cancelled", CANCELLED_WAITING.message, event_id=event_id)
    return "cancelled"


CANCELLED_WAITING = CancelledEvent(message="cancelled before it started")


async def cancel_waiting(ends: Ends, record: JobRecord) -> int:
    """End a job that waits in its queue, cancelled, in one step (store/events.py): taken
    off arq's queue, its `cancelled` event and status, its end in the ending set. Returns
    the event's id; 0, having written nothing, if a worker holds the job or it has ended.
    A process that dies after it leaves the end to a worker's heartbeat (`settle_stale`)."""
    fields = record_fields(
        status=JobStatus.CANCELLED, stage="cancelled", finished_at=time.time(), outcome="cancelled"
    )
    return await ends.events.cancel_queued(record.job_id, record.kind, CANCELLED_WAITING, fields)


async def cancel_dropped(ends: Ends, job_id: str) -> None:
    """End, cancelled, a job whose run arq dropped before calling its function because a
    cancel was asked: the API found the job just taken by a worker (its in-progress key set)
    and asked arq to abort it, and arq read the abort before starting it ("aborted before
    start"). No attempt ran, so none will end it. Nothing for a job that has ended or whose
    cancel was not asked."""
    record = await ends.jobs.get(job_id)
    if record is None or record.status.ended or not record.cancel_requested:
        return
    fields = record_fields(
        status=JobStatus.CANCELLED, stage="cancelled", finished_at=time.time(), outcome="cancelled"
    )
    try:
        event_id = await ends.events.append(job_id, CANCELLED_WAITING, fields)
    except Superseded:
        return  # it ended meanwhile, and that end is another's
    await ended(ends, record, "cancelled", CANCELLED_WAITING.message, event_id=event_id)


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
        # No outcome: the job has not ended (again) yet.
        record_fields(
            status=queued,
            stage="requeued",
            error=None,
            finished_at=None,
            outcome=None,
            webhook=webhook,
        ),
    )
    await ends.queue.put(job_id, record.kind, record.owner, record.priority)
    await ends.dead_letters.remove(job_id)


async def forget(ends: Ends, job_id: str) -> bool:
    """Drop a dead letter (its job stays failed) and the upload it kept; False if none."""
    if not await ends.dead_letters.remove(job_id):
        return False
    await ends.jobs.uploads.drop(job_id)
    return True
