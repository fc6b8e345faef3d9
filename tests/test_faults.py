"""Faults with real processes: workers killed with SIGKILL, Valkey killed and restarted, a
network partition between a worker and Valkey. Each test asserts what a client sees: every
accepted job ends with exactly one final answer, the expected one."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from arq.constants import retry_key_prefix
from redis.asyncio import Redis

from rag_async.client.api import Answer, RagClient
from rag_async.config import Settings
from rag_async.domain.events import event_type_of
from rag_async.local.valkey import EmbeddedValkey, free_port
from rag_async.providers.retrieval import open_store
from rag_async.store.events import EventLog
from rag_async.store.keys import Keys
from rag_async.store.workers import DeadWorkerReaper
from rag_async.worker.process import in_progress_ttl
from tests.conftest import (
    cli_env,
    make_settings,
    rag_async_command,
    running_api,
    running_stack,
    running_worker,
)
from tests.support.documents import add_document
from tests.support.openai_server import expected_answer
from tests.support.processes import bare_env, console_script, started
from tests.support.tcp_proxy import TcpProxy

# Workers beat every 0.5 s and are taken for dead after 2 s of silence (15 s by default).
FAST_RECOVERY = {"RAG_WORKER_HEARTBEAT": "0.5", "RAG_WORKER_DEAD_AFTER": "2"}


async def final_events(settings: Settings, job_id: str) -> list[str]:
    """The types of the job's terminal events in its log: exactly one when all went well."""
    async with Redis.from_url(settings.redis_url or "") as redis:
        logged = await EventLog(redis, Keys(settings.key_prefix), 60).replay(job_id)
    types = [event_type_of(event.data) for event in logged]
    return [kind for kind in types if kind in ("done", "error", "cancelled")]


async def assert_one_clean_answer(
    settings: Settings, client: RagClient, job_id: str, answer: Answer, tokens: int
) -> dict[str, Any]:
    assert answer.final is not None and answer.final.type == "done", answer.final
    assert answer.text == expected_answer(tokens), answer
    assert await final_events(settings, job_id) == ["done"]
    view = await client.job(job_id)
    assert view["status"] == "complete" and view["answer"] == answer.text
    return view


@pytest.mark.timeout(120)
async def test_fifty_in_flight_survive_one_of_two_workers_killed(
    settings: Settings, llm: Any, tmp_path: Path
) -> None:
    tokens = 30
    llm.config.ttft, llm.config.tokens, llm.config.tokens_per_second = 0.3, tokens, 20
    llm.stats.reset()
    # 25 jobs each at most, so both hold answers when one is killed.
    limit = {"RAG_WORKER_MAX_JOBS": "25"}
    with (
        started("doomed", *_worker_args("doomed", settings, tmp_path, limit)) as doomed,
        started("survivor", *_worker_args("survivor", settings, tmp_path, limit)) as survivor,
    ):
        await doomed.async_wait_for("worker ready")
        await survivor.async_wait_for("worker ready")
        async with running_api(settings) as base_url, RagClient(base_url) as client:
            accepted = [(await client.ask(f"question {i}"))["job_id"] for i in range(50)]
            answers = asyncio.gather(*(client.answer(job_id) for job_id in accepted))
            await asyncio.sleep(random.uniform(0.3, 1.5))  # somewhere mid-answer
            doomed.kill()
            killed_at = time.monotonic()
            results = await asyncio.wait_for(answers, 60)
            recovered_in = time.monotonic() - killed_at
            views = [
                await assert_one_clean_answer(settings, client, job_id, answer, tokens)
                for job_id, answer in zip(accepted, results, strict=True)
            ]
    rerun = [view for view in views if view["attempt"] > 1]
    assert rerun, "the kill hit no job in flight"
    assert all(view["worker"].endswith(f":{survivor.pid}") for view in rerun)
    # Recovery is bounded by the silence limit (2 s), a beat, a poll and one answer (1.8 s).
    assert recovered_in < 15, recovered_in
    # The lost attempts are the only LLM calls paid twice.
    assert llm.stats.chat_requests == 50 + len(rerun)


def _worker_args(
    name: str, settings: Settings, tmp_path: Path, env: dict[str, str]
) -> tuple[list[str], dict[str, str], Path]:
    proc_env = cli_env(settings, RAG_DATA_DIR=str(tmp_path / name), **FAST_RECOVERY, **env)
    return rag_async_command("worker"), proc_env, tmp_path


@pytest.mark.timeout(120)
async def test_a_worker_killed_mid_ingestion_leaves_no_duplicate_or_orphan_chunk(
    settings: Settings, tmp_path: Path
) -> None:
    data_dir = tmp_path / "shared"  # the restarted worker opens the same embedded Qdrant
    paragraphs = [
        f"Paragraph {i} tells of ship {i % 97}, which sailed to port {i % 89} in year {i}."
        for i in range(40_000)
    ]
    text = "# Ships\n\n" + "\n\n".join(paragraphs)
    env = {"RAG_DATA_DIR": str(data_dir), **FAST_RECOVERY}
    args = rag_async_command("worker"), cli_env(settings, **env), tmp_path
    async with running_api(settings) as base_url, RagClient(base_url) as client:
        with started("first", *args) as first:
            await first.async_wait_for("worker ready")
            accepted = await add_document(client, text, title="Ships", source="ships.md")
            async for event in client.follow(accepted["job_id"]):
                if event.type == "progress" and 0 < event.data["done"] < event.data["total"]:
                    break  # chunks are being written: kill it now
                assert event.type not in ("done", "error"), f"ingestion ended first: {event}"
            first.kill()
        with started("second", *args) as second:
            await second.async_wait_for("worker ready")
            answer = await client.answer(accepted["job_id"])
            assert answer.final is not None and answer.final.type == "done", answer.final
            view = await client.job(accepted["job_id"])
            assert view["attempt"] == 2, view
            assert await second.async_terminate() == 0
        chunks = int(answer.final.data["chunks"])
        document = await client.document(accepted["document_id"])
        assert document["chunks"] == chunks and document["status"] == "indexed", document

    # Every chunk exactly once (0..n-1, nothing beyond), none left over from the killed
    # attempt, read through the store this worker wrote.
    store = await open_store(settings.model_copy(update={"data_dir": data_dir}))
    await store.ensure_collection(None)
    try:
        assert await store.count() == await store.count_document(accepted["document_id"])
        assert await store.count() == chunks
        version = accepted["job_id"]  # the chunks are the ingesting job's version
        assert await store.holds_exactly(accepted["document_id"], chunks, version=version)
    finally:
        await store.close()


@pytest.mark.timeout(120)
async def test_valkey_killed_and_restarted_loses_no_accepted_job(llm: Any, tmp_path: Path) -> None:
    tokens = 20
    llm.config.ttft, llm.config.tokens, llm.config.tokens_per_second = 1.0, tokens, 10
    valkey = EmbeddedValkey(tmp_path / "valkey", appendonly=True)
    valkey.start()
    settings = make_settings(valkey, tmp_path, llm_base_url=llm.base_url, llm_api_key="test-key")
    try:
        with started("worker", *_worker_args("worker", settings, tmp_path, {})) as worker:
            await worker.async_wait_for("worker ready")
            async with running_api(settings) as base_url, RagClient(base_url) as client:
                accepted = [(await client.ask(f"question {i}"))["job_id"] for i in range(10)]
                answers = asyncio.gather(*(client.answer(job_id) for job_id in accepted))
                await asyncio.sleep(1.5)  # answers are streaming
                valkey.kill()
                async with httpx.AsyncClient(base_url=base_url) as http:
                    refused = await http.post("/chat", json={"query": "anyone there?"})
                    assert refused.status_code == 503, refused.text
                    assert refused.json()["error"]["code"] and "retry-after" in refused.headers
                    # Longer than a worker's resends (~11 s): its poll loop must start again.
                    await asyncio.sleep(20.0)
                    valkey.start()  # same port, same AOF
                    try:
                        results = await asyncio.wait_for(answers, 60)
                    except TimeoutError:
                        pytest.fail(f"answers did not all come\n{worker.describe()}")
                    for job_id, answer in zip(accepted, results, strict=True):
                        await assert_one_clean_answer(settings, client, job_id, answer, tokens)
                    # And the service takes new work again by itself.
                    after = await client.ask("and now?")
                    late = await client.answer(after["job_id"])
                    await assert_one_clean_answer(settings, client, after["job_id"], late, tokens)
            assert "lost Valkey, polling again" in worker.stderr(), worker.describe()
            assert await worker.async_terminate() == 0
    finally:
        valkey.stop()


@pytest.mark.timeout(120)
async def test_a_worker_cut_off_from_valkey_is_replaced_and_cannot_write_again(
    settings: Settings, llm: Any, tmp_path: Path
) -> None:
    """A partition, not a crash: the cut-off worker lives on and resumes writing when the
    network heals. Its jobs have been taken over meanwhile; the attempt fence keeps its late
    writes out of the log, so the client still sees one answer."""
    tokens = 40
    llm.config.ttft, llm.config.tokens, llm.config.tokens_per_second = 0.3, tokens, 10
    host, _, port = (settings.redis_url or "").removeprefix("redis://").partition(":")
    async with TcpProxy(host, int(port.split("/")[0])) as proxy:
        behind = settings.model_copy(update={"redis_url": f"redis://{proxy.address}/0"})
        with started("cut-off", *_worker_args("cut-off", behind, tmp_path, {})) as cut_off:
            await cut_off.async_wait_for("worker ready")
            async with running_api(settings) as base_url, RagClient(base_url) as client:
                accepted = [(await client.ask(f"question {i}"))["job_id"] for i in range(5)]
                answers = asyncio.gather(*(client.answer(job_id) for job_id in accepted))
                await asyncio.sleep(1.0)  # the cut-off worker is mid-answer
                proxy.pause()  # packets go nowhere: the worker's calls hang
                with started("taker", *_worker_args("taker", settings, tmp_path, {})) as taker:
                    await taker.async_wait_for("worker ready")
                    results = await asyncio.wait_for(answers, 60)
                    proxy.resume()  # the old attempts wake up and try to write
                    await asyncio.sleep(2.0)
                    for job_id, answer in zip(accepted, results, strict=True):
                        view = await assert_one_clean_answer(
                            settings, client, job_id, answer, tokens
                        )
                        assert view["worker"].endswith(f":{taker.pid}"), view
    assert "superseded" in cut_off.stdout() + cut_off.stderr()


@pytest.mark.timeout(180)
async def test_up_restarts_a_killed_worker_and_its_jobs_complete_there(
    llm: Any, tmp_path: Path
) -> None:
    tokens = 20
    llm.config.ttft, llm.config.tokens, llm.config.tokens_per_second = 1.5, tokens, 20
    port = free_port()
    env = bare_env(
        RAG_PORT=str(port),
        RAG_LLM_BASE_URL=llm.base_url,
        RAG_LLM_API_KEY="test-key",
        RAG_DEMO_CORPUS="false",
        **FAST_RECOVERY,
    )
    with started("up", [*console_script("rag-async"), "up"], env, tmp_path) as up:
        await up.async_wait_for("rag-async is up at", stream="stdout")
        async with RagClient(f"http://127.0.0.1:{port}") as client:
            accepted = [(await client.ask(f"question {i}"))["job_id"] for i in range(3)]
            for _ in range(100):  # until the worker holds them
                views = [await client.job(job_id) for job_id in accepted]
                if all(view["status"] == "in_progress" for view in views):
                    break
                await asyncio.sleep(0.05)
            doomed_pid = int(views[0]["worker"].rpartition(":")[2])
            os.kill(doomed_pid, signal.SIGKILL)
            try:
                answers = await asyncio.wait_for(
                    asyncio.gather(*(client.answer(job_id) for job_id in accepted)), 60
                )
            except Exception as error:
                pytest.fail(f"{error!r}\n{up.describe()}")
            for job_id, answer in zip(accepted, answers, strict=True):
                assert answer.final is not None and answer.final.type == "done", answer.final
                assert answer.text == expected_answer(tokens)
                view = await client.job(job_id)
                assert view["attempt"] == 2 and not view["worker"].endswith(f":{doomed_pid}")
        assert "restarting" in up.stderr(), up.describe()
        assert await up.async_terminate() == 0, up.describe()


@pytest.mark.timeout(60)
async def test_sigterm_hands_a_job_longer_than_the_grace_to_another_worker(
    settings: Settings, llm: Any, tmp_path: Path
) -> None:
    tokens = 10
    llm.config.ttft, llm.config.tokens, llm.config.tokens_per_second = 3.0, tokens, 50
    brief = {"RAG_WORKER_SHUTDOWN_GRACE": "1"}
    async with running_api(settings) as base_url, RagClient(base_url) as client:
        with started("stopping", *_worker_args("stopping", settings, tmp_path, brief)) as first:
            await first.async_wait_for("worker ready")
            job_id = (await client.ask("a long one"))["job_id"]
            for _ in range(100):
                if (await client.job(job_id))["status"] == "in_progress":
                    break
                await asyncio.sleep(0.05)
            assert await first.async_terminate() == 0, first.describe()
        with started("next", *_worker_args("next", settings, tmp_path, {})) as second:
            await second.async_wait_for("worker ready")
            answer = await asyncio.wait_for(client.answer(job_id), 30)
            view = await assert_one_clean_answer(settings, client, job_id, answer, tokens)
            assert view["attempt"] == 2 and view["worker"].endswith(f":{second.pid}"), view


async def test_a_job_over_its_time_limit_is_retried_then_dead_lettered(
    valkey: EmbeddedValkey, llm: Any, tmp_path: Path
) -> None:
    llm.config.ttft = 10.0  # never in time
    settings = make_settings(
        valkey,
        tmp_path,
        llm_base_url=llm.base_url,
        llm_api_key="test-key",
        question_timeout=1.0,
        llm_first_token_timeout=30.0,
        job_max_tries=2,
    )
    async with running_stack(settings) as stack:
        job_id = (await stack.client.ask("too slow?"))["job_id"]
        answer = await asyncio.wait_for(stack.client.answer(job_id), 30)
        assert answer.final is not None and answer.final.type == "error", answer.final
        assert answer.final.data["code"] == "dead_lettered"
        assert "longer than its limit of 1 s" in answer.final.data["message"]
        view = await stack.client.job(job_id)
        assert view["status"] == "failed" and view["attempt"] == 2, view
        assert [entry["job_id"] for entry in await stack.client.dead_letters()] == [job_id]


async def test_tries_spent_by_lost_workers_end_in_the_dead_letter_queue(
    valkey: EmbeddedValkey, llm: Any, tmp_path: Path
) -> None:
    settings = make_settings(
        valkey, tmp_path, llm_base_url=llm.base_url, llm_api_key="test-key", job_max_tries=2
    )
    async with running_stack(settings, with_worker=False) as stack:
        job_id = (await stack.client.ask("unlucky?"))["job_id"]
        async with Redis.from_url(settings.redis_url or "") as redis:
            # Two starts that never ended: what arq counts when workers die holding a job.
            await redis.set(retry_key_prefix + job_id, 2)
        async with running_worker(settings):
            answer = await asyncio.wait_for(stack.client.answer(job_id), 30)
        assert answer.final is not None and answer.final.type == "error", answer.final
        assert "the workers running it were lost" in answer.final.data["message"]
        assert (await stack.client.job(job_id))["status"] == "failed"
        assert [entry["job_id"] for entry in await stack.client.dead_letters()] == [job_id]


async def _stale_worker(redis: Redis, keys: Keys, worker_id: str, silent_for: float) -> None:
    """A worker in the heartbeat hash whose last beat is `silent_for` seconds old."""
    seconds, microseconds = await redis.time()
    beat = {"last_seen": seconds + microseconds / 1e6 - silent_for, "in_flight": 1}
    await redis.hset(keys.workers, worker_id, orjson.dumps(beat))  # type: ignore[misc]


@pytest.mark.timeout(60)
async def test_a_job_whose_worker_died_between_take_and_record_is_freed_in_seconds(
    valkey: EmbeddedValkey, llm: Any, tmp_path: Path
) -> None:
    """arq's in-progress key is set, the worker died before its job set named the job: no
    worker's set holds it, so only its key's age tells that it was lost."""
    tokens = 12
    llm.config.ttft, llm.config.tokens, llm.config.tokens_per_second = 0.0, tokens, 200
    settings = make_settings(
        valkey,
        tmp_path,
        llm_base_url=llm.base_url,
        llm_api_key="test-key",
        worker_heartbeat=0.5,
        worker_dead_after=2.0,
    )
    keys = Keys(settings.key_prefix)
    ttl = in_progress_ttl(settings, "questions")
    async with running_stack(settings, with_worker=False) as stack:
        job_id = (await stack.client.ask("taken by the dead?"))["job_id"]
        async with Redis.from_url(settings.redis_url or "") as redis:
            # What arq's start_jobs does, and the worker's silence after.
            await redis.psetex(keys.arq_in_progress(job_id), int(ttl * 1000), b"1")
            await _stale_worker(redis, keys, "dead:1", silent_for=60)
        async with running_worker(settings) as worker:
            # The age of the key is judged by the TTL arq itself gives it.
            assert [arq.in_progress_timeout_s for arq in worker.workers] == [
                in_progress_ttl(settings, lane) for lane in worker.lanes
            ]
            # Without freeing the key, the job would wait out its TTL (220 s).
            answer = await asyncio.wait_for(stack.client.answer(job_id), 30)
        await assert_one_clean_answer(settings, stack.client, job_id, answer, tokens)


@pytest.mark.timeout(60)
async def test_a_job_ending_stays_recorded_until_arq_has_finished_it(
    valkey: EmbeddedValkey, llm: Any, tmp_path: Path
) -> None:
    """arq calls its job end hook, then deletes the in-progress key: a job unrecorded between
    the two would look like one a dead worker took. A reaper run back to back while thirty
    answers end (each older than its grace) must free none of them."""
    llm.config.ttft, llm.config.tokens, llm.config.tokens_per_second = 1.2, 3, 200
    settings = make_settings(valkey, tmp_path, llm_base_url=llm.base_url, llm_api_key="test-key")
    keys = Keys(settings.key_prefix)
    ttls = {lane: in_progress_ttl(settings, lane) for lane in ("questions", "documents")}
    async with running_stack(settings) as stack, Redis.from_url(settings.redis_url or "") as redis:
        reaper = DeadWorkerReaper(redis, keys, "probe", 1.0, ttls)
        jobs = [(await stack.client.ask(f"question {i}"))["job_id"] for i in range(30)]
        answers = asyncio.ensure_future(
            asyncio.gather(*(stack.client.answer(job_id) for job_id in jobs))
        )
        freed: list[str] = []
        while not answers.done():
            freed += await reaper.free_unrecorded()
        for job_id, answer in zip(jobs, await answers, strict=True):
            await assert_one_clean_answer(settings, stack.client, job_id, answer, 3)
    assert freed == []


async def test_the_reaper_frees_only_old_keys_that_no_worker_holds(
    valkey: EmbeddedValkey, tmp_path: Path
) -> None:
    """Run once, by hand, with each key's age set by its TTL: no clock in the test."""
    settings = make_settings(valkey, tmp_path)
    keys = Keys(settings.key_prefix)
    ttl = 220_000  # ms
    ages = {"lost": 5_000, "being-recorded": 500, "held-live": 5_000, "held-silent": 5_000}
    async with Redis.from_url(settings.redis_url or "") as redis:
        seconds, microseconds = await redis.time()
        due = seconds * 1000 + microseconds // 1000 - 1000
        await redis.zadd(keys.queue("questions"), {job_id: due for job_id in ages})
        await redis.zadd(keys.queue("questions"), {"later": due + 600_000})
        for job_id, age in {**ages, "later": 5_000}.items():
            await redis.psetex(keys.arq_in_progress(job_id), ttl - age, b"1")
        await _stale_worker(redis, keys, "live:1", silent_for=0)
        await redis.sadd(keys.worker_jobs("live:1"), "held-live")  # type: ignore[misc]
        await _stale_worker(redis, keys, "silent:1", silent_for=60)
        await redis.sadd(keys.worker_jobs("silent:1"), "held-silent")  # type: ignore[misc]
        reaper = DeadWorkerReaper(redis, keys, "me", 2.0, {"questions": ttl / 1000})
        freed = await reaper.reap(seconds + microseconds / 1e6)
        assert sorted(freed) == ["held-silent", "lost"]
        left = [job for job in [*ages, "later"] if await redis.exists(keys.arq_in_progress(job))]
        assert left == ["being-recorded", "held-live", "later"]
        assert await reaper.reap(seconds + microseconds / 1e6) == []  # nothing twice


async def test_sse_clients_that_vanish_release_their_subscriptions(settings: Settings) -> None:
    async with running_stack(settings, with_worker=False) as stack:
        job_id = (await stack.client.ask("is anyone listening?"))["job_id"]
        host, _, port = stack.base_url.removeprefix("http://").partition(":")
        request = f"GET /jobs/{job_id}/events HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
        for reads_first in [False] * 10 + [True] * 10:
            reader, writer = await asyncio.open_connection(host, int(port))
            writer.write(request)
            await writer.drain()
            if reads_first:  # the stream had begun
                assert b"200" in await reader.readline()
            writer.transport.abort()  # gone without a goodbye, maybe before the first byte
        channel = Keys(settings.key_prefix).live(job_id)
        async with Redis.from_url(settings.redis_url or "") as redis:
            for _ in range(100):
                subscribers = dict(await redis.pubsub_numsub(channel))[channel.encode()]
                if subscribers == 0:
                    break
                await asyncio.sleep(0.05)
        assert subscribers == 0, f"{subscribers} subscriptions outlived their clients"


async def test_a_worker_with_few_connections_waits_for_them_and_answers_everything(
    valkey: EmbeddedValkey, llm: Any, tmp_path: Path
) -> None:
    tokens = 30
    llm.config.ttft, llm.config.tokens, llm.config.tokens_per_second = 0.2, tokens, 30
    settings = make_settings(
        valkey,
        tmp_path,
        llm_base_url=llm.base_url,
        llm_api_key="test-key",
        redis_max_connections=4,
    )
    async with Redis.from_url(settings.redis_url or "") as redis:

        async def worker_connections() -> int:
            # The pool's: the nudge subscription (store/nudge.py) is one more, outside it.
            return sum(
                client["name"] == "rag-worker" and int(client.get("sub", 0)) == 0
                for client in await redis.client_list()
            )

        before = await worker_connections()  # other tests' workers, on the shared Valkey
        async with running_stack(settings) as stack:
            accepted = [(await stack.client.ask(f"question {i}"))["job_id"] for i in range(40)]
            answers = asyncio.gather(*(stack.client.answer(job_id) for job_id in accepted))
            most = 0
            while not answers.done():
                most = max(most, await worker_connections() - before)
                await asyncio.sleep(0.05)
            for job_id, answer in zip(accepted, await answers, strict=True):
                await assert_one_clean_answer(settings, stack.client, job_id, answer, tokens)
    assert 0 < most <= 4, most
