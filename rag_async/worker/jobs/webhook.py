"""The arq job that delivers a job's webhook (rag_async/webhooks/): one try per run, retried
with the jobs' backoff on what another try may mend, dead-lettered after the last.

It runs after the job has ended, on the job's own queue, and changes nothing of the job but
its `webhook` field: whatever becomes of the delivery, the job's outcome stands.

Tries are counted by what the record holds, not by arq's count of runs: a worker killed
after the receiver answered but before the answer was recorded leaves a run that counts for
arq and not for us, and the next run sends the message again (the same `webhook-id`, which
receivers dedupe) rather than give up on a delivery that may well have arrived. arq's own
limit sits far beyond, a backstop for runs that keep being lost (`lost_runs_limit`).
"""

from __future__ import annotations

import time
from typing import Literal

import structlog
from arq import Retry

from rag_async.domain.job import JobRecord, WebhookAttempt, WebhookDelivery
from rag_async.providers.retry import backoff
from rag_async.webhooks import payload
from rag_async.worker.services import Services, WorkerContext

log = structlog.get_logger(__name__)

# A receiver's Retry-After is honoured up to this many seconds; beyond, the tries would
# outlive the job's record.
_LONGEST_WAIT = 600.0

# Runs lost with their workers that a delivery survives, beyond its recorded tries.
_LOST_RUNS = 10


def lost_runs_limit(max_tries: int) -> int:
    """The runs after which a delivery whose tries keep going unrecorded gives up; arq's
    max_tries is one more, so that this, not arq, ends it (worker/process.py)."""
    return max_tries + _LOST_RUNS


async def deliver_webhook(ctx: WorkerContext, job_id: str, message_id: str) -> None:
    services = ctx["services"]
    with structlog.contextvars.bound_contextvars(job_id=job_id, webhook_id=message_id):
        record = await services.jobs.get(job_id)
        delivery = record.webhook if record is not None else None
        if record is None or delivery is None or delivery.id != message_id:
            return  # expired, or the message of an earlier end (the job was requeued since)
        if delivery.state != "pending":
            return  # settled already: arq may run a job twice
        await _try(services, record, delivery, ctx.get("job_try", 1))


async def _try(
    services: Services, record: JobRecord, delivery: WebhookDelivery, job_try: int
) -> None:
    max_tries = services.settings.webhook_max_tries
    courier = services.courier
    # This try's number, by the tries recorded: a run lost before recording its try (its
    # worker killed, maybe after the receiver answered) does not count, and the message is
    # sent again.
    try_number = len(delivery.attempts) + 1
    reason = _give_up(courier is not None, try_number, job_try, max_tries)
    if courier is None or reason is not None:
        attempt = WebhookAttempt(at=time.time(), error=f"gave up: {reason}")
        await _settle(services, record.job_id, delivery, attempt, "failed", dead_letter=True)
        return
    body = payload(record, delivery.event or "job.ended")
    sent = await courier.send(delivery.url, delivery.id or "", body)
    if sent.delivered:
        await _settle(services, record.job_id, delivery, sent.attempt, "delivered")
        return
    if sent.retryable and try_number < max_tries:
        await _settle(services, record.job_id, delivery, sent.attempt, "pending")
        wait = None if sent.retry_after is None else min(sent.retry_after, _LONGEST_WAIT)
        defer = backoff(try_number, wait)
        log.warning("webhook not delivered, will retry", error=sent.attempt.error, defer=defer)
        raise Retry(defer=defer)
    await _settle(
        services, record.job_id, delivery, sent.attempt, "failed", dead_letter=sent.retryable
    )


def _give_up(has_secret: bool, try_number: int, job_try: int, max_tries: int) -> str | None:
    """Why this run must not try at all, if it must not."""
    if not has_secret:
        return "no RAG_WEBHOOK_SECRET"
    if try_number > max_tries:
        return f"{max_tries} tries spent"
    if job_try > lost_runs_limit(max_tries):
        return "the workers delivering it were lost"
    return None


async def _settle(
    services: Services,
    job_id: str,
    delivery: WebhookDelivery,
    attempt: WebhookAttempt,
    state: Literal["pending", "delivered", "failed"],
    *,
    dead_letter: bool = False,
) -> None:
    """Record the try on the job, and the delivery's new state."""
    update = {"attempts": [*delivery.attempts, attempt], "state": state}
    await services.jobs.save_webhook(job_id, delivery.model_copy(update=update))
    if dead_letter:
        await services.webhooks.dead_letter(job_id)
    if state == "delivered":
        log.info("webhook delivered", status=attempt.status, tries=len(delivery.attempts) + 1)
    elif state == "failed":
        log.error("webhook failed", error=attempt.error, dead_lettered=dead_letter)
