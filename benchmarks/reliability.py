"""Faults, measured: for each way a part of the service fails, how many accepted jobs
completed, failed, were lost, done twice or left a document mixed, how many extra LLM calls
the fault cost, and how long the service took to recover.

    python benchmarks/reliability.py               # every scenario (about 10 minutes)
    python benchmarks/reliability.py -s kill -s valkey
    python benchmarks/reliability.py -s dead-letter-requeue -s reupload -n 3

Each scenario starts a fresh set of services (Valkey with AOF, the test LLM, the API and two
workers, as processes: harness.py), submits questions at a steady rate, injects its fault,
follows every accepted question to its final event over SSE (resuming after errors, as a
patient client would), and then reads every job's event log in Valkey. The job and document
scenarios (ingestions dead-lettered then requeued, webhooks to a receiver that was down, a
document edited while it ingests) are reliability_jobs.py's, in a table of their own.
docs/reliability.md explains the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
from harness import QUESTIONS, Services, percentile, services
from redis.asyncio import Redis
from reliability_jobs import JOB_SCENARIOS, jobs_table, run_job_scenario, version_problems

from rag_async.client.api import Answer, ApiError, RagClient
from rag_async.config import Settings
from rag_async.domain.events import TERMINAL_EVENT_TYPES, event_type_of
from rag_async.store.events import EventLog
from rag_async.store.keys import Keys
from rag_async.worker.process import in_progress_ttl
from tests.support.openai_server import expected_answer
from tests.support.tcp_proxy import TcpProxy

# The LLM: 0.3 s to the first token, then 50 tokens at 10 tokens/s, so an answer takes
# ~5.2 s. Long answers at a modest rate keep ~50 questions in flight when a fault hits,
# while leaving the two shared cores room (at 20 questions/s the baseline itself queued).
TTFT, TOKENS, TPS = 0.3, 50, 10.0
RATE = 10.0  # questions per second, open loop: arrivals do not wait for answers
SUBMIT_FOR = 10.0  # seconds: 100 questions per scenario
FAULT_AT = 5.0  # seconds after the first question: ~50 questions are in flight by then
PATIENCE = 120.0  # after the last question, how long a question may take before it is lost
# What users get (config.py), and a faster setting for the worker faults, side by side.
DEFAULT_RECOVERY = {"heartbeat": 5.0, "dead_after": 15.0}
FAST_RECOVERY = {"heartbeat": 0.5, "dead_after": 2.0}


@dataclass
class Question:
    """One question as the client saw it; times are `time.monotonic()` of this process."""

    submitted: float
    job_id: str | None = None
    refused: str | None = None  # why POST /chat did not answer 202
    accepted: float | None = None
    finished: float | None = None  # its final event reached the client
    answer: Answer = field(default_factory=Answer)
    resumed: list[str] = field(default_factory=list)  # errors RagClient itself gave up on


@dataclass
class Trial:
    """One scenario's run: the services, the client, and the fault's window, which the
    scenario sets. `fault_end` is when the fault stopped touching new questions (a kill is
    instant; a burst of LLM errors ends when the server has served the last of them)."""

    svc: Services
    client: RagClient
    recovery: dict[str, float]
    questions: list[Question] = field(default_factory=list)
    fault_start: float | None = None
    fault_end: float | None = None
    notes: list[str] = field(default_factory=list)
    proxies: list[subprocess.Popen[str]] = field(default_factory=list)  # one per worker
    target: int = 0  # the worker a worker fault hits: the busier one at the fault
    # What a fault's own jobs (not the questions) came to: uploads never ended, documents
    # whose registry disagrees with their job (None: the scenario has no documents).
    lost_jobs: int = 0
    mixed: int | None = None

    def at_fault(self) -> None:
        self.fault_start = self.fault_end = time.monotonic()

    async def llm(self, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """The test LLM's own endpoints: `/_faults` scripts faults, `/_stats` counts calls."""
        async with httpx.AsyncClient(base_url=self.svc.llm_admin_url, timeout=10) as http:
            if body is None:
                response = await http.get(path)
            else:
                response = await http.post(path, json=body)
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    async def until_served(self, kind: str, count: int, within: float = 60.0) -> None:
        """Until the LLM has served `count` faults of `kind`: the end of a burst."""
        deadline = time.monotonic() + within
        while (await self.llm("/_stats"))["faults"].get(kind, 0) < count:
            if time.monotonic() > deadline:
                self.notes.append(f"only part of the {kind} burst was served")
                break
            await asyncio.sleep(0.05)
        self.fault_end = time.monotonic()


Inject = Callable[[Trial], Awaitable[None]]


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    inject: Inject  # called FAULT_AT seconds in; returns once the fault is over
    recovery: dict[str, float] = field(default_factory=lambda: DEFAULT_RECOVERY)
    env: dict[str, str] = field(default_factory=dict)  # the API's and every worker's
    proxied: bool = False  # each worker reaches Valkey through a TCP proxy of its own


# The faults. Each says what it does and when it ends; the measuring is shared (`run`).


async def no_fault(trial: Trial) -> None:
    trial.at_fault()  # the baseline's "recovery" is the ordinary drain of what is in flight


# arq spreads jobs unevenly: whichever worker polls first takes all it may (up to 100), so
# one worker often holds most of the ~50 in flight. A worker fault hits the busier one.


async def kill_worker(trial: Trial) -> None:
    """SIGKILL one of the two workers mid-answer: no cleanup, its heartbeat simply stops.
    The survivor frees its jobs once it has been silent for `dead_after` seconds."""
    trial.svc.workers[trial.target].kill()
    trial.at_fault()


async def stop_worker(trial: Trial) -> None:
    """SIGTERM one of the two workers, whose grace (1 s) is shorter than an answer (5.2 s):
    it finishes what it can, cancels the rest, and those go back to the queue at once."""
    trial.svc.workers[trial.target].send_signal(signal.SIGTERM)
    trial.at_fault()


async def kill_between_take_and_record(trial: Trial) -> None:
    """A worker killed between arq's take of a job (its in-progress key) and the job's record
    in the worker's job set, two round trips later: too narrow a window to hit with a signal,
    so it is made, exactly. Both workers are paused (SIGSTOP) for a moment; the questions that
    arrive meanwhile are taken as arq takes them (the key, with arq's TTL) by a worker that
    then dies (its last heartbeat now, nothing in its job set); the workers resume. No job set
    names those jobs: only the keys' age tells that they were lost."""
    workers = trial.svc.workers
    keys = Keys(trial.svc.prefix)
    # The TTL arq gives the key: the workers run with the default timeouts.
    ttl_ms = int(in_progress_ttl(Settings.model_construct(), "questions") * 1000)
    for worker in workers:
        worker.send_signal(signal.SIGSTOP)
    try:
        async with Redis.from_url(trial.svc.valkey.url) as redis:
            waiting = await _jobs_waiting(redis, keys, at_least=5, within=1.0)
            taken = [
                job_id
                for job_id in waiting
                if await redis.set(keys.arq_in_progress(job_id), b"1", px=ttl_ms, nx=True)
            ]
            seconds, microseconds = await redis.time()
            beat = {"last_seen": seconds + microseconds / 1e6, "in_flight": len(taken)}
            await redis.hset(keys.workers, "taker:0", orjson.dumps(beat))  # type: ignore[misc]
    finally:
        for worker in workers:
            worker.send_signal(signal.SIGCONT)
    trial.at_fault()
    trial.notes.append(f"taken and not recorded: {len(taken)}")


async def _jobs_waiting(redis: Redis, keys: Keys, at_least: int, within: float) -> list[str]:
    """The due questions no worker has taken, once there are `at_least` (or `within` s)."""
    deadline = time.monotonic() + within
    while True:
        seconds, microseconds = await redis.time()
        now_ms = seconds * 1000 + microseconds // 1000
        due = await redis.zrangebyscore(keys.queue("questions"), "-inf", now_ms)
        waiting = [
            job_id.decode()
            for job_id in due
            if not await redis.exists(keys.arq_in_progress(job_id.decode()))
        ]
        if len(waiting) >= at_least or time.monotonic() > deadline:
            return waiting
        await asyncio.sleep(0.05)


async def restart_valkey(trial: Trial) -> None:
    """SIGKILL Valkey, and start it again 2 s later on the same port and AOF folder. While it
    is down the API refuses new questions (503) and the workers' Redis calls wait and resend.
    """
    trial.svc.valkey.kill()
    trial.fault_start = time.monotonic()
    await asyncio.sleep(2.0)
    await asyncio.to_thread(trial.svc.valkey.start)
    trial.fault_end = time.monotonic()
    trial.notes.append(f"Valkey was down {trial.fault_end - trial.fault_start:.1f} s")


async def partition_worker(trial: Trial) -> None:
    """Cut a worker off from Valkey (its connections stay open, its bytes wait in its proxy)
    for longer than `dead_after`, then heal. The other worker takes its jobs over; the
    cut-off one keeps streaming from the LLM and, once healed, is fenced out of the log."""
    proxy = trial.proxies[trial.target]
    proxy.send_signal(signal.SIGUSR1)  # pause
    trial.at_fault()
    # Past dead_after and two beats, so that the other worker has surely taken over.
    cut_for = trial.recovery["dead_after"] + 2 * trial.recovery["heartbeat"]
    await asyncio.sleep(cut_for)
    proxy.send_signal(signal.SIGUSR2)  # resume
    trial.notes.append(f"healed after {cut_for:g} s")


async def llm_429_burst(trial: Trial) -> None:
    """The next 40 chat requests get 429 with Retry-After: 2 s."""
    await trial.llm("/_faults", {"kind": "429", "count": 40, "retry_after": 2})
    trial.fault_start = time.monotonic()
    await trial.until_served("429", 40)


async def llm_500_burst(trial: Trial) -> None:
    """The next 40 chat requests get 500."""
    await trial.llm("/_faults", {"kind": "500", "count": 40})
    trial.fault_start = time.monotonic()
    await trial.until_served("500", 40)


async def llm_drops(trial: Trial) -> None:
    """For 4 s, one chat request in five (2 a second against ~10) is cut off after 10 tokens,
    once the worker has already streamed text to clients. (Over by the time questions stop
    coming, so that no dropped stream waits for a request that never comes.)"""
    trial.fault_start = time.monotonic()
    for _ in range(8):
        await trial.llm("/_faults", {"kind": "drop", "count": 1, "after": 10})
        await asyncio.sleep(0.5)
    await trial.until_served("drop", 8)


async def llm_hangs(trial: Trial) -> None:
    """The next 10 chat requests send their headers, then nothing (for 2 minutes)."""
    await trial.llm("/_faults", {"kind": "hang", "count": 10, "hang": 120})
    trial.fault_start = time.monotonic()
    await trial.until_served("hang", 10)


async def upload_flood(trial: Trial) -> None:
    """Valkey's maxmemory cut to what it holds plus 8 MB, then 5 s of uploads (1 MB files, 4
    at a time) far past it; then, the flood stopped, every upload the API took must end."""
    async with Redis.from_url(trial.svc.valkey.url) as redis:
        used = int((await redis.info("memory"))["used_memory"])
        await redis.config_set("maxmemory", used + 8 * 2**20)
    trial.at_fault()
    accepted: list[str] = []
    refused = Counter[str]()
    stop = time.monotonic() + 5.0

    async def lane(n: int) -> None:
        while time.monotonic() < stop:
            content = f"flood {n} tea ".encode() * 70_000  # each file its own: none unchanged
            try:
                accepted.append((await trial.client.upload([(f"f{n}.txt", content)]))["job_id"])
            except ApiError as error:
                refused[f"HTTP {error.status} {error.code}"] += 1
            n += 4

    await asyncio.gather(*(lane(n) for n in range(4)))
    trial.fault_end = time.monotonic()
    ended = await until_ended(trial, accepted, within=PATIENCE)
    refusals = ", ".join(f"{n} x {r}" for r, n in refused.items()) or "none"
    trial.notes.append(
        f"uploads: {len(accepted)} accepted, {ended.total()} ended "
        f"({', '.join(f'{n} {s}' for s, n in ended.items())}), "
        f"{len(accepted) - ended.total()} lost; refused: {refusals}"
    )
    trial.lost_jobs += len(accepted) - ended.total()
    trial.mixed = await uploads_mixed(trial, accepted)
    await ask_after(trial, 3)


async def uploads_mixed(trial: Trial, job_ids: list[str]) -> int:
    """How many completed uploads' documents are not their job's one indexed version."""
    mixed = 0
    async with Redis.from_url(trial.svc.valkey.url) as redis:
        for job_id in job_ids:
            record = await trial.client.job(job_id)
            if record["status"] != "complete":
                continue
            problems = await version_problems(
                redis, trial.svc.prefix, record["document_id"], job_id
            )
            if problems:
                mixed += 1
                trial.notes.append(f"upload {job_id} mixed: {', '.join(problems)}")
    return mixed


async def ask_after(trial: Trial, count: int) -> None:
    """Once the fault is over, `count` more questions, one at a time: each must be accepted
    and answered (counted with the others: refused, lost or completed)."""
    took = []
    for i in range(count):
        question = Question(submitted=time.monotonic())
        trial.questions.append(question)
        deadline = time.monotonic() + PATIENCE
        await ask_and_follow(trial, question, QUESTIONS[i % len(QUESTIONS)], deadline)
        outcome = question.refused or (
            question.answer.final.type if question.answer.final else "lost"
        )
        took.append(f"{outcome} in {time.monotonic() - question.submitted:.1f} s")
    trial.notes.append(f"questions after the fault: {', '.join(took)}")


async def until_ended(trial: Trial, job_ids: list[str], within: float) -> Counter[str]:
    """How the jobs ended (by status), once all have or `within` seconds have passed."""
    deadline = time.monotonic() + within
    while True:
        statuses = [(await trial.client.job(job_id))["status"] for job_id in job_ids]
        ended = Counter(s for s in statuses if s in ("complete", "failed", "cancelled"))
        if ended.total() == len(job_ids) or time.monotonic() > deadline:
            return ended
        await asyncio.sleep(1.0)


def recovery_env(recovery: dict[str, float]) -> dict[str, str]:
    return {
        "RAG_WORKER_HEARTBEAT": f"{recovery['heartbeat']:g}",
        "RAG_WORKER_DEAD_AFTER": f"{recovery['dead_after']:g}",
    }


SCENARIOS = [
    Scenario("baseline", "no fault (baseline)", no_fault),
    Scenario("kill", "worker SIGKILL", kill_worker),
    Scenario("kill-fast", "worker SIGKILL, fast recovery", kill_worker, FAST_RECOVERY),
    Scenario(
        "kill-between-take-and-record",
        "worker killed between arq's take and the job's record, fast recovery",
        kill_between_take_and_record,
        FAST_RECOVERY,
    ),
    Scenario(
        "sigterm", "worker SIGTERM, grace 1 s", stop_worker, env={"RAG_WORKER_SHUTDOWN_GRACE": "1"}
    ),
    Scenario("valkey", "Valkey SIGKILL, restart after 2 s", restart_valkey),
    Scenario("partition", "worker cut off from Valkey", partition_worker, proxied=True),
    Scenario(
        "partition-fast",
        "worker cut off from Valkey, fast recovery",
        partition_worker,
        FAST_RECOVERY,
        proxied=True,
    ),
    Scenario("llm-429", "LLM 429 burst (40, Retry-After 2 s)", llm_429_burst),
    Scenario("llm-500", "LLM 500 burst (40)", llm_500_burst),
    Scenario("llm-drop", "LLM streams dropped (1 in 5, 4 s)", llm_drops),
    Scenario("llm-hang", "LLM hangs after headers (10)", llm_hangs),
    Scenario("valkey-full", "upload flood at Valkey's maxmemory (5 s)", upload_flood),
]


# The shared measuring core.


async def ask_and_follow(trial: Trial, question: Question, text: str, deadline: float) -> None:
    """Submit, then follow the job's events to its final one. RagClient resumes a dropped
    stream for a few seconds by itself; past that (the API answered 503 while Valkey was
    down, say) this keeps resuming from the last event seen until `deadline`."""
    try:
        job_id = (await trial.client.ask(text))["job_id"]
    except ApiError as error:
        question.refused = f"HTTP {error.status} {error.code}"
        return
    except httpx.HTTPError as error:
        question.refused = type(error).__name__
        return
    question.job_id, question.accepted = job_id, time.monotonic()
    last = 0
    try:
        async with asyncio.timeout(deadline - time.monotonic()):
            while question.answer.final is None:
                try:
                    async for event in trial.client.follow(job_id, after=last):
                        last = event.id
                        question.answer.apply(event)
                except (ApiError, httpx.HTTPError) as error:
                    question.resumed.append(f"{type(error).__name__}: {error}"[:90])
                if question.answer.final is None:
                    await asyncio.sleep(0.5)
    except TimeoutError:
        return  # lost: no final event by the deadline
    question.finished = time.monotonic()


async def submit_all(trial: Trial, inject: Inject) -> None:
    """Questions at RATE for SUBMIT_FOR seconds, the fault FAULT_AT seconds in."""
    started = time.monotonic()
    deadline = started + SUBMIT_FOR + PATIENCE
    tasks = []

    async def fault() -> None:
        await asyncio.sleep(FAULT_AT)
        await note_held_jobs(trial)
        await inject(trial)

    injecting = asyncio.create_task(fault())
    for i in range(int(RATE * SUBMIT_FOR)):
        await asyncio.sleep(max(0.0, started + i / RATE - time.monotonic()))
        question = Question(submitted=time.monotonic())
        trial.questions.append(question)
        text = QUESTIONS[i % len(QUESTIONS)]
        tasks.append(asyncio.create_task(ask_and_follow(trial, question, text, deadline)))
    await asyncio.gather(*tasks)
    await injecting  # a partition heals after the last answer, perhaps


async def note_held_jobs(trial: Trial) -> None:
    """How many jobs each worker runs just before the fault (their sets in Valkey); the
    busier one is the target of a worker fault."""
    keys = Keys(trial.svc.prefix)
    held = []
    async with Redis.from_url(trial.svc.valkey.url) as redis:
        for worker in trial.svc.workers:
            [name] = [
                raw.decode()
                for raw in await redis.hkeys(keys.workers)  # type: ignore[misc]
                if raw.decode().endswith(f":{worker.pid}")
            ]
            held.append(await redis.scard(keys.worker_jobs(name)))  # type: ignore[misc]
    trial.target = held.index(max(held))
    trial.notes.append("running at the fault: " + " + ".join(map(str, held)))


async def job_logs(trial: Trial) -> dict[str, list[tuple[str, dict[str, Any]]]]:
    """Each accepted job's logged events (type, data), read from Valkey after the run."""
    async with Redis.from_url(trial.svc.valkey.url) as redis:
        log = EventLog(redis, Keys(trial.svc.prefix), ttl=600)
        logs = {}
        for question in trial.questions:
            if question.job_id is not None:
                logged = await log.replay(question.job_id)
                logs[question.job_id] = [
                    (event_type_of(event.data), orjson.loads(event.data)) for event in logged
                ]
    return logs


def story(events: list[tuple[str, dict[str, Any]]]) -> str:
    """A job's log in brief, e.g. `status(1) sources token*12 done status(2) ... done`."""
    words: list[str] = []
    for kind, data in events:
        word = f"status({data.get('attempt')})" if kind == "status" else kind
        if words and kind == "token" and words[-1].split("*")[0] == word:
            count = int(words[-1].partition("*")[2] or 1) + 1
            words[-1] = f"{word}*{count}"
        else:
            words.append(word)
    return " ".join(words)


@dataclass
class Figures:
    scenario: str
    accepted: int
    refused: int
    in_flight: int
    completed: int
    failed: Counter[str]
    lost: int
    duplicated: int
    mixed: int | None
    retried: int
    extra_llm_calls: int
    recovery: float | None  # None: some question accepted before the fault never ended
    p50: float
    p99: float
    notes: list[str]


async def measure(trial: Trial, scenario: Scenario) -> Figures:
    await submit_all(trial, scenario.inject)
    # Let late writers (a healed worker's fenced attempts) reach Valkey and the LLM first.
    await asyncio.sleep(2.0)
    logs = await job_logs(trial)
    llm_stats = await trial.llm("/_stats")
    llm_calls = llm_stats["chat_requests"]
    # How the LLM saw its calls end: "disconnected" is the service hanging up (a hang, or a
    # fenced attempt), "error" a 429/500 it answered, "dropped" a stream it cut.
    ends = Counter(call["outcome"] for call in llm_stats["calls"])
    trial.notes.append("LLM calls: " + ", ".join(f"{n} {end}" for end, n in ends.items()))

    accepted = [q for q in trial.questions if q.job_id is not None]
    expected = expected_answer(TOKENS)
    completed, failed, lost, duplicated, retried = 0, Counter[str](), 0, 0, 0
    for question in accepted:
        assert question.job_id is not None
        events = logs[question.job_id]
        terminal = [kind for kind, _ in events if kind in TERMINAL_EVENT_TYPES]
        attempts = {data.get("attempt") for kind, data in events if kind == "status"}
        retried += len(attempts - {0, None}) > 1
        final = question.answer.final
        if final is None or not terminal:
            lost += 1
            trial.notes.append(f"lost {question.job_id}: {len(events)} events, {terminal}")
            continue
        # Answered twice: two final events in the log, or a text other than the answer's.
        wrong_text = final.type == "done" and question.answer.text != expected
        if len(terminal) > 1 or wrong_text:
            duplicated += 1
            trial.notes.append(
                f"duplicated {question.job_id} (client text ok: {not wrong_text}), its log: "
                + story(events)
            )
        if final.type == "done":
            completed += 1
        else:
            failed[f"{final.type}: {final.data.get('code') or final.data.get('message')}"] += 1

    assert trial.fault_start is not None and trial.fault_end is not None
    fault_end = trial.fault_end
    before = [q for q in accepted if q.accepted is not None and q.accepted <= fault_end]
    ends = [q.finished for q in before]
    recovery = (
        None
        if None in ends
        else max([e for e in ends if e is not None], default=fault_end) - trial.fault_start
    )
    in_flight = sum(
        1
        for q in accepted
        if q.accepted is not None
        and q.accepted <= trial.fault_start
        and (q.finished is None or q.finished > trial.fault_start)
    )
    latencies = [
        q.finished - q.accepted
        for q in accepted
        if q.finished is not None and q.accepted is not None and q.answer.final is not None
        and q.answer.final.type == "done"
    ]  # fmt: skip
    refusals = Counter(q.refused for q in trial.questions if q.refused)
    if refusals:
        trial.notes.append("refused: " + ", ".join(f"{n} x {r}" for r, n in refusals.items()))
    resumed = Counter(error for q in accepted for error in q.resumed)
    if resumed:
        errors = ", ".join(f"{n} x {error}" for error, n in resumed.items())
        trial.notes.append(f"streams resumed after errors RagClient gave up on: {errors}")
    return Figures(
        scenario.title,
        len(accepted),
        sum(refusals.values()),
        in_flight,
        completed,
        failed,
        lost + trial.lost_jobs,
        duplicated,
        trial.mixed,
        retried,
        llm_calls - len(accepted),
        recovery,
        percentile(latencies, 50),
        percentile(latencies, 99),
        trial.notes,
    )


def start_proxied_worker(svc: Services) -> subprocess.Popen[str]:
    """A worker whose Redis connections go through a TCP proxy, run as a process of its own:
    inside this one, whose event loop follows a hundred streams, it would slow the worker's
    polls so much that a direct worker would win nearly every job."""
    proxy = subprocess.Popen(
        [sys.executable, __file__, "--proxy", str(svc.valkey.port)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proxy.stdout is not None
    address = proxy.stdout.readline().strip()
    svc.wait_worker_ready(svc.start_worker({"RAG_REDIS_URL": f"redis://{address}/0"}))
    return proxy


def serve_proxy(port: int) -> None:
    """`reliability.py --proxy PORT`: a TcpProxy to Valkey on PORT, paused by SIGUSR1 and
    resumed by SIGUSR2, until SIGTERM."""

    async def serve() -> None:
        async with TcpProxy("127.0.0.1", port) as proxy:
            loop, stop = asyncio.get_running_loop(), asyncio.Event()
            loop.add_signal_handler(signal.SIGUSR1, proxy.pause)
            loop.add_signal_handler(signal.SIGUSR2, proxy.resume)
            loop.add_signal_handler(signal.SIGTERM, stop.set)
            print(proxy.address, flush=True)
            await stop.wait()

    asyncio.run(serve())


# Logged lines that tell what the service did about a fault (worker and API logs, WARNING+).
LOG_MARKERS = {
    "superseded": "fenced-out writes of a superseded attempt",
    "breaker open": "breaker opened",
    "provider paused, job deferred": "jobs deferred by an open breaker",
    "attempt failed, will retry": "attempts retried",
}
FREED = re.compile(r"worker silent, its jobs freed\s+jobs=\[([^\]]*)\]")
UNRECORDED = re.compile(r"died before recording them freed\s+jobs=\[([^\]]*)\]")


def log_notes(logs: Path) -> list[str]:
    text = "".join(p.read_text(errors="replace") for p in sorted(logs.glob("*")))
    notes = [
        f"{label}: {text.count(marker)}" for marker, label in LOG_MARKERS.items() if marker in text
    ]
    freed = [ids.count("'") // 2 for ids in FREED.findall(text)]
    if freed:
        notes.append(f"jobs freed from silent workers: {' + '.join(map(str, freed))}")
    unrecorded = [ids.count("'") // 2 for ids in UNRECORDED.findall(text)]
    if unrecorded:
        notes.append(f"unrecorded jobs freed: {' + '.join(map(str, unrecorded))}")
    return notes


def run(scenario: Scenario, logs: Path) -> Figures:
    shutil.rmtree(logs, ignore_errors=True)
    env = {**recovery_env(scenario.recovery), **scenario.env}
    workers = 0 if scenario.proxied else 2  # proxied ones are started below
    with ExitStack() as cleanup:
        proxies: list[subprocess.Popen[str]] = []
        # Registered first, so run last: the workers stop while they can still reach Valkey.
        cleanup.callback(lambda: [(p.terminate(), p.wait(10)) for p in proxies])
        svc = cleanup.enter_context(
            services(
                ttft=TTFT,
                tokens=TOKENS,
                tps=TPS,
                workers=workers,
                env=env,
                logs=logs,
            )
        )
        if scenario.proxied:
            proxies += [start_proxied_worker(svc) for _ in range(2)]

        async def go() -> Figures:
            async with RagClient(svc.api_url) as client:
                trial = Trial(svc, client, scenario.recovery, proxies=proxies)
                return await measure(trial, scenario)

        figures = asyncio.run(go())
    figures.notes += log_notes(logs)
    return figures


def table(rows: list[Figures]) -> str:
    head = (
        "| fault | accepted | refused | in flight at fault | completed | failed | lost "
        "| duplicated | mixed | retried | extra LLM calls | recovery | p50 / p99 |\n"
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
    )
    lines = [head]
    for f in rows:
        recovery = "never" if f.recovery is None else f"{f.recovery:.1f} s"
        mixed = "-" if f.mixed is None else f"**{f.mixed}**"
        lines.append(
            f"| {f.scenario} | {f.accepted} | {f.refused} | {f.in_flight} | {f.completed} "
            f"| {sum(f.failed.values())} | **{f.lost}** | **{f.duplicated}** | {mixed} "
            f"| {f.retried} | {f.extra_llm_calls} | {recovery} | {f.p50:.1f} / {f.p99:.1f} s |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    names = [s.name for s in SCENARIOS] + list(JOB_SCENARIOS)
    parser.add_argument("-s", "--scenario", action="append", choices=names, help="repeatable")
    parser.add_argument(
        "-n", "--rounds", type=int, default=5, help="rounds of each document edit (default 5)"
    )
    parser.add_argument(
        "--logs",
        type=Path,
        default=Path(tempfile.gettempdir()) / "rag-reliability",
        help="where each scenario's process output goes (one folder per scenario)",
    )
    parser.add_argument("--proxy", type=int, help=argparse.SUPPRESS)  # serve_proxy
    args = parser.parse_args()
    if args.proxy:
        return serve_proxy(args.proxy)
    chosen = [s for s in SCENARIOS if not args.scenario or s.name in args.scenario]
    chosen_jobs = [n for n in JOB_SCENARIOS if not args.scenario or n in args.scenario]
    questions = (
        f"{RATE:g} questions/s for {SUBMIT_FOR:g} s, fault {FAULT_AT:g} s in; answers of "
        f"{TTFT + (TOKENS - 1) / TPS:.2f} s; "
        if chosen
        else ""
    )
    print(
        f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} cores; "
        f"{questions}logs in {args.logs}",
        flush=True,
    )
    rows = []
    for scenario in chosen:
        began = time.monotonic()
        figures = run(scenario, args.logs / scenario.name)
        rows.append(figures)
        notes = "; ".join(figures.notes) or "-"
        failed = ", ".join(f"{n} x {r}" for r, n in figures.failed.items())
        print(
            f"== {scenario.name} ({time.monotonic() - began:.0f} s): {notes}"
            + (f"; failed: {failed}" if failed else ""),
            file=sys.stderr,
            flush=True,
        )
    job_rows = []
    for name in chosen_jobs:
        began = time.monotonic()
        job_rows.append(run_job_scenario(name, args.logs / name, args.rounds))
        notes = "; ".join(job_rows[-1].notes) or "-"
        print(f"== {name} ({time.monotonic() - began:.0f} s): {notes}", file=sys.stderr)
    if rows:
        print(table(rows))
    if job_rows:
        print(jobs_table(job_rows))
    if any(f.lost or f.duplicated or f.mixed for f in rows) or any(r.broken for r in job_rows):
        sys.exit(1)  # the promise is broken: say so to whoever runs this


if __name__ == "__main__":
    main()
