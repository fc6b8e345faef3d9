"""The /v1 routes' side of a job: the caller's answer job by id, and waiting for the job's
end.

Waiting reads the job's events the way its SSE stream does (api/stream.py's `follow_job`), so
a client that waits for a whole answer and one that streams it are told of the end at the same
moment, and the wait holds one of the key's stream slots like a stream (`stream_slot`, taken
before the job is queued).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

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
    job, an unknown or expired id, or a response asked with `store: false` that has been
    delivered (honoured.py) is not found, all alike."""
    job_id = job_id_of(given_id)
    record = None if job_id is None else await state.jobs.get(job_id)
    if (
        record is None
        or record.deleted
        or record.kind != "answer"
        or not caller.may_see(record.owner)
    ):
        raise NotFound(f"no response {given_id[:80]!r}: it never existed, or has expired")
    if record.v1.get("store") is False and record.status.ended:
        raise NotFound(f"no response {given_id[:80]!r}: it was asked with store false")
    return record


def wait_limit(state: AppState) -> float:
    """How long a client may wait for a whole answer: every try of the job at its longest."""
    settings = state.settings
    return settings.question_timeout * settings.job_max_tries


async def wait_holding(
    state: AppState, job_id: str, release: Callable[[], None], still_running: str
) -> JobRecord:
    """The job's record once it has ended, waited for while holding the slot `release` gives
    back; `StillRunning` (with the hint `still_running`) if it has not ended in time."""
    try:
        record = await wait_for_end(state, job_id, wait_limit(state))
    finally:
        release()
    if record is None:
        raise StillRunning(f"the answer is still being written: {still_running}")
    return record


async def wait_for_end(state: AppState, job_id: str, limit: float) -> JobRecord | None:
    """The job's record once it has ended, or None if it has not within `limit` seconds.
    Takes no stream slot: a caller that waits long holds one (`wait_holding`)."""
    record = await state.jobs.get(job_id)
    if record is None or record.status.ended:
        return record
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(limit):
            # From the record's latest event: the end is the one event still to come.
            async for _ in follow_job(state, job_id, record.last_event_id):
                pass
    record = await state.jobs.get(job_id)
    return record if record is None or record.status.ended else None
