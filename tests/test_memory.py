"""Valkey's memory: new work is refused before maxmemory while a reserve lets accepted jobs
end, uploads waiting for ingestion are bounded, a job is created whole or not at all (so a
multi-file upload refused part-way tells each file's fate), and a dead letter keeps its upload
so that it can be requeued. Against dedicated real Valkey servers with a small maxmemory, the
real app under uvicorn and a real worker."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from rag_async.client.api import RagClient
from rag_async.domain.errors import StoreFull
from rag_async.domain.events import ErrorEvent
from rag_async.domain.job import JobStatus, record_fields
from rag_async.local.valkey import EmbeddedValkey, free_port
from rag_async.store.events import EventLog
from rag_async.store.jobs import JobEnd, JobStore
from rag_async.store.keys import Keys
from rag_async.store.uploads import Uploads
from tests.conftest import make_settings, running_api, running_stack, running_worker
from tests.support.openai_server import serve_openai

_WORDS = "tea leaf water kettle steep brew green black oolong cup pot milk sugar heat".split()


def text_of(size: int, seed: int) -> bytes:
    """`size` bytes of text unlike any other seed's (so no upload is skipped as unchanged)."""
    rng = random.Random(seed)
    words = [f"doc{seed}"] + [rng.choice(_WORDS) for _ in range(size // 5)]
    return " ".join(words).encode()[:size]


@pytest.fixture
async def small_valkey(tmp_path: Path) -> AsyncIterator[EmbeddedValkey]:
    """A Valkey of its own, at a memory limit a test fills in seconds (noeviction, as `up`
    runs it)."""
    server = EmbeddedValkey(tmp_path / "small-valkey", appendonly=False, maxmemory="8mb")
    server.start()
    yield server
    server.stop()


async def until(check: Callable[[], Awaitable[bool]], within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not await check():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.2)


def refusal(response: httpx.Response) -> dict[str, Any]:
    """A refusal in the one JSON error shape, with a Retry-After, never a traceback."""
    assert response.headers["content-type"] == "application/json", response.text
    error: dict[str, Any] = response.json()["error"]
    assert int(response.headers["retry-after"]) >= 1
    return error


async def test_an_upload_flood_at_valkeys_limit_ends_every_accepted_job_then_recovers(
    small_valkey: EmbeddedValkey, tmp_path: Path
) -> None:
    settings = make_settings(small_valkey, tmp_path, worker_max_documents=2)
    accepted: list[str] = []
    refused: list[httpx.Response] = []
    async with (
        running_stack(settings) as stack,
        httpx.AsyncClient(base_url=stack.base_url, timeout=60) as http,
    ):

        async def flood(lane: int) -> None:
            for n in range(lane, 48, 6):
                files = {"files": (f"flood-{n}.txt", text_of(200_000, n))}
                response = await http.post("/documents", files=files)
                if response.status_code == 202:
                    accepted.append(response.json()["job_id"])
                else:
                    refused.append(response)

        await asyncio.gather(*(flood(lane) for lane in range(6)))
        # The flood met the line: some uploads were refused, as JSON that says why.
        assert accepted and refused, (len(accepted), len(refused))
        for response in refused:
            assert response.status_code == 507, response.text
            error = refusal(response)
            assert error["code"] == "insufficient_storage", error
            assert "nearly full" in error["message"], error

        async def all_ended() -> bool:
            views = [await stack.client.job(job_id) for job_id in accepted]
            return all(view["status"] in ("complete", "failed") for view in views)

        # The reserve let the worker write what ending a job takes: every accepted job ends.
        await until(all_ended, 240, "accepted uploads still unfinished")
        statuses = {(await stack.client.job(job_id))["status"] for job_id in accepted}
        assert statuses == {"complete"}
        async with Redis.from_url(small_valkey.url) as redis:
            assert await Uploads(redis, Keys(settings.key_prefix)).pending_bytes() == 0

        # Once the flood has drained, questions are taken and answered again.
        question = await http.post("/chat", json={"query": "How is green tea brewed?"})
        assert question.status_code == 202, question.text
        events = [event async for event in stack.client.follow(question.json()["job_id"])]
        assert events[-1].type == "done", events[-1]


async def test_a_multi_file_upload_refused_part_way_tells_each_files_fate(
    small_valkey: EmbeddedValkey, tmp_path: Path
) -> None:
    settings = make_settings(small_valkey, tmp_path)
    keys = Keys(settings.key_prefix)
    files = [(f"part-{n}.txt", text_of(200_000, n)) for n in range(12)]
    async with (
        running_api(settings) as base_url,
        httpx.AsyncClient(base_url=base_url, timeout=60) as http,
        Redis.from_url(small_valkey.url) as redis,
    ):
        # Room for a few of the twelve files below the line (maxmemory less the reserve).
        used = int((await redis.info("memory"))["used_memory"])
        line = used + 1_200_000
        await redis.config_set("maxmemory", int(line / (1 - settings.valkey_memory_reserve)))
        response = await http.post("/documents", files=[("files", f) for f in files])
        assert response.status_code == 202, response.text
        answer = response.json()
        await redis.config_set("maxmemory", "64mb")  # room for the worker's writes below
        documents, rejected = answer["documents"], answer["rejected"]
        assert documents and rejected
        assert len(documents) + len(rejected) == len(files)
        assert {r["status"] for r in rejected} == {507}
        assert {r["code"] for r in rejected} == {"insufficient_storage"}
        # Every file listed as refused has no job: the only jobs are the accepted files'.
        job_keys = {key.decode() async for key in redis.scan_iter(f"{keys.prefix}job:*")}
        assert job_keys == {keys.job(d["job_id"]) for d in documents}

        async with running_worker(settings), RagClient(base_url) as client:
            for document in documents:
                events = [event async for event in client.follow(document["job_id"])]
                assert events[-1].type == "done", events[-1]
        # Nothing stays queued.
        assert await redis.zcard(keys.queue("documents")) == 0
        assert await Uploads(redis, keys).pending_bytes() == 0


async def test_uploads_waiting_for_workers_are_bounded(
    small_valkey: EmbeddedValkey, tmp_path: Path
) -> None:
    settings = make_settings(small_valkey, tmp_path, max_pending_upload_bytes=1500)
    async with (
        running_api(settings) as base_url,
        httpx.AsyncClient(base_url=base_url, timeout=30) as http,
        Redis.from_url(small_valkey.url) as redis,
    ):
        uploads = Uploads(redis, Keys(settings.key_prefix))
        first = await http.post("/documents", files={"files": ("a.txt", text_of(1000, 1))})
        assert first.status_code == 202, first.text
        assert await uploads.pending_bytes() == 1000
        # A backlog that drains by itself as workers ingest: 429, to be retried.
        second = await http.post("/documents", json={"text": text_of(1000, 2).decode()})
        assert second.status_code == 429, second.text
        assert refusal(second)["code"] == "uploads_pending"
        # Taken off the queue, the first upload leaves the sum: the second now fits.
        assert (await http.delete(f"/jobs/{first.json()['job_id']}")).status_code == 200
        assert await uploads.pending_bytes() == 0
        again = await http.post("/documents", json={"text": text_of(1000, 2).decode()})
        assert again.status_code == 202, again.text
        # One upload always fits when none waits, however big beside the bound.
        assert (await http.delete(f"/jobs/{again.json()['job_id']}")).status_code == 200
        big = await http.post("/documents", files={"files": ("big.txt", text_of(5000, 3))})
        assert big.status_code == 202, big.text
        assert await uploads.pending_bytes() == 5000


async def test_the_sum_of_uploads_follows_every_way_an_upload_goes(
    small_valkey: EmbeddedValkey,
) -> None:
    async with Redis.from_url(small_valkey.url) as redis:
        keys = Keys("sum:")
        uploads = Uploads(redis, keys)
        jobs = JobStore(redis, keys, 1, uploads)  # records (and uploads) live a second
        fields = {"owner": "me"}
        assert await jobs.create("a" * 32, "ingest", fields, upload=b"x" * 100) == "created"
        assert await jobs.create("b" * 32, "ingest", fields, upload=b"y" * 10) == "created"
        assert await uploads.pending_bytes() == 110
        # A dead letter keeps its upload (for a requeue); a forgotten one drops it.
        end = ErrorEvent(message="gave up", code="dead_lettered")
        last = record_fields(status=JobStatus.FAILED, outcome="dead_lettered")
        event_id = await EventLog(redis, keys, 1).append("b" * 32, end, last)
        await jobs.settle(JobEnd("b" * 32, "ingest", "dead_lettered", event_id), keep_upload=True)
        assert await uploads.get("b" * 32) == b"y" * 10
        await uploads.drop("b" * 32)
        await uploads.drop("b" * 32)  # twice: counted once
        assert await uploads.pending_bytes() == 100
        # One that expires before it is dropped leaves the sum at the next upload.
        await until(lambda: _gone(redis, keys.upload("a" * 32)), 5, "upload not expired")
        await asyncio.sleep(1.1)  # its index entry's second has passed too
        assert await jobs.create("c" * 32, "ingest", fields, upload=b"z" * 7) == "created"
        assert await uploads.pending_bytes() == 7


async def test_a_job_refused_at_valkeys_limit_leaves_nothing_behind(
    small_valkey: EmbeddedValkey,
) -> None:
    async with Redis.from_url(small_valkey.url) as redis:
        keys = Keys("full:")
        jobs = JobStore(redis, keys, 60)
        await redis.config_set("maxmemory", 1)  # far past its limit: every write is refused
        try:
            with pytest.raises(StoreFull) as refused:
                await jobs.create("d" * 32, "ingest", {"owner": "me"}, upload=b"x" * 100)
        finally:
            await redis.config_set("maxmemory", "8mb")
        assert refused.value.status_code == 507 and "not accepted" in refused.value.message
        assert [key async for key in redis.scan_iter("full:*")] == []
        assert not await redis.exists(keys.arq_job("d" * 32))


async def _gone(redis: Redis, key: str) -> bool:
    return not await redis.exists(key)


async def test_a_requeued_dead_lettered_ingestion_finds_its_upload(
    valkey: EmbeddedValkey, tmp_path: Path
) -> None:
    port = free_port()
    settings = make_settings(
        valkey,
        tmp_path,
        embed_model="test-embed",
        embed_base_url=f"http://127.0.0.1:{port}/v1",
        embed_api_key="k",
        llm_max_retries=0,
        job_max_tries=2,
    )
    embedder = AsyncExitStack()
    await embedder.enter_async_context(serve_openai(port=port))  # up while the worker starts
    async with running_stack(settings, with_worker=False) as stack, running_worker(settings):
        await embedder.aclose()  # then down: every try of the ingestion fails
        accepted = await stack.client.upload([("tea.txt", text_of(2000, 7))])
        job_id = accepted["job_id"]
        events = [event async for event in stack.client.follow(job_id)]
        assert events[-1].type == "error" and events[-1].data["code"] == "dead_lettered"

        async with serve_openai(port=port):  # the cause is gone
            await stack.client.requeue(job_id)
            resumed = [event async for event in stack.client.follow(job_id, after=events[-1].id)]
        assert resumed[-1].type == "done", resumed[-1]
        document = await stack.client.document(accepted["documents"][0]["document_id"])
        assert document["status"] == "indexed"
        async with Redis.from_url(valkey.url) as redis:
            keys = Keys(settings.key_prefix)
            assert not await redis.exists(keys.upload(job_id))  # dropped at its real end
            assert await Uploads(redis, keys).pending_bytes() == 0
