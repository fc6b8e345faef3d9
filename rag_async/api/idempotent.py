"""Creating a job once per Idempotency-Key, for every route that takes one."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable

from rag_async.api.enqueue import Submission
from rag_async.domain.job import JobStatus


async def create_once(
    submission: Submission,
    idempotency_key: str | None,
    request: bytes,
    job_id: str,
    create: Callable[[], Awaitable[None]],
) -> str:
    """The id of the job this request stands for: `job_id`, created by `create`, or the job
    an earlier request with the same key created.

    Whatever stops `create` (a limit's 429, Valkey away or full, any error, the client
    leaving) releases the claim unless the job's record exists by then, so a retry with the
    same key creates the job. A repeat that finds its job recorded but not queued (the first
    request failed in between) queues it: queuing a job already queued does nothing."""
    state, caller = submission.state, submission.caller
    claimed = await state.idempotency.claim(idempotency_key, caller, request, job_id)
    if claimed != job_id:
        record = await state.jobs.get(claimed)
        if record is not None and record.status == JobStatus.QUEUED:
            await state.queue.put(claimed, record.kind, record.owner, record.priority)
        return claimed
    try:
        await create()
    except BaseException:
        # Valkey may be what failed: then the claim goes stale instead (store/idempotency.py).
        with contextlib.suppress(Exception):
            await state.idempotency.release(idempotency_key, caller, job_id)
        raise
    return job_id
