"""Event appends made at once by many jobs share round trips (store/batched.py), and each job
still gets exactly its own outcome: its ids in order, its fence, its write id."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import Redis

from rag_async.config import Settings
from rag_async.domain.events import TokenEvent, decode_event
from rag_async.store.events import EventLog, Superseded
from rag_async.store.keys import Keys


async def _reads(redis: Redis) -> int:
    return int((await redis.info("stats"))["total_reads_processed"])


async def test_appends_of_many_jobs_at_once_share_round_trips_and_stay_in_order(
    settings: Settings,
) -> None:
    keys = Keys(settings.key_prefix)
    async with Redis.from_url(settings.redis_url or "") as redis:
        log = EventLog(redis, keys, ttl=60)
        jobs = [f"batched{i}" for i in range(50)]
        for job_id in jobs:
            await redis.hset(keys.job(job_id), "attempt", 1)  # type: ignore[misc]

        async def tell(job_id: str) -> list[int]:
            write = {"attempt": 1}
            return [
                await log.append(
                    job_id, TokenEvent(text=f"{job_id}:{n}"), write_id=f"1:{n}", **write
                )
                for n in range(5)
            ]

        before = await _reads(redis)
        ids = await asyncio.gather(*(tell(job_id) for job_id in jobs))
        reads = await _reads(redis) - before
        assert ids == [[1, 2, 3, 4, 5]] * len(jobs)
        # 250 appends; one at a time they were 250 reads of Valkey's, batched a handful a turn.
        assert reads < 250 / 3, reads
        for job_id in jobs:
            texts = [decode_event(event.data).text for event in await log.replay(job_id)]  # type: ignore[union-attr]
            assert texts == [f"{job_id}:{n}" for n in range(5)]
        # A resent write in a batch is logged once, as alone.
        again = await asyncio.gather(
            *(
                log.append(job_id, TokenEvent(text="x"), attempt=1, write_id="1:4")
                for job_id in jobs
            )
        )
        assert again == [5] * len(jobs)


async def test_a_superseded_append_in_a_batch_fails_alone_and_a_flushed_script_is_reloaded(
    settings: Settings,
) -> None:
    keys = Keys(settings.key_prefix)
    async with Redis.from_url(settings.redis_url or "") as redis:
        log = EventLog(redis, keys, ttl=60)
        jobs = [f"fenced{i}" for i in range(10)]
        for job_id in jobs:
            await redis.hset(keys.job(job_id), "attempt", 1)  # type: ignore[misc]
        await redis.hset(keys.job(jobs[3]), "attempt", 2)  # type: ignore[misc]
        await redis.script_flush()  # as after a restart of Valkey: the script must be loaded
        results = await asyncio.gather(
            *(log.append(job_id, TokenEvent(text="t"), attempt=1) for job_id in jobs),
            return_exceptions=True,
        )
        assert isinstance(results[3], Superseded)
        assert results[:3] + results[4:] == [1] * 9
        with pytest.raises(Superseded):
            await log.append(jobs[3], TokenEvent(text="t"), attempt=1)
