"""Nudged workers (store/nudge.py): a job put on a queue starts without waiting for the poll, the
poll still runs jobs when no nudge comes, and a nudge wakes only its own queue's workers.

The polls here are seconds apart, so a job that starts within a fraction of that was nudged;
the bounds are generous (the machine may be busy), never tight timings.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from rag_async.client.api import RagClient
from rag_async.config import Settings
from rag_async.local.valkey import EmbeddedValkey
from rag_async.store.keys import Keys
from rag_async.store.nudge import NudgeListener
from rag_async.store.queue import Lane
from tests.conftest import (
    SAMPLE_DOCUMENT,
    cli_env,
    make_settings,
    rag_async_command,
    running_api,
    running_stack,
)
from tests.support.documents import add_document
from tests.support.processes import Proc

# The fallback poll of these tests: a job that waited for it would wait seconds.
SLOW_POLL = 5.0
# What "at once" means here, on a busy machine: well within the poll.
AT_ONCE = 1.0


def slow_poll_settings(valkey: EmbeddedValkey, tmp_path: Path, llm: Any, **extra: Any) -> Settings:
    return make_settings(
        valkey,
        tmp_path,
        llm_base_url=llm.base_url,
        llm_api_key="test-key",
        worker_poll_delay=SLOW_POLL,
        worker_document_poll_delay=SLOW_POLL,
        **extra,
    )


async def queue_wait(client: RagClient, job_id: str) -> float:
    """Seconds from the job's creation to its start, once it has ended."""
    events = [event async for event in client.follow(job_id)]
    assert events[-1].type == "done", events[-1]
    view = await client.job(job_id)
    return float(view["started_at"] - view["created_at"])


async def until(check: Callable[[], Awaitable[bool]], within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    while not await check():
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)


async def listened(redis: Redis, keys: Keys, lanes: tuple[Lane, ...]) -> bool:
    """Whether some process listens to each lane's nudges."""
    channels = [keys.nudge(lane) for lane in lanes]
    counts = dict(await redis.pubsub_numsub(*channels))
    return all(counts.get(channel.encode(), 0) > 0 for channel in channels)


async def wait_subscribed(redis: Redis, keys: Keys, lanes: tuple[Lane, ...]) -> None:
    """Until the worker listens to each lane's nudges and has beaten (the room it offers), then
    a moment more, so that its first poll (at its start) is behind it."""
    await until(lambda: listened(redis, keys, lanes))

    async def beaten() -> bool:
        return bool(await redis.hlen(keys.workers))

    await until(beaten)
    await asyncio.sleep(0.5)


@pytest.mark.timeout(120)
async def test_a_job_starts_at_once_in_a_worker_process_polling_every_few_seconds(
    valkey: EmbeddedValkey, tmp_path: Path, llm: Any
) -> None:
    settings = slow_poll_settings(valkey, tmp_path, llm)
    env = cli_env(
        settings,
        RAG_DATA_DIR=str(tmp_path / "worker"),
        RAG_WORKER_DOCUMENT_POLL_DELAY=str(SLOW_POLL),
    )
    worker = Proc("worker", rag_async_command("worker"), env, tmp_path)
    keys = Keys(settings.key_prefix)
    try:
        await worker.async_wait_for("worker ready")
        async with Redis.from_url(settings.redis_url or "") as redis:
            await wait_subscribed(redis, keys, ("questions", "documents"))
        async with running_api(settings) as base_url, RagClient(base_url) as client:
            waits = []
            for i in range(3):
                await asyncio.sleep(0.3)  # a worker idle between polls
                waits.append(await queue_wait(client, (await client.ask(f"tea {i}?"))["job_id"]))
            document = await add_document(client, SAMPLE_DOCUMENT, title="Tea")
            waits.append(await queue_wait(client, document["job_id"]))
        assert max(waits) < AT_ONCE, (waits, worker.describe())
        assert await worker.async_terminate() == 0, worker.describe()
    finally:
        worker.cleanup()


@pytest.mark.timeout(60)
async def test_without_nudges_the_poll_runs_jobs(
    valkey: EmbeddedValkey, tmp_path: Path, llm: Any
) -> None:
    settings = make_settings(
        valkey,
        tmp_path,
        llm_base_url=llm.base_url,
        llm_api_key="test-key",
        worker_nudge=False,
        worker_poll_delay=0.2,
    )
    keys = Keys(settings.key_prefix)
    async with running_stack(settings) as stack, Redis.from_url(valkey.url) as redis:
        assert stack.worker is not None and stack.worker.nudges is None
        job_ids = [(await stack.client.ask(f"tea {i}?"))["job_id"] for i in range(3)]
        waits = [await queue_wait(stack.client, job_id) for job_id in job_ids]
        # Nobody listened: the poll alone took them.
        assert dict(await redis.pubsub_numsub(keys.nudge("questions"))) == {
            keys.nudge("questions").encode(): 0
        }
    assert len(waits) == 3


@pytest.mark.timeout(90)
async def test_a_lost_nudge_subscription_is_taken_again(
    valkey: EmbeddedValkey, tmp_path: Path, llm: Any
) -> None:
    settings = slow_poll_settings(valkey, tmp_path, llm)
    keys = Keys(settings.key_prefix)
    async with running_stack(settings) as stack, Redis.from_url(valkey.url) as redis:
        assert stack.worker is not None and stack.worker.nudges is not None
        await wait_subscribed(redis, keys, ("questions",))
        # Valkey drops the worker's subscriber connection (a restart, a proxy's idle cut).
        listeners = [
            client
            for client in await redis.client_list()
            if client["name"] == "rag-worker" and int(client.get("sub", 0)) > 0
        ]
        assert len(listeners) == 1, listeners
        await redis.client_kill_filter(_id=listeners[0]["id"])
        await wait_subscribed(redis, keys, ("questions",))
        started = time.monotonic()
        wait = await queue_wait(stack.client, (await stack.client.ask("tea?"))["job_id"])
        assert wait < AT_ONCE, (wait, time.monotonic() - started)


@pytest.mark.timeout(90)
async def test_a_nudge_wakes_only_the_workers_of_its_queue(
    valkey: EmbeddedValkey, tmp_path: Path, llm: Any
) -> None:
    settings = slow_poll_settings(valkey, tmp_path, llm)
    keys = Keys(settings.key_prefix)
    async with running_stack(settings) as stack, Redis.from_url(valkey.url) as redis:
        # A listener of our own, beside the worker's, to see which lane each job wakes.
        wakes: dict[Lane, asyncio.Event] = {
            "questions": asyncio.Event(),
            "documents": asyncio.Event(),
        }
        listener = NudgeListener(redis, keys, wakes)
        listener.start()
        try:
            async with asyncio.timeout(30):
                await listener.subscribed.wait()
            await wait_subscribed(redis, keys, ("questions", "documents"))
            for wake in wakes.values():
                wake.clear()  # the (re)subscription wakes every lane once
            wait = await queue_wait(stack.client, (await stack.client.ask("tea?"))["job_id"])
            assert wakes["questions"].is_set() and not wakes["documents"].is_set()
            wakes["questions"].clear()
            document = await add_document(stack.client, SAMPLE_DOCUMENT, title="Tea")
            document_wait = await queue_wait(stack.client, document["job_id"])
            assert wakes["documents"].is_set() and not wakes["questions"].is_set()
        finally:
            await listener.close()
    assert wait < AT_ONCE and document_wait < AT_ONCE, (wait, document_wait)


@pytest.mark.timeout(90)
async def test_a_job_waiting_for_room_starts_at_once_when_a_slot_frees(
    valkey: EmbeddedValkey, tmp_path: Path, llm: Any
) -> None:
    """A full worker (one slot here): the second question waits for the first's end, then
    starts without waiting for the poll. Two roads lead there, each enough alone: the
    scheduler's hand-on at the first's end nudges, and a worker that was full wakes itself
    when a slot frees (for a due job that no nudge announced)."""
    llm.config.ttft = 0.5  # the first still runs when the second comes
    settings = slow_poll_settings(valkey, tmp_path, llm, worker_max_jobs=1)
    keys = Keys(settings.key_prefix)
    async with running_stack(settings) as stack, Redis.from_url(valkey.url) as redis:
        await wait_subscribed(redis, keys, ("questions",))
        first, second = [(await stack.client.ask(f"tea {i}?"))["job_id"] for i in range(2)]
        await queue_wait(stack.client, first)
        await queue_wait(stack.client, second)
        first_view, second_view = stack.client.job(first), stack.client.job(second)
        ended, started = (await first_view)["finished_at"], (await second_view)["started_at"]
    assert started - ended < AT_ONCE, (ended, started)


@pytest.mark.timeout(90)
async def test_a_running_job_is_cancelled_at_once_by_a_worker_polling_every_few_seconds(
    valkey: EmbeddedValkey, tmp_path: Path, llm: Any
) -> None:
    """arq reads a running job's abort at its poll: the cancel nudges the worker too."""
    settings = slow_poll_settings(valkey, tmp_path, llm)
    llm.config.ttft, llm.config.tokens, llm.config.tokens_per_second = 0.0, 400, 20
    keys = Keys(settings.key_prefix)
    async with running_stack(settings) as stack, Redis.from_url(valkey.url) as redis:
        await wait_subscribed(redis, keys, ("questions",))
        job_id = (await stack.client.ask("tea?"))["job_id"]
        seen: list[str] = []
        asked = 0.0
        async for event in stack.client.follow(job_id):
            seen.append(event.type)
            if event.type == "token" and seen.count("token") == 1:
                await asyncio.sleep(0.5)  # the worker back in its sleep between polls
                asked = time.monotonic()
                assert (await stack.client.cancel(job_id))["status"] == "cancelling"
        stopped = time.monotonic() - asked
    assert seen[-1] == "cancelled", seen
    assert stopped < AT_ONCE, stopped
