"""Putting a job on the queue, shared by every accepting route: load shedding, the record
written before the job is enqueued, and the 202's URLs."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, TypeVar

from fastapi import Request

from ..errors import Overloaded
from ..events import StatusEvent
from ..jobrecord import JobRecord, JobStatus, record_fields
from ..queues import Kind
from ..schemas import JobAccepted
from .state import AppState

A = TypeVar("A", bound=JobAccepted)


async def enqueue(
    state: AppState,
    request: Request,
    job_id: str,
    kind: Kind,
    fields: Mapping[str, str],
    *,
    upload: bytes | None = None,
) -> None:
    """Record the job, then enqueue it (a worker may pick it up at once, so record first).
    Refused with 429 when its queue is deeper than this service takes on."""
    depth = await state.queue.depth(kind)
    if depth >= state.settings.max_queue_depth:
        raise Overloaded(
            f"the queue holds {depth} jobs, more than this service takes on; retry shortly",
            retry_after=5,
        )
    fields = {**fields, "request_id": request_id(request, job_id)}
    await state.jobs.create(job_id, kind, fields, upload=upload)
    await state.queue.put(job_id, kind)


# What an X-Request-ID may be to be kept with the job and put on its worker's log lines.
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:/+=-]{1,128}")


def request_id(request: Request, job_id: str) -> str:
    """The client's X-Request-ID, if it is a plain token of at most 128 characters; else the
    job id's first 12 characters, so every job's log lines can be found by one id."""
    given = request.headers.get("x-request-id", "")
    return given if _REQUEST_ID.fullmatch(given) else job_id[:12]


async def enqueue_again(state: AppState, record: JobRecord) -> None:
    """Run an ended job again with all its tries; its event stream continues (the status
    event repeats its latest attempt, so clients keep the text they have until a new one)."""
    job_id = record.job_id
    await state.jobs.forget_tries(job_id)
    queued = JobStatus.QUEUED
    await state.events.append(
        job_id,
        StatusEvent(status=queued, stage="requeued", attempt=record.attempt),
        record_fields(status=queued, stage="requeued", error=None, finished_at=None),
    )
    await state.queue.put(job_id, record.kind)


def accepted(model: type[A], job_id: str, **extra: Any) -> A:
    return model(
        job_id=job_id,
        status_url=f"/job-status?job_id={job_id}",
        events_url=f"/jobs/{job_id}/events",
        **extra,
    )
