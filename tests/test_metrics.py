"""GET /metrics and a worker's own /metrics, scraped during real runs (API under uvicorn, a
worker, Valkey, the OpenAI-compatible test server): the figures move as jobs complete, fail,
are retried and dead-lettered, and as they wait in the queue.

The per-process metrics (stage histograms, tokens, HTTP durations) belong to this test
process, which hosts API and worker alike, and to every earlier test: they are compared
before and after, never read as absolutes.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from rag_async.config import Settings
from rag_async.domain.errors import ConfigurationError
from rag_async.local.valkey import free_port
from tests.conftest import keyed_settings, make_settings, running_stack, running_worker
from tests.support.openai_server import OpenAIApp

pytestmark = pytest.mark.timeout(90)

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def scrape(base_url: str, **headers: str) -> Samples:
    async with httpx.AsyncClient(base_url=base_url) as http:
        response = await http.get("/metrics", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=")
    return parse(response.text)


@pytest.fixture
def clean_llm(llm: OpenAIApp) -> Iterator[OpenAIApp]:
    llm.config.ttft, llm.config.tokens, llm.config.tokens_per_second = 0.0, 12, 200
    llm.config.faults.clear()
    llm.config.fault = None
    yield llm
    llm.config.faults.clear()
    llm.config.fault = None


async def until(condition: Any, within: float = 20.0) -> None:
    deadline = time.monotonic() + within
    while not await condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.1)


async def test_figures_move_as_jobs_complete_fail_retry_and_dead_letter(
    valkey: Any, tmp_path: Path, clean_llm: OpenAIApp
) -> None:
    settings = make_settings(
        valkey,
        tmp_path,
        llm_base_url=clean_llm.base_url,
        llm_api_key="test-key",
        llm_max_retries=0,
        job_max_tries=2,
        worker_heartbeat=0.2,
    )
    async with running_stack(settings) as stack:
        before = await scrape(stack.base_url)
        assert value(before, "rag_jobs_total", kind="answer", outcome="complete") == 0
        assert value(before, "rag_workers_alive") == 1  # the first beat is at startup

        answer = await stack.client.answer((await stack.client.ask("tea?"))["job_id"])
        assert answer.final is not None and answer.final.type == "done"
        clean_llm.fail_next("400")  # not worth a retry: failed at once
        failed = await stack.client.answer((await stack.client.ask("tea?"))["job_id"])
        assert failed.final is not None and failed.final.type == "error"
        clean_llm.fail_next("500", count=2)  # both tries: retried once, then dead-lettered
        dead = await stack.client.answer((await stack.client.ask("tea?"))["job_id"])
        assert dead.final is not None and dead.final.data["code"] == "dead_lettered"
        await asyncio.sleep(1.1)  # the cluster figures are cached for a second
        after = await scrape(stack.base_url)

    chat = {"kind": "answer"}
    assert value(after, "rag_jobs_total", **chat, outcome="complete") == 1
    assert value(after, "rag_jobs_total", **chat, outcome="failed") == 1
    assert value(after, "rag_jobs_total", **chat, outcome="retried") == 1
    assert value(after, "rag_jobs_total", **chat, outcome="dead_lettered") == 1
    assert value(after, "rag_jobs_total", **chat, outcome="cancelled") == 0
    assert value(after, "rag_dead_letters") == 1
    assert value(after, "rag_queue_depth", queue="questions") == 0
    assert value(after, "rag_jobs_in_flight", queue="questions") == 0
    assert value(after, "rag_breaker_open", provider="llm") == 0

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    # Stages of the one completed answer, from the worker running in this process.
    for stage in ("queue_wait", "retrieval", "first_token", "generation", "total"):
        assert grew("rag_job_stage_seconds_count", kind="answer", stage=stage) == 1, stage
    assert grew("rag_job_stage_seconds_sum", kind="answer", stage="total") > 0
    # The test server reports 12 completion tokens an answer, when asked to.
    assert grew("rag_llm_tokens_total", direction="completion") == 12
    assert grew("rag_llm_tokens_total", direction="prompt") > 0
    # By route template, never by raw path (a path holds a job id).
    posted = {"method": "POST", "route": "/chat", "status": "202"}
    assert grew("rag_http_request_duration_seconds_count", **posted) == 3
    followed = {"method": "GET", "route": "/jobs/{job_id}/events", "status": "200"}
    assert grew("rag_http_request_duration_seconds_count", **followed) == 3
    assert not [key for key in after if any("/jobs/" in v and "{" not in v for _, v in key[1])]


async def test_waiting_jobs_show_as_queue_depth_and_age_until_a_worker_takes_them(
    settings: Settings,
) -> None:
    async with running_stack(settings, with_worker=False) as stack:
        for _ in range(2):
            await stack.client.ask("tea?")
        await asyncio.sleep(1.2)  # the oldest has waited at least this long
        waiting = await scrape(stack.base_url)
        assert value(waiting, "rag_queue_depth", queue="questions") == 2
        assert value(waiting, "rag_queue_depth", queue="documents") == 0
        assert value(waiting, "rag_queue_oldest_age_seconds", queue="questions") >= 1.0
        assert value(waiting, "rag_workers_alive") == 0
        async with running_worker(settings):

            async def drained() -> bool:
                figures = await scrape(stack.base_url)
                return value(figures, "rag_jobs_total", kind="answer", outcome="complete") == 2

            await until(drained)
        done = await scrape(stack.base_url)
    assert value(done, "rag_queue_depth", queue="questions") == 0
    assert value(done, "rag_queue_oldest_age_seconds", queue="questions") == 0


async def test_a_running_job_counts_in_flight_and_its_stream_as_open(
    settings: Settings, clean_llm: OpenAIApp
) -> None:
    clean_llm.config.tokens, clean_llm.config.tokens_per_second = 40, 10  # four seconds
    async with running_stack(settings) as stack:
        job_id = (await stack.client.ask("tea?"))["job_id"]
        events = stack.client.follow(job_id)
        async for event in events:  # the stream is open once its first event arrives
            if event.type == "token":
                break
        running = await scrape(stack.base_url)
        await events.aclose()
    assert value(running, "rag_jobs_in_flight", queue="questions") == 1
    assert value(running, "rag_queue_depth", queue="questions") == 0
    assert value(running, "rag_sse_connections") >= 1


async def test_a_worker_serves_its_own_metrics_when_given_a_port(
    valkey: Any, tmp_path: Path, clean_llm: OpenAIApp
) -> None:
    port = free_port()
    settings = make_settings(
        valkey,
        tmp_path,
        llm_base_url=clean_llm.base_url,
        llm_api_key="test-key",
        worker_metrics_port=port,
    )
    async with running_stack(settings) as stack:
        await stack.client.answer((await stack.client.ask("tea?"))["job_id"])
        async with httpx.AsyncClient() as http:
            response = await http.get(f"http://127.0.0.1:{port}/metrics")
    assert response.status_code == 200
    figures = parse(response.text)
    assert value(figures, "rag_job_stage_seconds_count", kind="answer", stage="total") >= 1
    async with httpx.AsyncClient() as http:  # closed with the worker
        with pytest.raises(httpx.ConnectError):
            await http.get(f"http://127.0.0.1:{port}/metrics")


async def test_only_an_admin_key_reads_metrics_when_the_api_has_keys(
    valkey: Any, tmp_path: Path, llm: OpenAIApp
) -> None:
    user_key, admin_key = "user-secret-0123456789", "admin-secret-0123456789"
    settings = keyed_settings(
        valkey, tmp_path, llm, users={"ann": user_key}, admins={"ops": admin_key}
    )
    async with (
        running_stack(settings, with_worker=False) as stack,
        httpx.AsyncClient(base_url=stack.base_url) as http,
    ):
        anonymous = await http.get("/metrics")
        user = await http.get("/metrics", headers={"Authorization": f"Bearer {user_key}"})
        admin = await http.get("/metrics", headers={"Authorization": f"Bearer {admin_key}"})
    assert (anonymous.status_code, user.status_code, admin.status_code) == (401, 403, 200)
    assert user.json()["error"]["code"] == "forbidden", user.text
    assert "rag_queue_depth" in admin.text


async def test_a_job_cancelled_before_any_worker_took_it_counts_as_cancelled(
    settings: Settings,
) -> None:
    async with running_stack(settings, with_worker=False) as stack:
        job_id = (await stack.client.ask("tea?"))["job_id"]
        assert (await stack.client.cancel(job_id))["status"] == "cancelled"
        figures = await scrape(stack.base_url)
    assert value(figures, "rag_jobs_total", kind="answer", outcome="cancelled") == 1
    assert value(figures, "rag_queue_depth", queue="questions") == 0


async def test_a_taken_metrics_port_stops_the_worker_with_a_clear_message(
    settings: Settings,
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        busy = settings.model_copy(update={"worker_metrics_port": port})
        with pytest.raises(ConfigurationError, match=f"RAG_WORKER_METRICS_PORT.*:{port}"):
            async with running_worker(busy):
                pass
