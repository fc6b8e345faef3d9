"""What one giant passage can cost (issue 19, finding 2): a stored chunk of one 5 MB token,
written straight into the worker's chunk store (as a store written before chunks were capped
holds it), must not make a large job record, event log, job view, stream or prompt; and each
key's stored results are bounded, refused past the bound and released as they expire. Against
the real app under uvicorn, a real worker, the real Valkey and the OpenAI-compatible test
server."""

from __future__ import annotations

import asyncio
import secrets
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
from redis.asyncio import Redis

from rag_async.config import Settings
from rag_async.domain.events import DoneEvent, SourcesEvent, TokenEvent
from rag_async.domain.job import JobStatus, record_fields
from rag_async.domain.sources import Source
from rag_async.local.valkey import EmbeddedValkey
from rag_async.providers.parsing.chunking import Chunk
from rag_async.providers.retrieval import LexicalEncoder
from rag_async.store.events import EventLog
from rag_async.store.jobs import JobEnd, JobStore
from rag_async.store.keys import Keys
from rag_async.store.results import ResultBytes
from rag_async.worker.process import WorkerProcess
from tests.conftest import running_api, running_stack
from tests.test_auth import ALICE, BOB, as_, finished, keyed_settings

GIANT = 5_000_000  # characters of one token without a space
QUESTION = "what does the giant ledger say?"
QUESTIONS = 20


async def store_giant_chunk(worker: WorkerProcess, collection: str) -> None:
    """One chunk of a single 5 MB token, written to the worker's chunk store as it is,
    bypassing the chunker (which would split it), and found by the question's words."""
    services = worker.services
    assert services is not None
    text = "g" * GIANT
    chunk = Chunk(index=0, text=text, start=0, end=len(text), heading=None)
    sparse = LexicalEncoder().document("Giant ledger\n\ngiant ledger says")
    await services.store.upsert_chunks(
        "giant0000000000000000000", "Giant ledger", "giant.txt", [chunk], [sparse], None,
        collection=collection,
    )  # fmt: skip
    await services.store.flush()


async def used_memory(redis: Redis) -> int:
    info: dict[str, Any] = await redis.info("memory")
    return int(info["used_memory"])


async def sources_streamed(http: httpx.AsyncClient, job_id: str) -> list[dict[str, Any]]:
    """The `sources` event as the SSE endpoint sends it (the raw frame, as a client gets it)."""
    async with http.stream("GET", f"/jobs/{job_id}/events") as response:
        body = b"".join([part async for part in response.aiter_bytes()])
    assert len(body) < 100_000, len(body)
    for frame in body.replace(b"\r\n", b"\n").split(b"\n\n"):
        lines = frame.split(b"\n")
        if b"event: sources" in lines:
            data = b"".join(line[len(b"data: ") :] for line in lines if line.startswith(b"data:"))
            found: list[dict[str, Any]] = orjson.loads(data)["sources"]
            return found
    raise AssertionError("no sources event streamed")


async def test_a_stored_chunk_of_one_giant_token_keeps_results_small(
    settings: Settings, llm: Any
) -> None:
    """20 questions that each retrieve a 5 MB passage: each job view stays under 100 KB, the
    stream and the prompt carry the passage cut to RAG_MAX_SOURCE_CHARS and marked, and
    Valkey grows by less than 20 MB in all."""
    bound = settings.max_source_chars
    redis = Redis.from_url(settings.redis_url or "")
    async with (
        running_stack(settings) as stack,
        httpx.AsyncClient(base_url=stack.base_url, timeout=60) as http,
    ):
        assert stack.worker is not None
        await store_giant_chunk(stack.worker, settings.default_collection)
        before = await used_memory(redis)
        views: list[int] = []
        for _ in range(QUESTIONS):
            job_id = (await stack.client.ask(QUESTION))["job_id"]
            view = await finished(http, job_id)
            assert view["status"] == "complete", view
            views.append(len((await http.get(f"/jobs/{job_id}")).content))
            assert view["sources"][0]["truncated"] is True
            assert len(view["sources"][0]["text"]) <= bound
        grown = await used_memory(redis) - before
        streamed = await sources_streamed(http, job_id)
        prompt = orjson.dumps(llm.stats.last_chat_request)
    await redis.aclose()
    print(f"job view {max(views)} bytes; Valkey grew {grown / 1e6:.2f} MB over {QUESTIONS}")
    assert max(views) <= 100_000, views
    assert streamed[0]["truncated"] is True and len(streamed[0]["text"]) <= bound
    assert len(prompt) < 4 * bound, len(prompt)  # the passage went to the LLM cut too
    assert grown <= 20_000_000, grown


async def test_a_keys_stored_results_are_bounded(
    valkey: EmbeddedValkey, tmp_path: Path, llm: Any
) -> None:
    """Past RAG_MAX_RESULT_BYTES_PER_KEY a key's new jobs are refused (429, its code, a
    Retry-After), while another key is served."""
    settings = keyed_settings(valkey, tmp_path, llm, max_result_bytes_per_key=20_000)
    async with running_stack(settings) as stack, as_(stack, ALICE) as alice, as_(stack, BOB) as bob:
        refused: httpx.Response | None = None
        for _ in range(40):  # a few kilobytes each: the bound is met well before
            response = await alice.post("/chat", json={"query": "tea?"})
            if response.status_code != 202:
                refused = response
                break
            assert (await finished(alice, response.json()["job_id"]))["status"] == "complete"
        assert refused is not None, "the bound on stored results never refused a job"
        assert refused.status_code == 429, refused.text
        assert refused.headers["content-type"] == "application/json"
        assert refused.json()["error"]["code"] == "too_many_result_bytes"
        # The oldest result frees its bytes only when it expires: a day from now.
        assert int(refused.headers["retry-after"]) > settings.result_ttl - 60
        other = await bob.post("/chat", json={"query": "tea?"})
        assert other.status_code == 202, other.text
        assert (await finished(bob, other.json()["job_id"]))["status"] == "complete"


async def test_result_bytes_are_released_when_results_expire(valkey: EmbeddedValkey) -> None:
    """The tally follows what Valkey holds: the bytes of each event count for their owner
    (when the job ends),
    are released when the result expires, though the owner's other results live on (so the
    owner is served again), and the tally's own keys go with the last result they count."""
    redis = Redis.from_url(valkey.url)
    keys = Keys(f"t{secrets.token_hex(4)}:")
    bound = 10_000
    short, log = JobStore(redis, keys, 2), EventLog(redis, keys, 2)
    lasting, results = JobStore(redis, keys, 30), ResultBytes(redis, keys)

    async def create(jobs: JobStore, owner: str, job_id: str = "") -> str:
        job_id = job_id or secrets.token_hex(16)
        return await jobs.create(job_id, "answer", {"owner": owner}, max_result_bytes=bound)

    assert await create(lasting, "alice") == "created"  # a small result that lives on
    small = await results.stored("alice")
    big = secrets.token_hex(16)
    assert await create(short, "alice", big) == "created"
    ended = await log.append(big, TokenEvent(text="x" * 2 * bound))
    assert await results.stored("alice") < bound  # an unfinished job's events wait for its end
    assert await short.settle(JobEnd(big, "answer", "complete", ended)) == "settled"
    assert await results.stored("alice") > 2 * bound
    assert await short.settle(JobEnd(big, "answer", "complete", ended)) == "done"
    assert await results.stored("alice") < 3 * bound  # a settle run again counts nothing twice
    assert await create(short, "alice") == "too_many_result_bytes"
    assert await create(short, "bob") == "created"  # another key's results are its own
    assert await results.stored("alice") > 2 * bound  # a refused job counts nothing
    deadline = time.monotonic() + 10
    while await redis.exists(keys.job(big), keys.events(big)):
        assert time.monotonic() < deadline, "the big result never expired"
        await asyncio.sleep(0.2)
    await asyncio.sleep(1.1)  # the index counts whole seconds
    assert await create(short, "alice") == "created"  # the expired result was pruned here
    assert small < await results.stored("alice") < bound
    await redis.aclose()


async def test_a_results_tally_goes_with_the_last_result_it_counts(valkey: EmbeddedValkey) -> None:
    redis = Redis.from_url(valkey.url)
    keys = Keys(f"t{secrets.token_hex(4)}:")
    jobs, log, results = (
        JobStore(redis, keys, 2),
        EventLog(redis, keys, 2),
        ResultBytes(redis, keys),
    )
    job_id = secrets.token_hex(16)
    assert await jobs.create(job_id, "answer", {"owner": "carol"}) == "created"
    ended = await log.append(job_id, TokenEvent(text="tea"))
    assert await jobs.settle(JobEnd(job_id, "answer", "complete", ended)) == "settled"
    assert await results.stored("carol") > 0
    deadline = time.monotonic() + 10
    while await redis.exists(*results.script_keys("carol")):
        assert time.monotonic() < deadline, "carol's result tally outlived her results"
        await asyncio.sleep(0.2)
    assert not await redis.exists(keys.job(job_id), keys.events(job_id))
    await redis.aclose()


async def test_a_result_stored_before_the_bound_is_cut_when_shown(settings: Settings) -> None:
    """A record and a log written before passages were bounded (here, written directly) are
    shown bounded: the job view and the stream cut the passage, marked."""
    redis = Redis.from_url(settings.redis_url or "")
    keys = Keys(settings.key_prefix)
    jobs, log = JobStore(redis, keys, 600), EventLog(redis, keys, 600)
    job_id = secrets.token_hex(16)
    assert await jobs.create(job_id, "answer", {"owner": "", "query": QUESTION}) == "created"
    giant = Source(n=1, document_id="d" * 24, title="Giant", chunk=0, score=1.0, text="g" * GIANT)
    await log.append(job_id, SourcesEvent(sources=[giant]), record_fields(sources=[giant]))
    done = DoneEvent(answer="It is long [1].", timings={}, providers={})
    ended = record_fields(status=JobStatus.COMPLETE, answer=done.answer, outcome="complete")
    await log.append(job_id, done, ended)
    async with running_api(settings) as base_url, httpx.AsyncClient(base_url=base_url) as http:
        view = await http.get(f"/jobs/{job_id}")
        streamed = await sources_streamed(http, job_id)
    await redis.aclose()
    assert len(view.content) <= 100_000, len(view.content)
    shown = view.json()["sources"][0]
    assert shown["truncated"] is True and shown["text"].endswith("…")
    assert len(shown["text"]) <= settings.max_source_chars
    assert streamed[0]["truncated"] is True
    assert len(streamed[0]["text"]) <= settings.max_source_chars
