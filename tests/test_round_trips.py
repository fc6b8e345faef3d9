"""The round trips to Valkey that one answer costs, counted with MONITOR on a real API and
worker: each costs its caller about 100 us of CPU (docs/benchmarks.md, "CPU per answer"), so a
step that comes back as two shows here before it shows in a benchmark.

Counted: the commands sent (not those a script runs) that name the answer's job, a MULTI/EXEC
block as one, and those that read a queue's depth; the event appends apart, as the number of
them follows the LLM's timing.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import Counter

from redis.asyncio import Redis

from rag_async.config import Settings
from rag_async.store.events import _APPEND
from rag_async.store.queue import _SCHEDULE
from tests.conftest import Stack, ingest, running_stack

# What the answer's job costs besides its event appends, by command: the API's create (the
# queue's depth checked within), its stream's record, SUBSCRIBE and replay; the worker's claim
# (RagWorker.start_jobs, the job set's entry within), arq's run pipeline, the attempt's start
# (EventLog.begin), the settle, and arq's finish pipeline (the job set's entry out and the
# scheduler's hand-on of the slot within: no `schedule` apart).
EXPECTED = Counter({"EVALSHA": 4, "HGETALL": 1, "SUBSCRIBE": 1, "XRANGE": 1, "MULTI": 2})
_DEPTH = {"ZCARD", "HLEN"}


async def _answer_round_trips(stack: Stack) -> tuple[Counter[str], int]:
    """The round trips of one answer by command (a MULTI block under MULTI), and its appends."""
    redis = Redis.from_url(str(stack.settings.redis_url))
    shas = [hashlib.sha1(script.encode()).hexdigest() for script in (_APPEND, _SCHEDULE)]
    seen: list[tuple[str, list[str]]] = []
    async with redis.monitor() as monitor:

        async def collect() -> None:
            async for command in monitor.listen():
                if command.get("client_type") != "lua":
                    client = f"{command['client_address']}:{command['client_port']}"
                    seen.append((client, str(command["command"]).split()))

        task = asyncio.create_task(collect())
        await asyncio.sleep(0.2)
        accepted = await stack.client.ask("How long do I brew green tea?")
        followed = [event async for event in stack.client.follow(accepted["job_id"])]
        assert followed[-1].type == "done"
        await asyncio.sleep(0.3)  # the worker's last steps follow the `done` event
        task.cancel()
    await redis.aclose()
    return _count(seen, accepted["job_id"], *shas)


def _count(
    seen: list[tuple[str, list[str]]], job_id: str, append_sha: str, schedule_sha: str
) -> tuple[Counter[str], int]:
    trips: Counter[str] = Counter()
    appends = 0
    blocks: dict[str, bool] = {}  # client: whether its open MULTI block names the job
    for client, words in seen:
        name = words[0].upper()
        if name == "MULTI":
            blocks[client] = False
        elif name == "EXEC":
            trips["MULTI"] += blocks.pop(client, False)
        elif name in _DEPTH:  # the queue's depth, which no other command of the test reads
            trips[name] += 1
        elif client not in blocks and name == "EVALSHA" and words[1] == schedule_sha:
            trips["schedule"] += 1  # the heartbeat's are a minute apart here
        elif any(job_id in word for word in words[1:]):
            if client in blocks:
                blocks[client] = True
            elif name == "EVALSHA" and words[1] == append_sha:
                appends += 1
            else:
                trips[name] += 1
    return trips, appends


async def test_an_answer_costs_the_round_trips_counted(settings: Settings) -> None:
    quiet = settings.model_copy(update={"worker_heartbeat": 60.0, "worker_dead_after": 180.0})
    async with running_stack(quiet) as stack:
        await ingest(stack)
        await _answer_round_trips(stack)  # connections opened, scripts loaded
        trips, appends = await _answer_round_trips(stack)
    print(f"round trips: {dict(trips)} and {appends} appends")
    assert trips == EXPECTED, trips
    assert 1 <= appends <= 12, appends


async def test_a_finish_whose_hand_on_fails_leaves_it_to_the_end_hook(settings: Settings) -> None:
    """Valkey without its scripts (restarted, flushed) refuses the hand-on within arq's
    finish (NOSCRIPT, by hash alone); the end hook then hands the slot on by itself: with one
    slot and no heartbeat for a minute, the second question runs only if it does."""
    quiet = settings.model_copy(
        update={"worker_heartbeat": 60.0, "worker_dead_after": 180.0, "worker_max_jobs": 1}
    )
    async with running_stack(quiet) as stack:
        await ingest(stack)
        redis = Redis.from_url(str(quiet.redis_url))
        await redis.script_flush()
        await redis.aclose()
        asked = [await stack.client.ask("How long do I brew green tea?") for _ in range(2)]
        async with asyncio.timeout(20):
            for accepted in asked:
                followed = [event async for event in stack.client.follow(accepted["job_id"])]
                assert followed[-1].type == "done"
