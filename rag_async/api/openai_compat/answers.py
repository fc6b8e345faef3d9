"""The /v1 routes' side of a job: the caller's answer job by id, and waiting for its end.

Waiting reads the job's events the way its SSE stream does (api/stream.py's `follow_job`), so
a client that waits for a whole answer and one that streams it are told of the end at the same
moment, and the wait holds one of the key's stream slots like a stream.
"""

from __future__ import annotations

import asyncio
import contextlib

from rag_async.api.openai_compat.wire import job_id_of
from rag_async.api.state import AppState
from rag_async.api.stream import follow_job
from rag_async.domain.errors import NotFound, RagError
from rag_async.domain.identity import Principal
from rag_async.domain.job import JobRecord


class StillRunning(RagError):
    """The answer did not end within the wait: the job goes on, and can be followed."""

    status_code = 504
    code = "still_running"


async def owned_answer(state: AppState, caller: Principal, given_id: str) -> JobRecord:
    """The caller's question job named by a response or job id: another key's, a document
    job, or an unknown or expired id is not found, all alike."""
    job_id = job_id_of(given_id)
    record = None if job_id is None else await state.jobs.get(job_id)
    if record is None or record.kind != "answer" or not caller.may_see(record.owner):
        raise NotFound(f"no response {given_id[:80]!r}: it never existed, or has expired")
    return record


def wait_limit(state: AppState) -> float:
    """How long a client may wait for a whole answer: every try of the job at its longest."""
    settings = state.settings
    return settings.question_timeout * settings.job_max_tries


async def wait_for_end(
    state: AppState, caller: Principal, job_id: str, limit: float, *, counted: bool = True
) -> JobRecord | None:
    """The job's record once it has ended, or None if it has not within `limit` seconds.
    Unless `counted` is False (a short wait that must not be refused), the wait holds one of
    the caller's stream slots."""
    record = await state.jobs.get(job_id)
    if record is None or record.status.ended:
        return record
    release = state.streams.take(caller.name, limited=counted)
    try:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(limit):
                # From the record's latest event: the end is the one event still to come.
                async for _ in follow_job(state, job_id, record.last_event_id):
                    pass
    finally:
        release()
    record = await state.jobs.get(job_id)
    return record if record is None or record.status.ended else None
