"""Fair share between keys, with a real worker: each key's jobs wait in lists of their own and
the scheduler hands them to the worker in turn (store/fair_share.py), by weight, within a
per-key running cap, interactive questions ahead of background ones, with a queue position
that tells the truth.

A worker with one slot makes the order of starts the scheduler's order, so most tests read
it from the jobs' `started_at` rather than time anything."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from redis.asyncio import Redis

from rag_async.domain.errors import ConfigurationError
from rag_async.domain.identity import KeyRing
from rag_async.local.valkey import EmbeddedValkey
from rag_async.store.errors import StoreError
from rag_async.store.jobs import JobStore
from rag_async.store.keys import Keys
from rag_async.store.queue import JobQueue
from rag_async.store.workers import WorkerBeats
from tests import conftest
from tests.conftest import Stack, running_stack

SECRETS = {name: f"{name}-secret-0123456789" for name in ("heavy", "light", "big", "small")}


@asynccontextmanager
async def keyed_stack(
    valkey: EmbeddedValkey, tmp_path: Path, llm: Any, **overrides: Any
) -> AsyncIterator[Stack]:
    settings = conftest.keyed_settings(
        valkey,
        tmp_path,
        llm,
        users=SECRETS,
        admins={},
        # The tests poll their jobs more often than a key may ask.
        **{"worker_max_jobs": 1, "rate_limit_per_minute": 0, **overrides},
    )
    async with running_stack(settings) as stack:
        yield stack


def as_key(stack: Stack, name: str) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {SECRETS[name]}"}
    return httpx.AsyncClient(base_url=stack.base_url, headers=headers, timeout=30)


async def ask(http: httpx.AsyncClient, query: str = "What is green tea?") -> str:
    response = await http.post("/chat", json={"query": query})
    assert response.status_code == 202, response.text
    job_id: str = response.json()["job_id"]
    return job_id


async def ask_in_background(http: httpx.AsyncClient, query: str = "What is tea?") -> str:
    response = await http.post("/v1/responses", json={"input": query, "background": True})
    assert response.status_code == 200, response.text
    return response.headers["x-rag-job-id"]


async def finished(http: httpx.AsyncClient, job_id: str, within: float = 120) -> dict[str, Any]:
    deadline = asyncio.get_running_loop().time() + within
    while asyncio.get_running_loop().time() < deadline:
        view: dict[str, Any] = (await http.get(f"/jobs/{job_id}")).json()
        if view["status"] in ("complete", "failed", "cancelled"):
            return view
        await asyncio.sleep(0.05)
    raise AssertionError(f"job {job_id} did not end within {within} s")


async def started(http: httpx.AsyncClient, job_id: str, within: float = 30) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while asyncio.get_running_loop().time() < deadline:
        if (await http.get(f"/jobs/{job_id}")).json()["status"] != "queued":
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"job {job_id} did not start within {within} s")


async def start_order(jobs: dict[str, tuple[httpx.AsyncClient, str]]) -> list[str]:
    """The labels of `jobs` (label: its key's client, job id) in the order they started,
    once every one has completed."""
    views = {label: await finished(http, job_id) for label, (http, job_id) in jobs.items()}
    assert all(view["status"] == "complete" for view in views.values()), views
    return sorted(views, key=lambda label: views[label]["started_at"])


def slow_answers(llm: Any, seconds: float) -> None:
    """Every answer streams for about `seconds`."""
    llm.config.ttft, llm.config.tokens, llm.config.tokens_per_second = 0.0, 10, 10 / seconds


async def test_a_light_key_goes_ahead_of_a_heavy_keys_backlog(
    valkey: EmbeddedValkey, tmp_path: Path, llm: Any
) -> None:
    """First in, first out would run all 8 of heavy's questions before light's 2; in turn,
    light's first runs right after heavy's running and next one, and both before heavy's
    last four. The position each waiting job was told is the place it started in."""
    slow_answers(llm, 0.3)
    async with (
        keyed_stack(valkey, tmp_path, llm) as stack,
        as_key(stack, "heavy") as heavy,
        as_key(stack, "light") as light,
    ):
        first = await ask(heavy)
        await started(heavy, first)
        jobs = {"H1": (heavy, first)}
        for i in range(2, 9):
            jobs[f"H{i}"] = (heavy, await ask(heavy))
        for i in (1, 2):
            jobs[f"L{i}"] = (light, await ask(light))
        told = {
            label: (await http.get(f"/jobs/{job_id}")).json()["queue_position"]
            for label, (http, job_id) in jobs.items()
            if label != "H1"
        }
        order = await start_order(jobs)
    assert order.index("L1") <= 3 and order.index("L2") <= 5, order
    assert order[-3:] == ["H6", "H7", "H8"], order
    # Position 1 is the running job's own place: a waiting job's is 1 + the jobs before it.
    assert told == {label: order.index(label) + 1 for label in told}, (told, order)


async def test_weights_share_the_workers_between_keys(
    valkey: EmbeddedValkey, tmp_path: Path, llm: Any
) -> None:
    """A key of weight 3 gets three turns for every one of a key of weight 1 while both wait."""
    slow_answers(llm, 0.2)
    async with (
        keyed_stack(valkey, tmp_path, llm, key_weights="big=3") as stack,
        as_key(stack, "big") as big,
        as_key(stack, "small") as small,
    ):
        blocker = await ask(big)
        await started(big, blocker)
        jobs: dict[str, tuple[httpx.AsyncClient, str]] = {}
        for i in range(8):
            jobs[f"s{i}"] = (small, await ask(small))
            jobs[f"b{i}"] = (big, await ask(big))
        order = await start_order(jobs)
    first_eight = order[:8]
    assert sum(label.startswith("b") for label in first_eight) >= 5, order


async def test_a_running_cap_leaves_room_for_other_keys(
    valkey: EmbeddedValkey, tmp_path: Path, llm: Any
) -> None:
    """With 3 slots and a cap of 1 job per key, heavy's questions run one at a time while
    light's run beside them: no two of heavy's ever overlap."""
    slow_answers(llm, 0.3)
    overrides = {"worker_max_jobs": 3, "max_running_jobs_per_key": 1}
    async with (
        keyed_stack(valkey, tmp_path, llm, **overrides) as stack,
        as_key(stack, "heavy") as heavy,
        as_key(stack, "light") as light,
    ):
        heavy_jobs = [await ask(heavy) for _ in range(4)]
        light_jobs = [await ask(light) for _ in range(2)]
        heavy_views = [await finished(heavy, job_id) for job_id in heavy_jobs]
        light_views = [await finished(light, job_id) for job_id in light_jobs]
    runs = sorted((view["started_at"], view["finished_at"]) for view in heavy_views)
    for (_, ended), (next_start, _) in itertools.pairwise(runs):
        assert next_start >= ended - 0.05, runs
    # Light's first question did not wait behind heavy's four.
    assert min(view["started_at"] for view in light_views) < runs[1][0], (runs, light_views)


async def test_interactive_questions_go_ahead_of_background_work_which_still_moves(
    valkey: EmbeddedValkey, tmp_path: Path, llm: Any
) -> None:
    """Background /v1 responses asked before eight questions wait for them, but one is handed
    on for every four questions (background_share 0.25), and all of them complete."""
    slow_answers(llm, 0.15)
    async with (
        keyed_stack(valkey, tmp_path, llm) as stack,
        as_key(stack, "heavy") as heavy,
        as_key(stack, "light") as light,
    ):
        blocker = await ask(heavy)
        await started(heavy, blocker)
        jobs: dict[str, tuple[httpx.AsyncClient, str]] = {}
        for i in range(3):
            jobs[f"bg{i}"] = (heavy, await ask_in_background(heavy))
        for i in range(8):
            jobs[f"q{i}"] = (light, await ask(light))
        view = (await heavy.get(f"/jobs/{jobs['bg0'][1]}")).json()
        assert view["priority"] == "background"
        order = await start_order(jobs)
    # Each background response after the four questions that earned it its turn.
    assert order == ["q0", "q1", "q2", "q3", "bg0", "q4", "q5", "q6", "q7", "bg1", "bg2"]


async def test_every_job_waits_for_a_worker_and_runs_once_one_comes(
    valkey: EmbeddedValkey, tmp_path: Path, llm: Any
) -> None:
    """With no worker the jobs wait in their keys' lists, counted in /stats and in line by
    key; a worker that starts takes them all."""
    settings = conftest.keyed_settings(valkey, tmp_path, llm, users=SECRETS, admins={})
    async with (
        running_stack(settings, with_worker=False) as stack,
        as_key(stack, "heavy") as heavy,
        as_key(stack, "light") as light,
    ):
        jobs = [await ask(heavy) for _ in range(3)] + [await ask(light)]
        positions = [(await heavy.get(f"/jobs/{job_id}")).json() for job_id in jobs[:3]]
        assert [view["queue_position"] for view in positions] == [1, 3, 4]
        assert (await light.get(f"/jobs/{jobs[3]}")).json()["queue_position"] == 2
        async with conftest.running_worker(settings):
            views = [await finished(heavy, job_id) for job_id in jobs[:3]]
            views.append(await finished(light, jobs[3]))
    assert [view["status"] for view in views] == ["complete"] * 4


def test_key_weights_must_name_a_key_and_be_positive(
    valkey: EmbeddedValkey, tmp_path: Path, llm: Any
) -> None:
    for weights in ("nobody=2", "heavy=0", "heavy=-1", "heavy=lots", "heavy"):
        settings = conftest.keyed_settings(
            valkey, tmp_path, llm, users=SECRETS, admins={}, key_weights=weights
        )
        with pytest.raises(ConfigurationError, match="RAG_KEY_WEIGHTS"):
            KeyRing.from_settings(settings)
    fine = conftest.keyed_settings(
        valkey, tmp_path, llm, users=SECRETS, admins={}, key_weights="heavy=2.5, light=0.5"
    )
    ring = KeyRing.from_settings(fine)
    assert ring.identify(SECRETS["heavy"]).weight == 2.5  # type: ignore[union-attr]
    assert ring.identify(SECRETS["small"]).weight == 1.0  # type: ignore[union-attr]


async def test_a_light_keys_first_question_starts_within_seconds_behind_forty(
    valkey: EmbeddedValkey, tmp_path: Path, llm: Any
) -> None:
    """The issue's case: 4 questions at once, about 2.3 s an answer, one key with 40
    questions waiting. First in, first out starts another key's first question after about
    23 s; in turn it starts at the next free slot, and all 40 are answered."""
    llm.config.ttft, llm.config.tokens, llm.config.tokens_per_second = 0.3, 40, 20
    async with (
        keyed_stack(valkey, tmp_path, llm, worker_max_jobs=4) as stack,
        as_key(stack, "heavy") as heavy,
        as_key(stack, "light") as light,
    ):
        backlog = await asyncio.gather(*(ask(heavy) for _ in range(40)))
        await asyncio.sleep(0.5)
        first = await finished(light, await ask(light))
        views = [await finished(heavy, job_id, within=180) for job_id in backlog]
    assert first["status"] == "complete"
    assert first["started_at"] - first["created_at"] < 5.0, first
    assert [view["status"] for view in views] == ["complete"] * 40
    # Nearly all the backlog started after it: it did not wait its turn behind them.
    assert sum(view["started_at"] > first["started_at"] for view in views) >= 30


async def test_operators_see_the_waiting_by_priority_and_the_busiest_keys(
    valkey: EmbeddedValkey, tmp_path: Path, llm: Any
) -> None:
    """With no worker: /metrics and an admin's /stats count the jobs waiting per priority and
    name the keys with the most; a key that is not an admin's sees the counts, no names."""
    settings = conftest.keyed_settings(
        valkey, tmp_path, llm, users=SECRETS, admins={"ops": "ops-secret-0123456789"}
    )
    async with (
        running_stack(settings, with_worker=False) as stack,
        as_key(stack, "heavy") as heavy,
        as_key(stack, "light") as light,
        httpx.AsyncClient(
            base_url=stack.base_url, headers={"Authorization": "Bearer ops-secret-0123456789"}
        ) as ops,
    ):
        for _ in range(3):
            await ask(heavy)
        await ask_in_background(light)
        await asyncio.sleep(1.1)  # the oldest has waited a while
        metrics = (await ops.get("/metrics")).text
        seen = (await ops.get("/stats")).json()
        counts = (await light.get("/stats")).json()
    assert 'rag_jobs_waiting{priority="interactive",queue="questions"} 3.0' in metrics
    assert 'rag_jobs_waiting{priority="background",queue="questions"} 1.0' in metrics
    assert 'rag_jobs_waiting_by_key{key="heavy",queue="questions"} 3.0' in metrics
    assert seen["waiting"]["questions"]["interactive"]["jobs"] == 3
    assert seen["waiting"]["questions"]["interactive"]["oldest_age"] >= 1.0
    assert seen["busiest_keys"]["questions"] == [
        {"key": "heavy", "waiting": 3},
        {"key": "light", "waiting": 1},
    ]
    assert seen["queue_depth"] == 4
    assert counts["waiting"]["questions"]["background"]["jobs"] == 1
    assert "busiest_keys" not in counts


async def test_a_waiting_job_survives_valkey_at_its_memory_limit(tmp_path: Path) -> None:
    """At Valkey's memory limit a scheduling step is one step still: the job it hands on is
    either still waiting in its key's list or wholly on arq's queue (its payload with it),
    never out of the one and not on the other; and it is on arq's queue once there is room."""
    server = EmbeddedValkey(tmp_path / "small-valkey", appendonly=False, maxmemory="8mb")
    server.start()
    try:
        async with Redis.from_url(server.url) as redis:
            keys = Keys("full:")
            queue = JobQueue(redis, keys)
            job_id = "f" * 32
            assert await JobStore(redis, keys, 60).create(job_id, "answer", {}) == "created"
            assert await redis.hexists(keys.waiting_jobs("questions"), job_id)  # no worker

            async def waits() -> bool:
                return bool(await redis.hexists(keys.waiting_jobs("questions"), job_id))

            async def on_arqs_queue() -> bool:
                score = await redis.zscore(keys.queue("questions"), job_id)
                return score is not None and bool(await redis.exists(keys.arq_job(job_id)))

            # A worker offers a slot, as its heartbeat does.
            await WorkerBeats(redis, keys, "w1").beat(orjson.dumps({"slots": {"questions": 1}}))
            await redis.config_set("maxmemory", 1)  # far past its limit
            try:
                with contextlib.suppress(StoreError):
                    await queue.schedule()
                assert await waits() != await on_arqs_queue()
            finally:
                await redis.config_set("maxmemory", "8mb")
            await queue.schedule()
            assert await on_arqs_queue() and not await waits()
    finally:
        server.stop()
