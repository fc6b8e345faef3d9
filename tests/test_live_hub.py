"""The API's one pub/sub connection (eventlog.LiveHub) over a service's life: busy, idle, busy."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import orjson
import pytest
from httpx_sse import aconnect_sse
from redis.asyncio import Redis

from rag_async.config import Settings
from rag_async.store import pool as redis_pool
from rag_async.store.events import UNSUBSCRIBE_DELAY, LiveHub
from rag_async.store.keys import Keys
from tests.conftest import running_stack
from tests.support.openai_server import expected_answer


async def _stream(base_url: str, job_id: str) -> list[tuple[str, Any]]:
    """A job's SSE stream read to its end, as (event, data) pairs."""
    events = []
    async with (
        httpx.AsyncClient(base_url=base_url, timeout=30) as http,
        aconnect_sse(http, "GET", f"/jobs/{job_id}/events") as source,
    ):
        async for sse in source.aiter_sse():
            events.append((sse.event, orjson.loads(sse.data)))
            if sse.event in ("done", "error"):
                break
    return events


async def test_a_stream_opened_after_the_hub_idled_past_a_health_check_gets_its_events(
    settings: Settings, llm: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The pool PINGs a connection idle for longer than this before its next command (30 s in
    # service). redis-py's PING then reads the reply itself; on the hub's connection, which
    # its reader task is always reading, that read used to collide with the reader's.
    monkeypatch.setattr(redis_pool, "HEALTH_CHECK_INTERVAL", 1.0)
    llm.config.tokens, llm.config.tokens_per_second = 10, 50  # ~0.2 s of streaming
    async with running_stack(settings) as stack:
        first = (await stack.client.ask("how do I brew tea?"))["job_id"]
        assert (await _stream(stack.base_url, first))[-1][0] == "done"
        # The hub has let go of the finished job's channel; nobody listens for a while.
        await asyncio.sleep(2.0)

        second = (await stack.client.ask("and black tea?"))["job_id"]
        events = await _stream(stack.base_url, second)
        kinds = [kind for kind, _ in events]
        assert kinds[:1] == ["status"] and kinds[-1:] == ["done"], events
        assert "".join(data["text"] for kind, data in events if kind == "token") == (
            expected_answer(10)
        )
        # A finished job's stream, opened after another idle spell, replays all of it.
        await asyncio.sleep(2.0)
        assert await _stream(stack.base_url, second) == events


async def test_a_failure_in_the_hubs_reader_does_not_end_the_streams_it_feeds(
    settings: Settings, llm: Any
) -> None:
    # Any exception in the reader task, not only a lost connection, used to end it, and the
    # streams open at the time then waited for events that never came. A message the hub
    # cannot read stands in for the rest (say, a read colliding with another during a restart).
    tokens = 40
    llm.config.tokens, llm.config.tokens_per_second = tokens, 20  # ~2 s of streaming
    async with running_stack(settings) as stack:
        job_id = (await stack.client.ask("how do I brew tea?"))["job_id"]
        events: list[tuple[str, Any, int]] = []
        async with (
            httpx.AsyncClient(base_url=stack.base_url, timeout=30) as http,
            aconnect_sse(http, "GET", f"/jobs/{job_id}/events") as source,
            Redis.from_url(settings.redis_url or "") as redis,
            asyncio.timeout(20),
        ):
            async for sse in source.aiter_sse():
                events.append((sse.event, orjson.loads(sse.data), int(sse.id)))
                if sse.event == "token" and sum(kind == "token" for kind, _, _ in events) == 1:
                    await redis.publish(Keys(settings.key_prefix).live(job_id), b"not an event")
                if sse.event in ("done", "error"):
                    break
        ids = [event_id for _, _, event_id in events]
        assert ids == list(range(1, len(ids) + 1)), ids
        assert events[-1][0] == "done", events
        assert "".join(data["text"] for kind, data, _ in events if kind == "token") == (
            expected_answer(tokens)
        )


async def test_the_channels_of_ended_streams_leave_together_and_a_returning_one_stays(
    settings: Settings,
) -> None:
    # Every answer's stream ends: one UNSUBSCRIBE each was a round trip an answer. The channels
    # let go within UNSUBSCRIBE_DELAY leave in one command, and a follower that comes back
    # meanwhile finds its channel still subscribed (and gets what is published on it).
    keys = Keys(settings.key_prefix)
    async with Redis.from_url(settings.redis_url or "") as redis:
        hub = LiveHub(redis, keys)
        try:
            jobs = [f"job{i}" for i in range(10)]

            async def follow(job_id: str) -> None:
                async with hub.subscribe(job_id):
                    pass

            before = await _calls(redis, "unsubscribe")
            await asyncio.gather(*(follow(job_id) for job_id in jobs))
            async with hub.subscribe(jobs[0]) as live:  # back before its channel was let go
                await redis.publish(keys.live(jobs[0]), b"7 {}")
                assert (await asyncio.wait_for(live.get(), 5)).id == 7
            await asyncio.sleep(UNSUBSCRIBE_DELAY + 0.5)
            numsub = dict(await redis.pubsub_numsub(*(keys.live(job_id) for job_id in jobs)))
            assert set(numsub.values()) == {0}, numsub
            assert await _calls(redis, "unsubscribe") - before == 1
        finally:
            await hub.close()


async def _calls(redis: Redis, command: str) -> int:
    stats = await redis.info("commandstats")
    return int(stats.get(f"cmdstat_{command}", {}).get("calls", 0))
