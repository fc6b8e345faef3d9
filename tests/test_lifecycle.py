"""A job's life beyond answering: cancellation, idempotent submission, graceful shutdown."""

from __future__ import annotations

import asyncio
import base64
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from rag_async.config import Settings
from rag_async.domain.errors import Conflict
from rag_async.domain.identity import LOCAL
from rag_async.domain.job import new_job_id
from rag_async.store.documents import DocumentRegistry
from rag_async.store.idempotency import STALE_AFTER, IdempotencyKeys
from rag_async.store.jobs import JobStore
from rag_async.store.keys import Keys
from tests.conftest import (
    Stack,
    cli_env,
    make_settings,
    rag_async_command,
    running_api,
    running_stack,
)
from tests.support.documents import add_document
from tests.support.openai_server import expected_answer
from tests.support.processes import Proc


async def _until(predicate: Any, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not await predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


async def test_cancel_a_queued_job(settings: Settings) -> None:
    async with running_stack(settings, with_worker=False) as stack:  # nobody takes it
        job_id = (await stack.client.ask("tea?"))["job_id"]
        async with httpx.AsyncClient(base_url=stack.base_url) as http:
            response = await http.delete(f"/jobs/{job_id}")
            assert response.status_code == 200
            assert response.json() == {"job_id": job_id, "status": "cancelled"}
            again = await http.delete(f"/jobs/{job_id}")
            assert again.status_code == 409 and again.json()["error"]["code"] == "job_ended"
        events = [event async for event in stack.client.follow(job_id)]
        assert [event.type for event in events] == ["cancelled"]
        assert (await stack.client.job(job_id))["status"] == "cancelled"
        async with Redis.from_url(settings.redis_url or "") as redis:
            assert await redis.zcard(Keys(settings.key_prefix).queue("questions")) == 0


async def test_cancel_a_running_job_closes_its_llm_stream(stack: Stack, llm: Any) -> None:
    llm.config.ttft, llm.config.tokens, llm.config.tokens_per_second = 0.0, 400, 40  # ~10 s
    disconnects_before = llm.stats.disconnects
    job_id = (await stack.client.ask("tea?"))["job_id"]
    seen: list[str] = []
    async with httpx.AsyncClient(base_url=stack.base_url) as http:
        async for event in stack.client.follow(job_id):
            seen.append(event.type)
            if event.type == "token" and seen.count("token") == 2:
                asked = time.monotonic()
                response = await http.delete(f"/jobs/{job_id}")
                assert response.json().get("status") == "cancelling", response.text
    assert seen[-1] == "cancelled" and "done" not in seen
    assert time.monotonic() - asked < 1.5, "a running job is aborted within about a second"
    view = await stack.client.job(job_id)
    assert view["status"] == "cancelled"
    # The worker hung up on the LLM: no further tokens are paid for.
    await _until(lambda: _true(llm.stats.disconnects > disconnects_before))
    await _until(lambda: _true(llm.stats.active_streams == 0))


async def _true(value: bool) -> bool:
    return value


async def test_a_client_that_leaves_cancels_nothing(stack: Stack, llm: Any) -> None:
    llm.config.tokens, llm.config.tokens_per_second = 30, 60  # ~0.5 s
    job_id = (await stack.client.ask("tea?"))["job_id"]
    async for event in stack.client.follow(job_id):
        if event.type == "token":
            break  # the client goes away mid-answer
    await _until(lambda: _status_is(stack, job_id, "complete"))
    assert (await stack.client.job(job_id))["answer"] == expected_answer(30)


async def _status_is(stack: Stack, job_id: str, status: str) -> bool:
    return bool((await stack.client.job(job_id))["status"] == status)


async def test_idempotency_key_returns_the_same_job(settings: Settings) -> None:
    async with (
        running_stack(settings, with_worker=False) as stack,
        httpx.AsyncClient(base_url=stack.base_url) as http,
    ):
        key = {"Idempotency-Key": "order-42"}
        first = await http.post("/chat", json={"query": "tea?"}, headers=key)
        repeat = await http.post("/chat", json={"query": "tea?"}, headers=key)
        assert first.status_code == repeat.status_code == 202
        assert repeat.json()["job_id"] == first.json()["job_id"]
        other = await http.post("/chat", json={"query": "coffee?"}, headers=key)
        assert other.status_code == 409
        assert other.json()["error"]["code"] == "idempotency_key_reused"
        document = {"text": "Tea is a drink.", "title": "Tea"}
        one = await http.post("/documents", json=document, headers={"Idempotency-Key": "doc"})
        two = await http.post("/documents", json=document, headers={"Idempotency-Key": "doc"})
        assert one.json()["job_id"] == two.json()["job_id"]
        async with Redis.from_url(settings.redis_url or "") as redis:
            keys = Keys(settings.key_prefix)
            # One job of each in line (waiting its turn: no worker runs), not 2.
            for lane in ("questions", "documents"):
                queued = await redis.zcard(keys.queue(lane))
                assert queued + await redis.hlen(keys.waiting_jobs(lane)) == 1


async def test_sigterm_lets_a_running_answer_finish(
    settings: Settings, llm: Any, tmp_path: Path
) -> None:
    llm.config.ttft, llm.config.tokens, llm.config.tokens_per_second = 1.5, 10, 50
    env = cli_env(settings, RAG_WORKER_SHUTDOWN_GRACE="15")
    async with running_api(settings) as base_url:
        worker = Proc("worker", rag_async_command("worker"), env, tmp_path)
        try:
            await worker.async_wait_for("worker ready")
            async with httpx.AsyncClient(base_url=base_url) as http:
                job_id = (await http.post("/chat", json={"query": "tea?"})).json()["job_id"]

                async def running() -> bool:
                    status = (await http.get(f"/jobs/{job_id}")).json()["status"]
                    return bool(status == "in_progress")

                await _until(running)
                code = await asyncio.to_thread(worker.terminate, 20)
                assert code == 0, worker.describe()
                view = (await http.get(f"/jobs/{job_id}")).json()
            assert view["status"] == "complete", worker.describe()
            assert view["answer"] == expected_answer(10)
        finally:
            worker.process.kill()


async def test_dead_letters_can_be_listed_requeued_and_dropped(valkey: Any, tmp_path: Path) -> None:
    from tests.conftest import run_cli
    from tests.support.openai_server import ServerConfig, serve_openai

    port, settings = _llm_down(
        valkey,
        tmp_path,
        job_max_tries=2,
    )
    async with running_stack(settings) as stack:
        job_id = (await stack.client.ask("tea?"))["job_id"]
        events = [event async for event in stack.client.follow(job_id)]
        assert events[-1].type == "error" and events[-1].data["code"] == "dead_lettered"
        assert "gave up after 2 tries" in events[-1].data["message"]
        [entry] = await stack.client.dead_letters()
        assert (entry["job_id"], entry["request"], entry["attempts"]) == (job_id, "tea?", 2)
        env = cli_env(settings, RAG_API_URL=stack.base_url)
        listed = await asyncio.to_thread(run_cli, "dlq", "list", env=env)
        assert job_id in listed.stdout and "1 dead letter\n" in listed.stdout

        async with serve_openai(ServerConfig(tokens=5, tokens_per_second=0), port=port):
            await stack.client.requeue(job_id)  # the LLM is back: this time it answers
            resumed = [event async for event in stack.client.follow(job_id, after=events[-1].id)]
        assert resumed[0].type == "status" and resumed[0].data["stage"] == "requeued"
        assert resumed[-1].type == "done"
        assert resumed[-1].data["answer"] == expected_answer(5)
        assert (await stack.client.job(job_id))["attempt"] == 3
        assert await stack.client.dead_letters() == []
        async with httpx.AsyncClient(base_url=stack.base_url) as http:
            assert (await http.delete(f"/dead-letters/{job_id}")).status_code == 404
        purged = await asyncio.to_thread(run_cli, "dlq", "purge", env=env)
        assert "dropped 0 dead letters" in purged.stdout, purged.stderr


async def test_a_breaker_defers_jobs_while_the_llm_is_down(valkey: Any, tmp_path: Path) -> None:
    from tests.support.openai_server import ServerConfig, serve_openai

    port, settings = _llm_down(
        valkey,
        tmp_path,
        llm_max_retries=0,
        breaker_threshold=2,
        breaker_reset=8.0,
        job_max_tries=3,
        worker_heartbeat=0.3,
    )
    async with running_stack(settings) as stack, httpx.AsyncClient(base_url=stack.base_url) as http:
        job_id = (await stack.client.ask("tea?"))["job_id"]

        async def breaker_reported_open() -> bool:
            return bool((await http.get("/readyz")).json()["breakers"].get("llm") == "open")

        await _until(breaker_reported_open, within=20)  # two failed tries opened it
        assert (await stack.client.job(job_id))["attempt"] == 2
        # Its third try falls while the breaker is open: deferred, not spent, until the
        # breaker half-opens and the job itself is the probe.
        await asyncio.sleep(2.0)
        assert (await stack.client.job(job_id))["status"] != "failed"
        async with serve_openai(ServerConfig(tokens=5, tokens_per_second=0), port=port):
            await _until(lambda: _status_is(stack, job_id, "complete"), within=20)
        view = await stack.client.job(job_id)
    # Had the deferrals counted, the third try would have been its last and it would have
    # been dead-lettered long before the LLM came back.
    assert view["answer"] == expected_answer(5) and view["attempt"] == 3


def _llm_down(valkey: Any, tmp_path: Path, **overrides: Any) -> tuple[int, Settings]:
    """Settings whose LLM is at a free port where nothing listens yet, and that port (a test
    brings the LLM up there with `serve_openai(port=...)`)."""
    from rag_async.local.valkey import free_port
    from tests.conftest import make_settings

    port = free_port()
    llm_base_url = f"http://127.0.0.1:{port}/v1"
    return port, make_settings(
        valkey, tmp_path, llm_base_url=llm_base_url, llm_api_key="k", **overrides
    )


async def test_cancelling_a_queued_ingestion_ends_it_as_a_worker_would(
    valkey: Any, tmp_path: Path, llm: Any
) -> None:
    """The API's cancel of a queued job is the lifecycle's end too: the document kinds' hook
    runs (the registry no longer says `queued`, the bytes no longer count), the outcome is
    counted once and the webhook queued once."""
    settings = make_settings(
        valkey,
        tmp_path,
        llm_base_url=llm.base_url,
        webhook_secret="whsec_" + base64.b64encode(b"k" * 32).decode(),
        webhook_hosts="127.0.0.1",
    )
    keys = Keys(settings.key_prefix)
    text = "# Tea\n\nGreen tea brews at 80 degrees."
    async with (
        running_stack(settings, with_worker=False) as stack,  # nobody takes it
        httpx.AsyncClient(base_url=stack.base_url) as http,
        Redis.from_url(settings.redis_url or "") as redis,
    ):
        body = {"text": text, "title": "Tea", "webhook_url": "http://127.0.0.1:9/hook"}
        accepted = (await http.post("/documents", json=body)).json()
        job_id, document_id = accepted["job_id"], accepted["document_id"]
        registry = DocumentRegistry(redis, keys)
        assert await registry.stored_bytes("") == len(text.encode())
        response = await http.delete(f"/jobs/{job_id}")
        assert response.json() == {"job_id": job_id, "status": "cancelled"}
        document = (await http.get(f"/documents/{document_id}")).json()
        listed = (await http.get("/documents")).json()["documents"]
        assert document["status"] != "queued" and "cancelled" in document["error"]
        assert [d["size"] for d in listed if d["document_id"] == document_id] in ([], [None])
        assert await registry.stored_bytes("") == 0
        assert await redis.hget(keys.job_outcomes, "ingest:cancelled") == b"1"
        view = (await http.get(f"/jobs/{job_id}")).json()
        assert view["status"] == "cancelled" and view["webhook"]["state"] == "pending"
        # The delivery waits on the job's queue, once: the job itself was taken off it.
        queued = [m.decode() for m in await redis.zrange(keys.queue("documents"), 0, -1)]
        assert queued == [view["webhook"]["id"]]
        assert await redis.exists(keys.upload(job_id)) == 0


async def test_a_request_that_failed_after_claiming_its_idempotency_key_is_retried(
    settings: Settings,
) -> None:
    """A failure that is no refusal of ours (here a 500: Valkey answers an error) between
    the claim and the job's record: the retry with the same key creates the job."""
    keys = Keys(settings.key_prefix)
    async with (
        running_stack(settings, with_worker=False) as stack,
        httpx.AsyncClient(base_url=stack.base_url) as http,
        Redis.from_url(settings.redis_url or "") as redis,
    ):
        # The record's write needs this key to be a sorted set: a string fails it.
        await redis.set(keys.unfinished_jobs(""), "not a sorted set")
        for path, body in (("/chat", {"query": "tea?"}), ("/documents", {"text": "Tea."})):
            key = {"Idempotency-Key": f"retry-{path}"}
            failed = await http.post(path, json=body, headers=key)
            assert failed.status_code == 500, failed.text
            await redis.delete(keys.unfinished_jobs(""))
            retried = await http.post(path, json=body, headers=key)
            assert retried.status_code == 202, retried.text
            job_id = retried.json()["job_id"]
            assert (await http.get(f"/jobs/{job_id}")).status_code == 200
            again = await http.post(path, json=body, headers=key)
            assert again.json()["job_id"] == job_id
            await redis.set(keys.unfinished_jobs(""), "not a sorted set")


async def test_an_idempotency_claim_stays_with_a_created_job_and_a_stale_one_is_taken(
    settings: Settings,
) -> None:
    keys = Keys(settings.key_prefix)
    async with Redis.from_url(settings.redis_url or "") as redis:
        claims = IdempotencyKeys(redis, keys, ttl=600)
        jobs = JobStore(redis, keys, ttl=600)
        created, other = new_job_id(), new_job_id()
        assert await claims.claim("made", LOCAL, b"tea?", created) == created
        await jobs.create(created, "answer", {"query": "tea?"})
        # A failure after the record: the claim stays, and stands for the job.
        await claims.release("made", LOCAL, created)
        assert await claims.claim("made", LOCAL, b"tea?", other) == created

        # A request that claimed and then lost Valkey, so that it could not release.
        lost = new_job_id()
        assert await claims.claim("lost", LOCAL, b"tea?", lost) == lost
        with pytest.raises(Conflict) as in_use:  # it may still be creating its job
            await claims.claim("lost", LOCAL, b"tea?", other)
        assert in_use.value.code == "idempotency_key_in_use"
        [claim_key] = [
            key
            async for key in redis.scan_iter(keys.idempotency("*"))
            if (await redis.get(key) or b"").startswith(lost.encode())
        ]
        await redis.expire(claim_key, 600 - STALE_AFTER - 1)  # as it stands that long after
        assert await claims.claim("lost", LOCAL, b"tea?", other) == other


async def test_a_dead_lettered_ingestion_keeps_its_upload_for_its_requeue(
    valkey: Any, tmp_path: Path, llm: Any
) -> None:
    """The ingest kind keeps its upload while it is a dead letter (worker/kinds.py): the
    requeue ingests it; the end after that drops it."""
    values: dict[str, Any] = {"llm_base_url": llm.base_url, "job_max_tries": 1}
    hurried = make_settings(valkey, tmp_path, document_timeout=0.000_1, **values)
    keys = Keys(hurried.key_prefix)
    async with running_stack(hurried) as stack:  # no ingestion ends in a tenth of a ms
        accepted = await add_document(stack.client, "Green tea brews at 80 degrees.", title="Tea")
        job_id = accepted["job_id"]
        events = [event async for event in stack.client.follow(job_id)]
        assert events[-1].data["code"] == "dead_lettered", events[-1]
    settings = hurried.model_copy(update={"document_timeout": 600.0})
    async with (
        running_stack(settings) as stack,
        Redis.from_url(settings.redis_url or "") as redis,
    ):
        assert await redis.exists(keys.upload(job_id)) == 1
        await stack.client.requeue(job_id)
        resumed = [event async for event in stack.client.follow(job_id, after=events[-1].id)]
        assert resumed[-1].type == "done", resumed[-1]
        document = await stack.client.document(accepted["document_id"])
        assert document["status"] == "indexed" and document["chunks"] == 1
        assert await redis.exists(keys.upload(job_id)) == 0
        assert await redis.hget(keys.job_outcomes, "ingest:requeued") == b"1"
