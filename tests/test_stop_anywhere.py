"""Stop works from anywhere: a cancel sent to one API process stops the job whichever process
the client streams it from. Two real `rag-async api` processes and one real `rag-async worker`
process share only Valkey (and the test LLM server), as replicas behind a load balancer do:
nothing of a cancel may live in one API process's memory."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from redis.asyncio import Redis

from rag_async.client.api import RagClient
from rag_async.config import Settings
from rag_async.local.valkey import free_port
from rag_async.store.keys import Keys
from rag_async.worker.ends import Ends
from tests.conftest import cli_env, rag_async_command, running_stack, running_worker
from tests.support.openai_server import expected_answer
from tests.support.processes import Proc, started

# Long enough that a job which was not stopped cannot end during the test (~100 s), so
# "the stream ended with `cancelled` within a generous bound" says the cancel got through.
SLOW_TOKENS, SLOW_TPS = 4000, 40
STOPPED_WITHIN = 20.0  # seconds; the slow answer would need five times as long


@dataclass
class Replicas:
    """Two API processes on distinct ports, one worker, the LLM they talk to."""

    one: RagClient
    two: RagClient
    one_url: str
    two_url: str
    worker: Proc
    llm: Any


async def _serving(proc: Proc, base_url: str, within: float = 60) -> None:
    deadline = time.monotonic() + within
    async with httpx.AsyncClient(base_url=base_url, timeout=2) as http:
        while True:
            code = proc.process.poll()
            assert code is None, f"{proc.name} exited ({code})\n{proc.describe()}"
            try:
                if (await http.get("/healthz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"{proc.name} not serving\n{proc.describe()}"
            await asyncio.sleep(0.1)


@pytest.fixture
async def replicas(settings: Settings, tmp_path: Path, llm: Any) -> AsyncIterator[Replicas]:
    # One question at a time in the worker: a second one stays queued behind the first.
    worker_env = cli_env(settings, RAG_WORKER_MAX_JOBS="1")
    ports = free_port(), free_port()
    with (
        started("worker", rag_async_command("worker"), worker_env, tmp_path) as worker,
        started("api-1", rag_async_command("api"), _api_env(settings, ports[0]), tmp_path) as a,
        started("api-2", rag_async_command("api"), _api_env(settings, ports[1]), tmp_path) as b,
    ):
        one_url, two_url = (f"http://127.0.0.1:{port}" for port in ports)
        await worker.async_wait_for("worker ready")
        await _serving(a, one_url)
        await _serving(b, two_url)
        async with RagClient(one_url) as one, RagClient(two_url) as two:
            yield Replicas(one, two, one_url, two_url, worker, llm)
        for proc in (a, b, worker):  # uvicorn re-raises the SIGTERM once it has shut down
            assert await proc.async_terminate() in (0, -signal.SIGTERM), proc.describe()


def _api_env(settings: Settings, port: int) -> dict[str, str]:
    return cli_env(settings, RAG_PORT=str(port))


async def _until(predicate: Any, what: str, within: float = 20.0) -> None:
    deadline = time.monotonic() + within
    while not await predicate():
        assert time.monotonic() < deadline, f"{what}: not within {within} s"
        await asyncio.sleep(0.05)


async def _status(client: RagClient, job_id: str) -> str:
    return str((await client.job(job_id))["status"])


async def _worker_hung_up(llm: Any, requests_before: int) -> None:
    """The worker closed its LLM stream: the LLM server saw the client leave, and streams
    nothing more, so no further tokens are produced (or paid for)."""

    async def hung_up() -> bool:
        calls = llm.stats.calls
        return bool(
            llm.stats.chat_requests == requests_before + 1
            and calls[-1].outcome == "disconnected"
            and llm.stats.active_streams == 0
        )

    await _until(hung_up, "the worker hung up on the LLM")


@pytest.mark.timeout(150)
async def test_native_cancel_on_one_api_stops_a_job_streamed_from_another(
    replicas: Replicas,
) -> None:
    llm = replicas.llm
    llm.config.ttft, llm.config.tokens, llm.config.tokens_per_second = 0.0, SLOW_TOKENS, SLOW_TPS
    requests_before = llm.stats.chat_requests
    job_id = (await replicas.one.ask("tea?"))["job_id"]
    seen: list[str] = []
    asked = 0.0
    async with asyncio.timeout(SLOW_TOKENS / SLOW_TPS / 2):  # fails well before it could end
        async for event in replicas.one.follow(job_id):  # streamed from API 1
            seen.append(event.type)
            if event.type == "token" and seen.count("token") == 2:
                asked = time.monotonic()
                assert (await replicas.two.cancel(job_id))["status"] == "cancelling"  # API 2
    assert seen[-1] == "cancelled" and "done" not in seen, seen
    assert time.monotonic() - asked < STOPPED_WITHIN, "API 1's stream ended promptly"
    await _worker_hung_up(llm, requests_before)
    for client in (replicas.one, replicas.two):
        view = await client.job(job_id)
        assert view["status"] == "cancelled", view
        # Stopped mid-answer: what was written is a small part of the slow answer.
        assert len(view["answer"] or "") < len(expected_answer(SLOW_TOKENS)) // 2
    # Asked again from either process, it has ended: nothing to cancel.
    async with httpx.AsyncClient(base_url=replicas.one_url) as http:
        again = await http.delete(f"/jobs/{job_id}")
    assert again.status_code == 409 and again.json()["error"]["code"] == "job_ended"


@pytest.mark.timeout(150)
async def test_v1_cancel_on_one_api_stops_a_response_streamed_from_another(
    replicas: Replicas,
) -> None:
    llm = replicas.llm
    llm.config.ttft, llm.config.tokens, llm.config.tokens_per_second = 0.0, SLOW_TOKENS, SLOW_TPS
    requests_before = llm.stats.chat_requests
    one = openai.AsyncOpenAI(base_url=f"{replicas.one_url}/v1", api_key="unused", max_retries=0)
    two = openai.AsyncOpenAI(base_url=f"{replicas.two_url}/v1", api_key="unused", max_retries=0)
    async with one, two:
        kinds: list[str] = []
        response_id, asked, cancelled_status = "", 0.0, ""
        async with asyncio.timeout(SLOW_TOKENS / SLOW_TPS / 2):
            async for event in await one.responses.create(input="tea?", stream=True):  # API 1
                kinds.append(event.type)
                if event.type == "response.created":
                    response_id = event.response.id
                if event.type == "response.output_text.delta" and kinds.count(event.type) == 2:
                    asked = time.monotonic()
                    cancelled_status = (await two.responses.cancel(response_id)).status  # API 2
        assert kinds[-1] == "response.cancelled", kinds
        assert "response.completed" not in kinds
        assert time.monotonic() - asked < STOPPED_WITHIN, "API 1's stream ended promptly"
        # The cancel waits briefly for the worker; a busy machine may answer before it stopped.
        assert cancelled_status in ("cancelled", "in_progress"), cancelled_status
        await _worker_hung_up(llm, requests_before)
        for client in (one, two):
            assert (await client.responses.retrieve(response_id)).status == "cancelled"
    job_id = response_id.removeprefix("resp_")
    for native in (replicas.one, replicas.two):
        assert await _status(native, job_id) == "cancelled"


@pytest.mark.timeout(150)
@pytest.mark.parametrize("route", ["native", "v1"])
async def test_a_queued_job_cancelled_on_another_api_never_runs(
    replicas: Replicas, route: str
) -> None:
    llm = replicas.llm
    # The worker's one question slot is held by a job whose answer never starts.
    llm.config.ttft, llm.config.tokens, llm.config.tokens_per_second = 600.0, 12, 200
    requests_before = llm.stats.chat_requests
    holder = (await replicas.one.ask("hold the worker"))["job_id"]
    await _until(lambda: _holding(llm, requests_before), "the worker called the LLM")
    queued = (await replicas.one.ask("wait your turn"))["job_id"]  # through API 1
    assert await _status(replicas.two, queued) == "queued"

    if route == "native":  # through API 2
        assert (await replicas.two.cancel(queued))["status"] == "cancelled"
    else:
        async with openai.AsyncOpenAI(
            base_url=f"{replicas.two_url}/v1", api_key="unused", max_retries=0
        ) as two:
            assert (await two.responses.cancel(f"resp_{queued}")).status == "cancelled"
    for client in (replicas.one, replicas.two):
        assert await _status(client, queued) == "cancelled"
    events = [event async for event in replicas.one.follow(queued)]  # API 1's stream ends
    assert [event.type for event in events] == ["cancelled"]

    # Free the worker, then ask once more: first in, first out, so by the time this later
    # question is answered the cancelled one would have run, had it still been queued.
    llm.config.ttft = 0.0
    assert (await replicas.one.cancel(holder))["status"] == "cancelling"
    later = await replicas.two.answer((await replicas.two.ask("and now?"))["job_id"])
    assert later.final is not None and later.final.type == "done", later
    assert later.text == expected_answer(12)
    # Two calls of the LLM: the holder and the later question; none for the cancelled one.
    assert llm.stats.chat_requests == requests_before + 2
    view = await replicas.two.job(queued)
    assert view["status"] == "cancelled" and view["attempt"] == 0 and view["worker"] is None, view
    assert [event.type async for event in replicas.two.follow(queued)] == ["cancelled"]


async def _holding(llm: Any, requests_before: int) -> bool:
    return bool(llm.stats.chat_requests > requests_before and llm.stats.active_streams == 1)


async def test_a_cancel_that_arq_reads_before_the_job_starts_still_ends_it(
    settings: Settings, llm: Any
) -> None:
    """The cancel of a job a worker has just taken (its in-progress key set, its function not
    called yet) is arq's abort, and arq may read it before starting the job: it then drops
    the run without calling the job's function. The job still ends, cancelled, and its
    stream with it. Here the worker finds what that cancel wrote before it takes the job."""
    requests_before = llm.stats.chat_requests
    async with running_stack(settings, with_worker=False) as stack:
        job_id = (await stack.client.ask("tea?"))["job_id"]
        async with Redis.from_url(settings.redis_url or "") as redis:
            ends = Ends.open(redis, Keys(settings.key_prefix), settings)
            # What `ends.cancel` writes when the job is no longer waiting: asked, then aborted.
            await ends.jobs.request_cancel(job_id)
            await ends.queue.abort(job_id, "answer")
            async with running_worker(settings):
                async with asyncio.timeout(30):
                    events = [event.type async for event in stack.client.follow(job_id)]
        assert events == ["cancelled"]
        view = await stack.client.job(job_id)
        assert view["status"] == "cancelled" and view["attempt"] == 0, view
        assert llm.stats.chat_requests == requests_before  # it never ran
