"""Putting a job on the queue, shared by every accepting route: load shedding, the record
written before the job is enqueued, and the 202's URLs."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from fastapi import Request

from rag_async.api.quotas import held_to_quotas
from rag_async.api.state import AppState
from rag_async.domain.errors import LimitReached, Overloaded, RagError, StoreFull
from rag_async.domain.identity import Principal
from rag_async.domain.schemas import JobAccepted
from rag_async.store.fair_share import Priority
from rag_async.store.jobs import Created
from rag_async.store.queue import Kind
from rag_async.tracing import traceparent_for_job
from rag_async.webhooks import webhook_fields

A = TypeVar("A", bound=JobAccepted)


@dataclass(frozen=True, slots=True)
class Submission:
    """A request that submits jobs: the API's state, the request itself, who sent it, and
    the webhook its jobs call when they end (RAG_WEBHOOK_URL, if any, when it names none)."""

    state: AppState
    request: Request
    caller: Principal
    webhook_url: str | None = None
    priority: Priority = "interactive"  # whether a client waits for its jobs (fair_share.py)

    def accepted(self, model: type[A], job_id: str, **extra: Any) -> A:
        return accepted(self.state, model, job_id, self.caller.name, **extra)


async def enqueue(
    submission: Submission,
    job_id: str,
    kind: Kind,
    fields: Mapping[str, str],
    *,
    upload: bytes | None = None,
) -> None:
    """Record the job and put it on its queue, in one step (jobs.py), or refuse it: 429 when
    its queue is deeper than this service takes on, when the caller has as many unfinished
    jobs, or bytes of stored results (store/results.py), as a key may, or when uploads
    waiting for workers already hold their bound; 507 when Valkey is nearly full
    (store/memory.py). All are checked in the step that creates the job, and a refused job
    leaves nothing behind.

    The per-key limit sits below the queue's, so one key flooding the queue is refused before
    it fills the queue for everybody; the job then waits in its key's list, and the keys with
    jobs waiting take turns at the workers (store/fair_share.py)."""
    state, caller = submission.state, submission.caller
    webhook = webhook_fields(state.settings, submission.webhook_url)  # 400 before all else
    held = held_to_quotas(caller)
    limit = state.settings.max_unfinished_jobs_per_key if held else 0
    result_bytes = state.settings.max_result_bytes_per_key if held else 0
    created = await state.jobs.create(
        job_id,
        kind,
        {**fields, **webhook, **_request_fields(submission, job_id)},
        upload=upload,
        max_unfinished=limit,
        max_result_bytes=result_bytes,
        max_depth=state.settings.max_queue_depth,
        priority=submission.priority,
        weight=caller.weight,
    )
    if created == "too_many_result_bytes":
        freed_in = await state.jobs.results.seconds_until_freed(caller.name)
        raise LimitReached(
            f"this key's results already hold {result_bytes} bytes, as many as a key keeps; "
            "retry when older results have expired",
            code="too_many_result_bytes",
            retry_after=freed_in,
        )
    if created != "created":
        raise _refusal(created, state, limit)


def _request_fields(submission: Submission, job_id: str) -> dict[str, str]:
    """What a job keeps of the request that submitted it: its id, its owner, its trace."""
    request = submission.request
    fields = {"request_id": request_id(request, job_id), "owner": submission.caller.name}
    if traceparent := traceparent_for_job(request.headers.get("traceparent")):
        fields["traceparent"] = traceparent  # the worker's spans join the request's trace
    return fields


def _refusal(why: Created, state: AppState, limit: int) -> RagError:
    """The error for a job that `JobStore.create` refused, and why."""
    if why == "queue_full":
        return Overloaded(
            f"the queue holds {state.settings.max_queue_depth} jobs or more, more than this "
            "service takes on; retry shortly",
            retry_after=5,
        )
    if why == "too_many_jobs":
        return LimitReached(
            f"this key has {limit} unfinished jobs, as many as a key may; retry when some "
            "have ended",
            code="too_many_jobs",
            retry_after=5,  # when one ends is not known; a question takes seconds
        )
    if why == "store_full":
        return StoreFull(
            "the job store (Valkey) is nearly full, so new work is not accepted while the jobs "
            "already accepted finish and free memory; try again shortly",
            retry_after=10,
        )
    # A backlog that drains by itself as workers ingest, like a deep queue: a 429 to retry,
    # not the 507 of a store that needs old results to expire.
    return Overloaded(
        f"uploads waiting for ingestion already hold {state.uploads.max_pending_bytes} bytes, "
        "as many as this service keeps; retry once some are ingested",
        retry_after=10,
        code="uploads_pending",
    )


# What an X-Request-ID may be to be kept with the job and put on its worker's log lines.
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:/+=-]{1,128}")


def request_id(request: Request, job_id: str) -> str:
    """The client's X-Request-ID, if it is a plain token of at most 128 characters; else the
    job id's first 12 characters, so every job's log lines can be found by one id."""
    given = request.headers.get("x-request-id", "")
    return given if _REQUEST_ID.fullmatch(given) else job_id[:12]


def accepted(state: AppState, model: type[A], job_id: str, owner: str | None, **extra: Any) -> A:
    return model(
        job_id=job_id,
        status_url=f"/job-status?job_id={job_id}",
        events_url=events_url(state, job_id, owner),
        **extra,
    )


def events_url(state: AppState, job_id: str, owner: str | None) -> str:
    """Where to follow the job, with a token that lets EventSource (which cannot send a key)
    in, when the API has keys."""
    url = f"/jobs/{job_id}/events"
    if not state.keyring.enabled:
        return url
    return f"{url}?token={state.tokens.issue(job_id, owner or '')}"
