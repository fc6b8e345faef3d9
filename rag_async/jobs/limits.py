"""arq's own limits end a job inside arq without a word to the job: past its timeout or its
tries, the job is dropped and our record would say "in progress" forever. So arq's limits are
set out of reach (workers/settings.py) and ours are enforced here, where the record, the event
log and the client are told."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable

import structlog

from ..errors import RagError
from ..eventlog import Superseded
from ..events import TERMINAL_STATUSES
from .context import WorkerContext
from .outcome import give_up, retry_or_fail

log = structlog.get_logger(__name__)

Job = Callable[[WorkerContext, str], Awaitable[None]]


class JobTimedOut(RagError):
    code = "job_timeout"
    retryable = True  # slowness often passes; a job that is always too slow is dead-lettered


def with_limits(job: Job, *, timeout: float, max_tries: int) -> Job:
    """`job`, stopped and retried after `timeout` seconds, and given up after `max_tries`."""

    @functools.wraps(job)
    async def run(ctx: WorkerContext, job_id: str) -> None:
        if ctx.get("job_try", 1) > max_tries:
            # arq counts every start; tries spent with no outcome recorded were runs lost with
            # their workers (killed, or taken for dead: recovery.py).
            record = await ctx["services"].jobs.get(job_id)
            if record is not None and record.status not in TERMINAL_STATUSES:
                await give_up(
                    ctx,
                    job_id,
                    f"gave up after {max_tries} tries: the workers running it were lost",
                )
            return
        try:
            async with asyncio.timeout(timeout):
                await job(ctx, job_id)
        except Superseded:
            # This worker was taken for dead and the job runs elsewhere now (recovery.py).
            log.warning("attempt superseded by a newer one, stopping", job_id=job_id)
        except TimeoutError:
            error = JobTimedOut(f"the job took longer than its limit of {timeout:g} s")
            await retry_or_fail(ctx, job_id, error)

    return run
