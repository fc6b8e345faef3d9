"""The job and document scenarios of `reliability.py` (issue 18): what happens to accepted
ingestions and webhooks when their cause of failure goes away, and to documents edited while
they ingest. Each returns a `JobRow`: jobs accepted, completed, lost (never reached an end),
duplicated (ended twice, or its webhook delivered under two ids) and mixed (a document with
marks of more than one version, or whose registry disagrees with what its job did).

    python benchmarks/reliability.py -s dead-letter-requeue -s webhook-down-kill
    python benchmarks/reliability.py -s reupload -s delete -s cancel-queued -s cancel-running

The services are processes on loopback (harness.py), as in the question scenarios.
"""

from __future__ import annotations

import asyncio
import base64
import os
import shutil
import signal
import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
from harness import QUESTIONS, Services, services
from redis.asyncio import Redis

from rag_async.client.api import RagClient
from rag_async.domain.events import TERMINAL_EVENT_TYPES, event_type_of
from rag_async.local.valkey import free_port
from rag_async.store.events import EventLog
from rag_async.store.keys import Keys

ENDED = ("complete", "failed", "cancelled")
PATIENCE = 180.0  # seconds any phase may take before what has not ended counts as lost


@dataclass
class JobRow:
    """One scenario's line in the jobs table."""

    scenario: str
    runs: int
    accepted: int = 0
    completed: int = 0
    lost: int = 0
    duplicated: int = 0
    mixed: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def broken(self) -> bool:
        return bool(self.lost or self.duplicated or self.mixed)


def jobs_table(rows: list[JobRow]) -> str:
    lines = [
        "| scenario | runs | accepted | completed | lost | duplicated | mixed | notes |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        notes = "; ".join(r.notes) or "-"
        lines.append(
            f"| {r.scenario} | {r.runs} | {r.accepted} | {r.completed} | **{r.lost}** "
            f"| **{r.duplicated}** | **{r.mixed}** | {notes} |"
        )
    return "\n".join(lines)


async def terminal_events(
    redis: Redis, prefix: str, job_ids: Iterable[str]
) -> dict[str, list[str]]:
    """Each job's final events (done, error, cancelled) in its log, in order."""
    log = EventLog(redis, Keys(prefix), ttl=600)
    ends: dict[str, list[str]] = {}
    for job_id in job_ids:
        types = [event_type_of(event.data) for event in await log.replay(job_id)]
        ends[job_id] = [t for t in types if t in TERMINAL_EVENT_TYPES]
    return ends


async def until_statuses(
    client: RagClient, job_ids: list[str], wanted: tuple[str, ...], within: float
) -> dict[str, str]:
    """Each job's status, once every one is in `wanted` or `within` seconds have passed."""
    deadline = time.monotonic() + within
    while True:
        statuses = {job_id: (await client.job(job_id))["status"] for job_id in job_ids}
        if all(s in wanted for s in statuses.values()) or time.monotonic() > deadline:
            return statuses
        await asyncio.sleep(0.5)


async def version_problems(redis: Redis, prefix: str, document_id: str, job_id: str) -> list[str]:
    """What is wrong with a document that `job_id` should have indexed as its one version:
    its registry entry not indexed, another current version, or marks of other versions
    whose chunks may still be in the store."""
    raw = await redis.hgetall(Keys(prefix).document(document_id))  # type: ignore[misc]
    entry = {k.decode(): v.decode() for k, v in raw.items()}
    problems = []
    if entry.get("status") != "indexed":
        problems.append(f"status {entry.get('status')}")
    if entry.get("version") != job_id:
        problems.append(f"version {entry.get('version')}")
    others = [k for k in entry if k.startswith("v:") and k != f"v:{job_id}"]
    if others:
        problems.append(f"{len(others)} other versions marked")
    if not int(entry.get("chunks") or 0):
        problems.append("no chunks")
    return problems


async def searchable(client: RagClient, word: str, document_id: str) -> bool:
    """Whether a question for `word` finds a chunk of the document that holds it."""
    asked = await client.ask(word)
    async for event in client.follow(asked["job_id"]):
        if event.type == "sources":
            return any(
                s["document_id"] == document_id and word in s["text"] for s in event.data["sources"]
            )
    return False


# Requeue of dead-lettered ingestions.

# Each document's one word, shared with no other (the test embedder's vectors are bags of
# words, so a document sharing words with the others may rank below them).
WORDS = ("amber", "basalt", "cobalt", "dune", "ember", "fjord")


async def llm_faults(svc_llm_admin: str, body: dict[str, Any]) -> None:
    async with httpx.AsyncClient(base_url=svc_llm_admin, timeout=10) as http:
        (await http.post("/_faults", json=body)).raise_for_status()


def dead_letter_requeue(logs: Path) -> JobRow:
    """Six ingestions whose embedder fails every try (the test server answers 500 to every
    embedding request) go to the dead-letter queue after their 3 tries; the embedder comes
    back; each dead letter is requeued (POST /dead-letters/{id}/requeue), and each must end
    complete with one version of its document, and be found by a question for its word."""
    row = JobRow("requeue of dead-lettered ingestions", 1)
    env = {
        "RAG_EMBED_MODEL": "test-embedding",
        "RAG_DEMO_CORPUS": "false",
    }
    # One worker: each worker in harness.py has an embedded store of its own, so a document
    # is searchable only through the worker that ingested it.
    with services(ttft=0.0, tokens=5, tps=0.0, workers=1, corpus=None, env=env, logs=logs) as svc:

        async def go() -> None:
            await llm_faults(svc.llm_admin_url, {"embeddings": 500})
            async with RagClient(svc.api_url) as client, Redis.from_url(svc.valkey.url) as redis:
                docs: dict[str, str] = {}  # job id -> document id
                for word in WORDS:
                    text = f"# {word}\n\n" + f"{word} " * 20
                    accepted = await client.upload([(f"{word}.md", text.encode())])
                    docs[accepted["job_id"]] = accepted["document_id"]
                row.accepted = len(docs)
                jobs = list(docs)
                first = await until_statuses(client, jobs, ENDED, PATIENCE)
                dead = {e["job_id"] for e in await client.dead_letters()}
                row.notes.append(
                    f"first ends: {dict(Counter(first.values()))}, "
                    f"{len(dead & set(jobs))} dead-lettered"
                )
                await llm_faults(svc.llm_admin_url, {"embeddings": None})
                for job_id in jobs:
                    if job_id in dead:
                        await client.requeue(job_id)
                final = await until_statuses(client, jobs, ENDED, PATIENCE)
                ends = await terminal_events(redis, svc.prefix, jobs)
                left = {e["job_id"] for e in await client.dead_letters()} & set(jobs)
                if left:
                    row.notes.append(f"{len(left)} still dead-lettered")
                unsearchable = 0
                for word, (job_id, document_id) in zip(WORDS, docs.items(), strict=True):
                    row.completed += final[job_id] == "complete"
                    # A requeued job's log ends twice: the dead letter's error, then its end.
                    row.lost += final[job_id] not in ENDED or not ends[job_id]
                    if final[job_id] == "complete" and not await searchable(
                        client, word, document_id
                    ):
                        unsearchable += 1
                        row.lost += 1
                    row.duplicated += ends[job_id].count("done") > 1 or len(ends[job_id]) > 2
                    problems = await version_problems(redis, svc.prefix, document_id, job_id)
                    if problems:
                        row.mixed += 1
                        row.notes.append(f"{document_id}: {', '.join(problems)}")
                row.notes.append(f"complete but not searchable: {unsearchable}")
                row.notes.append(
                    "after requeue: "
                    + ", ".join(f"{n} {s}" for s, n in Counter(final.values()).items())
                )

        asyncio.run(go())
    return row


# A webhook receiver down, then up, with a worker killed meanwhile.

QUESTIONS_SENT = 40
KILL_AT = 5.0  # seconds after the first question: mid-answer (the answers end from 5.5 s on)
RECEIVER_UP_AT = 12.0  # the first deliveries are refused until then, and retried
SECOND_KILL_AT = 13.0  # as the retried deliveries arrive
RECEIVER_HOLD = 3.0  # seconds the receiver takes to answer each delivery


class Receiver:
    """A webhook receiver on a fixed loopback port: nothing listens (connections refused)
    until `start`; then it notes each POST's webhook-id and job, and answers 200 `hold`
    seconds later (a receiver that takes its time: a worker killed meanwhile has sent the
    webhook but not learnt that it arrived)."""

    def __init__(self, port: int, hold: float) -> None:
        self.port, self.hold = port, hold
        self.received: list[tuple[str, str]] = []  # (webhook-id, job id)
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for handler in self._handlers:  # idle keep-alive connections, late deliveries
                handler.cancel()
            await asyncio.gather(*self._handlers)
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        handler = asyncio.current_task()
        assert handler is not None
        self._handlers.add(handler)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                headers = {}
                for line in head.decode("latin-1").split("\r\n")[1:]:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                job_id = orjson.loads(body)["data"]["job_id"]
                self.received.append((headers.get("webhook-id", ""), job_id))
                await asyncio.sleep(self.hold)
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        except asyncio.CancelledError:
            # Stopped by `stop`: end quietly, as asyncio's streams (3.11) log a handler that
            # ends cancelled as an error.
            pass
        finally:
            self._handlers.discard(handler)
            writer.close()


def webhook_down_kill(logs: Path) -> JobRow:
    """Forty questions, each with a webhook_url on a loopback port where nothing listens yet:
    the first deliveries are refused and retried with backoff. A worker is SIGKILLed
    mid-answer (5 s in, as `kill-fast`) and a replacement started; the receiver comes up 12 s
    in, answering each delivery after 3 s, and the busier worker is SIGKILLed again 13 s in,
    with deliveries in flight. Every job's webhook
    must be delivered at least once and none dead-lettered; a delivery made twice (same
    webhook-id) is at-least-once's allowed cost, counted in the notes."""
    row = JobRow("webhook receiver down then up, worker SIGKILL", 1)
    secret = "whsec_" + base64.b64encode(os.urandom(24)).decode()
    env = {
        "RAG_WEBHOOK_SECRET": secret,
        "RAG_WEBHOOK_HOSTS": "127.0.0.1",
        "RAG_WORKER_HEARTBEAT": "0.5",
        "RAG_WORKER_DEAD_AFTER": "2",
    }
    port = free_port()
    url = f"http://127.0.0.1:{port}/hook"
    with services(ttft=0.3, tokens=50, tps=10.0, workers=2, env=env, logs=logs) as svc:

        async def go() -> None:
            receiver = Receiver(port, hold=RECEIVER_HOLD)
            started = time.monotonic()
            async with httpx.AsyncClient(base_url=svc.api_url, timeout=30) as http:

                async def ask(i: int) -> str | None:
                    await asyncio.sleep(i / 10)
                    body = {"query": QUESTIONS[i % len(QUESTIONS)], "webhook_url": url}
                    response = await http.post("/chat", json=body)
                    return str(response.json()["job_id"]) if response.status_code == 202 else None

                async def at(second: float) -> None:
                    await asyncio.sleep(max(0.0, started + second - time.monotonic()))

                async def faults() -> None:
                    await at(KILL_AT)
                    await kill_busier(svc, row)
                    replacement = svc.start_worker()  # two workers again for the second kill
                    await asyncio.to_thread(svc.wait_worker_ready, replacement)
                    await at(RECEIVER_UP_AT)
                    await receiver.start()
                    await at(SECOND_KILL_AT)
                    await kill_busier(svc, row)

                asked, _ = await asyncio.gather(
                    asyncio.gather(*(ask(i) for i in range(QUESTIONS_SENT))), faults()
                )
                jobs = [job_id for job_id in asked if job_id is not None]
                row.accepted = len(jobs)
                async with RagClient(svc.api_url) as client:
                    final = await until_statuses(client, jobs, ENDED, PATIENCE)
                    # Until every job's webhook arrived, or has no more tries coming.
                    deadline = time.monotonic() + PATIENCE
                    webhooks: list[dict[str, Any]] = []  # the dead-lettered deliveries
                    while time.monotonic() < deadline:
                        got = {job for _, job in receiver.received}
                        webhooks = (await client._http.get("/dead-letters")).json()["webhooks"]
                        if len(got & set(jobs)) + len(webhooks) >= len(jobs):
                            break
                        await asyncio.sleep(0.5)
                    await asyncio.sleep(2.0)  # a late second delivery shows up too
                await receiver.stop()
            async with Redis.from_url(svc.valkey.url) as redis:
                ends = await terminal_events(redis, svc.prefix, jobs)
            per_job: dict[str, list[str]] = defaultdict(list)
            for webhook_id, job_id in receiver.received:
                per_job[job_id].append(webhook_id)
            undelivered = [j for j in jobs if not per_job.get(j)]
            twice = [j for j in jobs if len(per_job.get(j, [])) > 1]
            two_ids = [j for j in twice if len(set(per_job[j])) > 1]
            row.completed = sum(final[j] == "complete" for j in jobs)
            row.lost = sum(final[j] not in ENDED or not ends[j] for j in jobs) + len(undelivered)
            row.duplicated = sum(len(ends[j]) > 1 for j in jobs) + len(two_ids)
            row.notes += [
                f"webhooks delivered: {len(jobs) - len(undelivered)} of {len(jobs)}",
                f"dead-lettered: {len(webhooks)}",
                f"delivered more than once (same webhook-id): {len(twice) - len(two_ids)}",
            ]
            if two_ids:
                row.notes.append(f"delivered under two ids: {len(two_ids)}")
            row.lost += len(webhooks)

        asyncio.run(go())
    assert svc.logs is not None
    text = "".join(p.read_text(errors="replace") for p in sorted(svc.logs.glob("*")))
    row.notes.append(f"deliveries refused and retried: {text.count('webhook not delivered')}")
    return row


async def kill_busier(svc: Services, row: JobRow) -> None:
    """SIGKILL the live worker with the most jobs in its set (answers or deliveries)."""
    keys = Keys(svc.prefix)
    live = [w for w in svc.workers if w.poll() is None]
    held = []
    async with Redis.from_url(svc.valkey.url) as redis:
        names = [raw.decode() for raw in await redis.hkeys(keys.workers)]  # type: ignore[misc]
        for worker in live:
            name = next((n for n in names if n.endswith(f":{worker.pid}")), None)
            count = 0 if name is None else await redis.scard(keys.worker_jobs(name))  # type: ignore[misc]
            held.append(count)
    victim = held.index(max(held))
    live[victim].send_signal(signal.SIGKILL)
    row.notes.append(f"killed a worker running {held[victim]} of {sum(held)} jobs")


# The document edits of document_versions.py, in the same columns.


def document_edit(name: str, logs: Path, rounds: int) -> JobRow:
    """A document_versions.py scenario, `rounds` rounds: its outcomes (`mixed` and `registry
    wrong` count as mixed, `lost` as lost) and every job it made, read from the logs."""
    import document_versions

    outcomes, jobs = document_versions.run(name, rounds, logs)
    row = JobRow(document_versions.SCENARIOS[name][0], rounds)
    row.accepted = len(jobs)
    row.completed = sum(status == "complete" for status, _ in jobs.values())
    row.lost = outcomes["lost"] + sum(not ends for _, ends in jobs.values())
    row.duplicated = sum(len(ends) > 1 for _, ends in jobs.values())
    row.mixed = outcomes["mixed"] + outcomes["registry wrong"]
    statuses = Counter(status for status, _ in jobs.values())
    row.notes.append("rounds: " + ", ".join(f"{n} {o}" for o, n in outcomes.items()))
    row.notes.append("jobs: " + ", ".join(f"{n} {s}" for s, n in statuses.items()))
    return row


JOB_SCENARIOS = {
    "reupload": "re-upload during ingestion",
    "delete": "delete during ingestion",
    "cancel-running": "cancel of a running ingestion",
    "cancel-queued": "cancel of a queued ingestion",
    "dead-letter-requeue": "requeue of dead-lettered ingestions",
    "webhook-down-kill": "webhook receiver down then up, worker SIGKILL",
}


def run_job_scenario(name: str, logs: Path, rounds: int) -> JobRow:
    shutil.rmtree(logs, ignore_errors=True)
    if name == "dead-letter-requeue":
        return dead_letter_requeue(logs)
    if name == "webhook-down-kill":
        return webhook_down_kill(logs)
    return document_edit(name, logs, rounds)
