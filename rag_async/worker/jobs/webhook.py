"""The arq job that delivers a job's webhook (rag_async/webhooks/): one try per run, retried
with the jobs' backoff on what another try may mend, dead-lettered after the last.

It runs after the job has ended, on the job's own queue, and changes nothing of the job but
its `webhook` field: whatever becomes of the delivery, the job's outcome stands.
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
    if courier is None or job_try > max_tries:
        # arq counts every start: tries spent without an attempt recorded were lost with
        # their workers.
        reason = "the workers delivering it were lost" if courier else "no RAG_WEBHOOK_SECRET"
        attempt = WebhookAttempt(at=time.time(), error=f"gave up: {reason}")
        await _settle(services, record.job_id, delivery, attempt, "failed", dead_letter=True)
        return
    body = payload(record, delivery.event or "job.ended")
    sent = await courier.send(delivery.url, delivery.id or "", body)
    if sent.delivered:
        await _settle(services, record.job_id, delivery, sent.attempt, "delivered")
        return
    if sent.retryable and job_try < max_tries:
        await _settle(services, record.job_id, delivery, sent.attempt, "pending")
        wait = None if sent.retry_after is None else min(sent.retry_after, _LONGEST_WAIT)
        defer = backoff(job_try, wait)
        log.warning("webhook not delivered, will retry", error=sent.attempt.error, defer=defer)
        raise Retry(defer=defer)
    await _settle(
        services, record.job_id, delivery, sent.attempt, "failed", dead_letter=sent.retryable
    )


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
    await services.webhooks.save(job_id, delivery.model_copy(update=update))
    if dead_letter:
        await services.webhooks.dead_letter(job_id)
    if state == "delivered":
        log.info("webhook delivered", status=attempt.status, tries=len(delivery.attempts) + 1)
    elif state == "failed":
        log.error("webhook failed", error=attempt.error, dead_lettered=dead_letter)
