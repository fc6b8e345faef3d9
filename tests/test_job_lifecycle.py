"""The one lifecycle every kind of job lives through (rag_async/jobs/lifecycle.py): its one
decision on failures, and the ends that the per-kind copies used to get wrong."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from arq import Retry
from redis.asyncio import Redis

from rag_async.config import Settings
from rag_async.domain.errors import BadRequest, ProviderError
from rag_async.local.valkey import EmbeddedValkey, free_port
from rag_async.providers.breaker import BreakerOpen
from rag_async.store.jobs import JobStore
from rag_async.store.keys import Keys
from rag_async.store.pool import connect_redis
from rag_async.worker.jobs import JOBS, Services, WorkerContext, job_function
from rag_async.worker.lifecycle import Finished, Run
from rag_async.worker.outcome import decide
from tests.conftest import (
    SAMPLE_DOCUMENT,
    Stack,
    ingest,
    make_settings,
    running_stack,
    running_worker,
)
from tests.support.documents import add_document


@asynccontextmanager
async def worker_services(settings: Settings) -> AsyncIterator[Services]:
    """A worker's clients, to run one job function by hand (no arq polling)."""
    redis = connect_redis(settings, client_name="test-worker", ride_out_outages=False)
    services = await Services.open(settings, redis)
    try:
        yield services
    finally:
        await services.close()
        await redis.aclose(close_connection_pool=True)


def context(services: Services, job_try: int = 1) -> WorkerContext:
    return {"services": services, "job_try": job_try}


async def until(predicate: Any, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not await predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


async def queue_document(stack: Stack) -> dict[str, Any]:
    return await add_document(stack.client, SAMPLE_DOCUMENT, title="Tea", source="tea.md")


@pytest.mark.parametrize(
    ("error", "job_try", "action"),
    [
        (ProviderError("429", retryable=True), 1, "retry"),
        (ProviderError("429", retryable=True), 3, "dead_letter"),
        (ProviderError("401", retryable=False), 1, "fail"),
        (BadRequest("no"), 1, "fail"),
        (RuntimeError("a bug"), 1, "retry"),  # unexpected: may be transient
        (RuntimeError("a bug"), 3, "dead_letter"),
        # An open breaker defers even on the last try: it spends no try, so nothing is final
        # (ingestion used to mark its document failed here while the job waited).
        (BreakerOpen("qdrant", 5.0), 3, "defer"),
    ],
)
def test_one_decision_for_every_failure(error: Exception, job_try: int, action: str) -> None:
    outcome = decide(error, job_try, max_tries=3)
    assert outcome.action == action
    if action == "dead_letter":
        assert outcome.code == "dead_lettered" and "dead-letter queue" in outcome.message
    if action == "defer":
        assert outcome.delay == pytest.approx(5.0, abs=1.0)


async def test_a_running_document_delete_can_be_cancelled(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate = asyncio.Event()
    delete = JOBS["delete"]

    async def held_delete(run: Run) -> Finished:
        await gate.wait()  # the delete is under way and stays there until cancelled
        return await delete.work(run)

    # The worker's table of job kinds: its delete job now waits inside its work.
    monkeypatch.setitem(JOBS, "delete", replace(delete, work=held_delete))
    async with (
        running_stack(settings) as stack,
        httpx.AsyncClient(base_url=stack.base_url) as http,
    ):
        document_id = await ingest(stack)
        job_id = (await stack.client.delete_document(document_id))["job_id"]

        async def deleting() -> bool:
            return bool((await stack.client.job(job_id))["stage"] == "deleting")

        await until(deleting)
        response = await http.delete(f"/jobs/{job_id}")
        assert response.json()["status"] == "cancelling"
        events = [event async for event in stack.client.follow(job_id)]
        view = await stack.client.job(job_id)
        document = await stack.client.document(document_id)
    assert events[-1].type == "cancelled"
    assert view["status"] == "cancelled" and view["finished_at"] is not None
    # A half-done delete is not an intact document: the registry says what happened.
    assert document["status"] == "failed" and "cancelled" in document["error"]


async def test_an_expired_upload_ends_its_attempt_like_any_failure(settings: Settings) -> None:
    async with running_stack(settings, with_worker=False) as stack:
        accepted = await queue_document(stack)
        job_id = accepted["job_id"]
        async with Redis.from_url(settings.redis_url or "") as redis:
            # As if it expired before a worker came.
            await redis.delete(Keys(settings.key_prefix).upload(job_id))
        async with running_worker(settings):
            events = [event async for event in stack.client.follow(job_id)]
        view = await stack.client.job(job_id)
        document = await stack.client.document(accepted["document_id"])
    assert [event.type for event in events] == ["status", "error"]
    assert events[0].data["attempt"] == 1 and events[-1].data["code"] == "expired"
    assert view["status"] == "failed" and view["finished_at"] is not None
    assert view["attempt"] == 1 and "expired" in view["error"]
    assert document["status"] == "failed" and "expired" in document["error"]


async def test_a_document_job_deferred_by_an_open_breaker_stays_queued(settings: Settings) -> None:
    settings = settings.model_copy(update={"breaker_threshold": 1, "job_max_tries": 1})
    async with (
        running_stack(settings, with_worker=False) as stack,
        worker_services(settings) as services,
    ):
        accepted = await queue_document(stack)
        services.breakers["qdrant"].failed()  # open: Qdrant is known to be down
        job = job_function(JOBS["ingest"], timeout=30, max_tries=1)
        with pytest.raises(Retry):
            await job(context(services), accepted["job_id"])
        view = await stack.client.job(accepted["job_id"])
        document = await stack.client.document(accepted["document_id"])
    # Its only try was not spent: no attempt started, nothing failed.
    assert view["status"] == "queued" and view["attempt"] == 0
    assert document["status"] == "queued"


async def test_every_job_keeps_a_bounded_request_id_for_its_logs(settings: Settings) -> None:
    async with (
        running_stack(settings, with_worker=False) as stack,
        httpx.AsyncClient(base_url=stack.base_url) as http,
        Redis.from_url(settings.redis_url or "") as redis,
    ):
        jobs = JobStore(redis, Keys(settings.key_prefix), settings.result_ttl)
        document = {"text": SAMPLE_DOCUMENT, "title": "Tea"}
        given = await http.post("/documents", json=document, headers={"X-Request-ID": "req-42"})
        huge = await http.post(
            "/chat", json={"query": "tea?"}, headers={"X-Request-ID": "x" * 4096}
        )
        deletion = await http.delete(
            f"/documents/{given.json()['document_id']}", headers={"X-Request-ID": "req-43"}
        )
        records = [await jobs.get(r.json()["job_id"]) for r in (given, huge, deletion)]
    assert [record.request_id if record else None for record in records] == [
        "req-42",
        huge.json()["job_id"][:12],  # not 4 KB kept for a day: the job's own short id
        "req-43",
    ]


async def test_an_uploads_bytes_are_dropped_when_its_job_ends_even_failed(stack: Stack) -> None:
    corrupt = await stack.client.upload([("broken.pdf", b"%PDF-1.7 this is no PDF")])
    ingested = await stack.client.upload([("tea.md", SAMPLE_DOCUMENT.encode())])
    keys = Keys(stack.settings.key_prefix)
    async with Redis.from_url(stack.settings.redis_url or "") as redis:
        for accepted in (corrupt, ingested):
            job_id = accepted["job_id"]
            events = [event async for event in stack.client.follow(job_id)]
            assert events[-1].type == ("error" if accepted is corrupt else "done"), events[-1]
            assert not await redis.exists(keys.upload(job_id))


async def test_a_worker_that_fails_to_open_its_clients_closes_what_it_opened(
    valkey: EmbeddedValkey, tmp_path: Path
) -> None:
    # The store opens (local mode locks its folder, even against this process), then the
    # embedder cannot be reached: the store must be closed again, or the next start fails.
    settings = make_settings(
        valkey,
        tmp_path,
        store="local",
        embed_model="nowhere",
        embed_base_url=f"http://127.0.0.1:{free_port()}/v1",
        llm_max_retries=0,
    )
    redis = connect_redis(settings, client_name="test-worker", ride_out_outages=False)
    try:
        with pytest.raises(ProviderError) as failed:
            await Services.open(settings, redis)
        # Still held (as a log handler or a supervisor may hold it), the error keeps every
        # local of the failed start alive: nothing may rely on garbage collection to close.
        settings = settings.model_copy(update={"embed_model": None})
        async with worker_services(settings) as services:
            assert await services.store.count() == 0
        assert failed.value.retryable
    finally:
        await redis.aclose(close_connection_pool=True)
