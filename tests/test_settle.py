"""A job's end is resumable (worker/ends.py, store/ending.py): a process killed between a
job's last event and the end of its bookkeeping leaves the end in the ending set, and the
next worker (arq's rerun of the job, or any worker's heartbeat) finishes it, each part once.
And the API's cancel of a queued job is one step, so no process can die half way through."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from rag_async.config import Settings
from rag_async.domain.document import DocumentStatus
from rag_async.domain.events import CancelledEvent, DoneEvent, ErrorEvent
from rag_async.domain.job import JobStatus, new_job_id, record_fields
from rag_async.local.valkey import EmbeddedValkey
from rag_async.store.events import Superseded
from rag_async.store.keys import Keys
from rag_async.store.queue import JobQueue
from rag_async.worker.ends import Ends, cancel, cancel_waiting, ended, requeue, settle
from rag_async.worker.lifecycle import Run
from tests.conftest import running_stack, running_worker
from tests.test_job_lifecycle import worker_services
from tests.test_webhooks import hook_settings, receiving

TEXT = "# Tea\n\nGreen tea brews at 80 degrees."


async def until(predicate: Any, within: float = 20.0) -> None:
    deadline = time.monotonic() + within
    while not await predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


async def test_an_end_whose_worker_died_after_its_last_event_is_settled_by_the_next_worker(
    valkey: EmbeddedValkey, tmp_path: Any, llm: Any
) -> None:
    """A worker wrote a failed ingestion's `error` event and died before its bookkeeping:
    arq hands the job to the next worker, which finishes the end from the record, once."""
    settings = hook_settings(valkey, tmp_path, llm)
    keys = Keys(settings.key_prefix)
    async with (
        receiving() as receiver,
        running_stack(settings, with_worker=False) as stack,
        httpx.AsyncClient(base_url=stack.base_url) as http,
        Redis.from_url(settings.redis_url or "") as redis,
    ):
        body = {"text": TEXT, "title": "Tea", "webhook_url": receiver.url}
        accepted = (await http.post("/documents", json=body)).json()
        job_id, document_id = accepted["job_id"], accepted["document_id"]
        message = "the parser gave up"
        async with worker_services(settings) as services:
            # The killed worker's attempt, through the store as its lifecycle writes it:
            # started, its version begun, its last event; and `ended` never called.
            record = await services.jobs.get(job_id)
            assert record is not None
            run = Run(services, record, await services.jobs.start_attempt(job_id))
            await run.stage("ingesting", started_at=run.started, worker="dead")
            assert await services.registry.begin_version(document_id, job_id)
            failed = ErrorEvent(message=message, code="bad_document")
            status = JobStatus.FAILED
            event_id = await run.emit(failed, outcome="failed", status=status, error=message)
        ends = Ends.open(redis, keys, settings)
        assert await ends.ending.all() == [(job_id, event_id)]
        assert await redis.zscore(keys.unfinished_jobs(""), job_id) is not None
        assert await redis.exists(keys.upload(job_id)) == 1

        async with running_worker(settings):  # arq hands it the job, still on its queue

            async def settled() -> bool:
                return not await ends.ending.all() and len(receiver.received) == 1

            await until(settled)
        # Run again, as a process that died later in its bookkeeping would leave it: no part
        # happens twice.
        again = await ends.jobs.get(job_id)
        assert again is not None
        await ended(ends, record, "failed", message, event_id=event_id)
        await settle(ends, again)
        async with running_worker(settings):
            await asyncio.sleep(1.0)  # a second delivery, were one queued, would be made

        assert await redis.zscore(keys.unfinished_jobs(""), job_id) is None
        assert await redis.exists(keys.upload(job_id)) == 0
        assert await ends.jobs.uploads.pending_bytes() == 0
        assert await redis.hget(keys.job_outcomes, "ingest:failed") == b"1"
        failures = await redis.lrange(keys.failures, 0, -1)
        assert len(failures) == 1 and job_id.encode() in failures[0]
        document = await ends.registry.get(document_id)
        assert document is not None and document.status == DocumentStatus.FAILED
        assert document.error == message
        [delivery] = receiver.received
        assert delivery.payload["type"] == "job.failed"
        assert await ends.ending.all() == []


async def test_a_queued_cancel_whose_process_died_is_settled_by_a_workers_heartbeat(
    valkey: EmbeddedValkey, tmp_path: Any, llm: Any
) -> None:
    """The API took a queued ingestion off its queue and wrote its `cancelled` event (one
    step), then died: no worker will run the job, and a worker's heartbeat settles its end."""
    settings = hook_settings(valkey, tmp_path, llm, worker_heartbeat=0.1, worker_dead_after=1.0)
    keys = Keys(settings.key_prefix)
    async with (
        running_stack(settings, with_worker=False) as stack,
        httpx.AsyncClient(base_url=stack.base_url) as http,
        Redis.from_url(settings.redis_url or "") as redis,
    ):
        accepted = (await http.post("/documents", json={"text": TEXT, "title": "Tea"})).json()
        job_id, document_id = accepted["job_id"], accepted["document_id"]
        ends = Ends.open(redis, keys, settings)
        record = await ends.jobs.get(job_id)
        assert record is not None
        event_id = await cancel_waiting(ends, record)  # and the process dies here
        assert event_id > 0
        assert await redis.zcard(keys.queue("documents")) == 0
        assert (await http.get(f"/jobs/{job_id}")).json()["status"] == "cancelled"
        assert await ends.ending.all() == [(job_id, event_id)]
        assert await redis.zscore(keys.unfinished_jobs(""), job_id) is not None

        async with running_worker(settings):

            async def settled() -> bool:
                return not await ends.ending.all()

            await until(settled)
        assert await redis.zscore(keys.unfinished_jobs(""), job_id) is None
        assert await redis.exists(keys.upload(job_id)) == 0
        assert await redis.hget(keys.job_outcomes, "ingest:cancelled") == b"1"
        document = (await http.get(f"/documents/{document_id}")).json()
        assert document["status"] != "queued" and "cancelled" in document["error"]
        assert await ends.registry.stored_bytes("") == 0


async def test_a_queued_cancel_is_one_step(settings: Settings) -> None:
    """Watched all along, many queued jobs cancelled at once are never off their queue while
    still queued: the take-off and the `cancelled` event are one step, so a process that
    dies between them cannot leave a job that no worker will run and nobody ends."""
    keys = Keys(settings.key_prefix)
    jobs_count = 100
    async with (
        Redis.from_url(settings.redis_url or "") as redis,
        Redis.from_url(settings.redis_url or "") as watcher,
    ):
        ends = Ends.open(redis, keys, settings)
        job_ids = [new_job_id() for _ in range(jobs_count)]
        for job_id in job_ids:
            assert await ends.jobs.create(job_id, "answer", {"query": "tea?"}) == "created"
        queue = JobQueue(watcher, keys).name("answer")
        waiting = keys.waiting_jobs("questions")  # no worker: the jobs wait their turn there
        records = [await ends.jobs.get(job_id) for job_id in job_ids]
        cancelling = asyncio.gather(*(cancel(ends, r) for r in records if r is not None))
        stranded: set[str] = set()
        while not cancelling.done():
            async with watcher.pipeline(transaction=True) as snapshot:
                for job_id in job_ids:
                    snapshot.zscore(queue, job_id)
                    snapshot.hexists(waiting, job_id)
                    snapshot.hget(keys.job(job_id), "status")
                seen = await snapshot.execute()
            for job_id, score, waits, status in zip(
                job_ids, seen[::3], seen[1::3], seen[2::3], strict=True
            ):
                if score is None and not waits and status == b"queued":
                    stranded.add(job_id)
            await asyncio.sleep(0)
        assert await cancelling == ["cancelled"] * jobs_count
        assert stranded == set()
        assert await redis.zcard(queue) == await redis.hlen(waiting) == 0
        assert await redis.hget(keys.job_outcomes, "answer:cancelled") == str(jobs_count).encode()


async def test_a_job_that_has_ended_is_not_ended_again(settings: Settings) -> None:
    """A second last word (a cancel that races a `done`, a late error) would be a second
    end, counted again: the log refuses it, but for a resend of the very write that ended
    the job; a requeue (which clears the outcome) lets the job end once more."""
    keys = Keys(settings.key_prefix)
    async with Redis.from_url(settings.redis_url or "") as redis:
        ends = Ends.open(redis, keys, settings)
        job_id = new_job_id()
        assert await ends.jobs.create(job_id, "answer", {"query": "tea?"}) == "created"
        attempt = await ends.jobs.start_attempt(job_id)
        done = DoneEvent(answer="Two minutes.", timings={}, providers={})
        complete = record_fields(status=JobStatus.COMPLETE, outcome="complete")
        write = {"attempt": attempt, "write_id": "1:9"}
        first = await ends.events.append(job_id, done, complete, **write)
        assert await ends.events.append(job_id, done, complete, **write) == first  # resent
        cancelled = record_fields(status=JobStatus.CANCELLED, outcome="cancelled")
        with pytest.raises(Superseded):
            await ends.events.append(job_id, CancelledEvent(), cancelled, attempt=attempt)
        record = await ends.jobs.get(job_id)
        assert record is not None and record.status == JobStatus.COMPLETE and record.seq == first
        assert await ends.ending.all() == [(job_id, first)]
        await ended(ends, record, "complete", event_id=first)

        await requeue(ends, record)
        attempt = await ends.jobs.start_attempt(job_id)
        second = await ends.events.append(job_id, done, complete, attempt=attempt)
        await ended(ends, record, "complete", event_id=second)
        assert await redis.hget(keys.job_outcomes, "answer:complete") == b"2"
        assert await ends.ending.all() == []
