"""The worker's own behaviour beyond a single answer."""

from __future__ import annotations

import asyncio
from typing import Any

from redis.asyncio import Redis

from tests.conftest import Stack


async def _exists_calls(redis: Redis) -> int:
    stats = await redis.info("commandstats")
    return int(stats.get("cmdstat_exists", {}).get("calls", 0))


async def test_polling_does_not_recheck_jobs_running_here(stack: Stack, llm: Any) -> None:
    # arq keeps running jobs in its queue; each poll would spend round trips on every one.
    llm.config.ttft, llm.config.tokens = 2.0, 3
    jobs = [(await stack.client.ask(f"question {i}"))["job_id"] for i in range(10)]
    async with Redis.from_url(stack.settings.redis_url or "") as redis:
        for _ in range(100):  # until all ten are running
            views = [await stack.client.job(job_id) for job_id in jobs]
            if all(view["status"] == "in_progress" for view in views):
                break
            await asyncio.sleep(0.05)
        before = await _exists_calls(redis)
        await asyncio.sleep(0.5)  # ~50 polls at 10 ms with ten jobs running
        after = await _exists_calls(redis)
    # Unfiltered, arq checks each running job's in-progress key at every poll: ~500 here.
    assert after - before < 20, f"{after - before} EXISTS calls in 0.5 s of polling"
    for job_id in jobs:
        assert [e async for e in stack.client.follow(job_id)][-1].type == "done"
