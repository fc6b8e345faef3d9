"""Issue 19's attacks, measured against the real services: what one hostile client costs
everyone else. Each scenario starts its own services (harness.py: Valkey, the test LLM, the
API and a worker as processes), attacks them from 127.0.0.1 and watches an ordinary client
that connects from 127.0.0.2 (Linux routes all of 127/8 to loopback), so that a limit per
client address is tested honestly.

    python benchmarks/attacks.py                    # every scenario (about 5 minutes)
    python benchmarks/attacks.py -s stalled-bodies -s giant-token

Scenarios:
- stalled-bodies: 1,000 connections send `POST /chat` headers with `Content-Length: 5000` and
  11 bytes of body, then stall. How soon the server cuts them, and how the ordinary client
  fares meanwhile (its requests answered, any 503 and whether it is JSON).
- local-streams: no keys; 999 event streams on one long answer. How many the local user gets,
  and whether /healthz still answers.
- v1-streams: with keys, 25 concurrent `/v1/chat/completions` streams of one key through the
  openai SDK, with 20 streams allowed a key. Answers, refusals, and the LLM calls made.
- giant-token: a 4.9 MB document of one token (no space), then 20 questions that retrieve it. The
  largest job view and event stream, and how much Valkey grew.
- hostile-chunking: a 4.8 MB JSON document of `#\\n`. The worker's peak memory, the job's end,
  and the ordinary client's answer times meanwhile.

docs/security.md quotes the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson
from harness import Services, median, rss_mib, services
from redis.asyncio import Redis

KEY = "bench-secret-key-0123456789"
ORDINARY = "127.0.0.2"  # the ordinary client's own loopback address
FLOOD = 999  # stalled bodies (the probe: one below the default max_connections)


@asynccontextmanager
async def ordinary(svc: Services, key: str | None = None) -> AsyncIterator[httpx.AsyncClient]:
    """A well-behaved client, on its own address."""
    headers = {"authorization": f"Bearer {key}"} if key else {}
    transport = httpx.AsyncHTTPTransport(local_address=ORDINARY)
    async with httpx.AsyncClient(
        base_url=svc.api_url, transport=transport, headers=headers, timeout=30
    ) as client:
        yield client


async def answer_seconds(client: httpx.AsyncClient, query: str, **body: Any) -> float | str:
    """Ask and poll to the end: the seconds it took, or why it failed."""
    started = time.monotonic()
    try:
        posted = await client.post("/chat", json={"query": query, **body})
        if posted.status_code != 202:
            return f"{posted.status_code} {posted.text[:80]}"
        job = posted.json()["job_id"]
        while time.monotonic() - started < 60:
            view = (await client.get(f"/jobs/{job}")).json()
            if view["status"] in ("complete", "failed", "cancelled"):
                return time.monotonic() - started if view["status"] == "complete" else "failed"
            await asyncio.sleep(0.05)
    except httpx.HTTPError as error:
        return type(error).__name__
    return "timeout"


def status_of(response: httpx.Response) -> str:
    """The status, and for an error whether its body is the API's JSON error shape."""
    if response.status_code < 400:
        return str(response.status_code)
    try:
        shaped = "code" in response.json()["error"]
    except (ValueError, KeyError, TypeError):
        shaped = False
    return f"{response.status_code}{'' if shaped else ' (not JSON)'}"


# --- stalled bodies -----------------------------------------------------------------------


async def stalled_connection(port: int, closed: list[float], started: float) -> None:
    """One client that sends a request head and 11 bytes of its body, then nothing."""
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        closed.append(time.monotonic() - started)  # refused outright
        return
    head = (
        "POST /chat HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
        "content-length: 5000\r\n\r\n"
    )
    writer.write(head.encode() + b'{"query": "')
    try:
        while await reader.read(65536):  # until the server closes it (an answer may come first)
            pass
    except OSError:
        pass
    closed.append(time.monotonic() - started)
    writer.close()


async def stalled_bodies(svc: Services, patience: float = 120) -> dict[str, Any]:
    flood = FLOOD
    port = int(svc.api_url.rsplit(":", 1)[1])
    closed: list[float] = []
    statuses: Counter[str] = Counter()
    started = time.monotonic()
    attackers = []
    for i in range(flood):  # a ramp, as a real flood comes: each is let in while there is room
        attackers.append(asyncio.create_task(stalled_connection(port, closed, started)))
        if i % 50 == 49:
            await asyncio.sleep(0.05)
    async with ordinary(svc) as client:
        while len(closed) < flood and time.monotonic() - started < patience:
            for path in ("/healthz", "/documents"):
                try:
                    statuses[status_of(await client.get(path))] += 1
                except httpx.HTTPError as error:
                    statuses[type(error).__name__] += 1
            await asyncio.sleep(0.25)
        answer = await answer_seconds(client, "How do I read and write files?")
    for task in attackers:
        task.cancel()
    return {
        "stalled connections": flood,
        "cut by the server": len(closed),
        "seconds to cut the last": round(max(closed), 1) if len(closed) == flood else None,
        "ordinary client's answers (status: count)": dict(statuses),
        "a question after the flood (s)": answer if isinstance(answer, str) else round(answer, 2),
    }


# --- event streams of the local user --------------------------------------------------------


async def held_stream(http: httpx.AsyncClient, url: str, outcome: Counter[str]) -> None:
    try:
        async with http.stream("GET", url) as response:
            outcome[str(response.status_code)] += 1
            async for _ in response.aiter_bytes():
                pass
    except httpx.HTTPError as error:
        outcome[type(error).__name__] += 1


async def local_streams(svc: Services, flood: int = 999) -> dict[str, Any]:
    async with ordinary(svc) as client:
        job = (await client.post("/chat", json={"query": "a long answer"})).json()["job_id"]
        outcome: Counter[str] = Counter()
        url = f"{svc.api_url}/jobs/{job}/events"
        limits = httpx.Limits(max_connections=flood, max_keepalive_connections=0)
        http = httpx.AsyncClient(timeout=httpx.Timeout(120, connect=30), limits=limits)
        holders = [asyncio.create_task(held_stream(http, url, outcome)) for _ in range(flood)]
        for _ in range(60):  # until every stream is open or refused
            if sum(outcome.values()) >= flood:
                break
            await asyncio.sleep(1)
        health = await client.get("/healthz")
        health_local = await httpx.AsyncClient().get(f"{svc.api_url}/healthz")
        for task in holders:
            task.cancel()
        await asyncio.gather(*holders, return_exceptions=True)
        await http.aclose()
    return {
        "streams tried": flood,
        "stream answers (status: count)": dict(outcome),
        "/healthz from another address": health.status_code,
        "/healthz from the streams' address": health_local.status_code,
    }


# --- /v1 streams over the stream limit ------------------------------------------------------


async def llm_calls(svc: Services) -> int:
    async with httpx.AsyncClient() as http:
        stats = (await http.get(f"{svc.llm_admin_url}/_stats")).json()
    return int(stats["chat_requests"])


async def v1_stream(client: Any) -> str:
    import openai

    try:
        stream = await client.chat.completions.create(
            model="rag-async", messages=[{"role": "user", "content": "files?"}], stream=True
        )
        async for _ in stream:
            pass
        return "answered"
    except openai.APIStatusError as error:
        return str(error.status_code)


async def v1_streams(svc: Services, concurrent: int = 25) -> dict[str, Any]:
    import openai

    before = await llm_calls(svc)
    client = openai.AsyncOpenAI(base_url=f"{svc.api_url}/v1", api_key=KEY)
    outcomes = Counter(await asyncio.gather(*(v1_stream(client) for _ in range(concurrent))))
    await asyncio.sleep(8)  # any job queued for a refused stream runs now
    return {
        "concurrent streams (openai SDK, default retries)": concurrent,
        "outcomes": dict(outcomes),
        "LLM calls": await llm_calls(svc) - before,
    }


# --- one giant token --------------------------------------------------------------------------


async def valkey_used(svc: Services) -> int:
    redis = Redis.from_url(svc.valkey.url)
    try:
        return int((await redis.info("memory"))["used_memory"])
    finally:
        await redis.aclose()


async def wait_document(client: httpx.AsyncClient, job: str, patience: float = 300) -> str:
    deadline = time.monotonic() + patience
    while time.monotonic() < deadline:
        view = (await client.get(f"/jobs/{job}")).json()
        if view["status"] in ("complete", "failed", "cancelled"):
            return str(view["status"] if view["status"] != "failed" else view.get("error"))
        await asyncio.sleep(0.5)
    return "timeout"


async def giant_token(svc: Services, questions: int = 20) -> dict[str, Any]:
    # One token without a space; the title makes every chunk of it match the question.
    text = "x" * 4_900_000
    async with ordinary(svc) as client:
        posted = await client.post(
            "/documents", json={"text": text, "title": "teapot", "collection": "giant"}
        )
        ingested = await wait_document(client, posted.json()["job_id"])
        used_before = await valkey_used(svc)
        views, streams = [], []
        for _ in range(questions):
            job = (
                await client.post("/chat", json={"query": "teapot?", "collection": "giant"})
            ).json()
            await wait_document(client, job["job_id"], patience=60)
            views.append(len((await client.get(f"/jobs/{job['job_id']}")).content))
            streams.append(len((await client.get(f"/jobs/{job['job_id']}/events")).content))
        grown = await valkey_used(svc) - used_before
    return {
        "ingestion": ingested,
        "questions": questions,
        "largest job view (KB)": round(max(views) / 1000, 1),
        "largest event stream (KB)": round(max(streams) / 1000, 1),
        "Valkey grew by (MB)": round(grown / 1e6, 1),
    }


# --- hostile chunking ---------------------------------------------------------------------------


async def hostile_chunking(svc: Services) -> dict[str, Any]:
    worker = svc.workers[0].pid
    async with ordinary(svc) as client:
        calm = [await answer_seconds(client, "What is a list comprehension?") for _ in range(5)]
        peak_before = rss_mib(worker, "VmHWM")
        posted = await client.post(
            "/documents", json={"text": "#\n" * 2_400_000, "title": "hashes"}
        )
        started = time.monotonic()
        ending = asyncio.create_task(wait_document(client, posted.json()["job_id"]))
        during: list[float | str] = []
        while not ending.done():
            during.append(await answer_seconds(client, "What is a list comprehension?"))
        end = await ending
    timed = [s for s in during if isinstance(s, float)]
    calm_median = median([s for s in calm if isinstance(s, float)])
    peak_after = rss_mib(worker, "VmHWM")
    return {
        "job's end": end,
        "seconds to the end": round(time.monotonic() - started, 1),
        "worker peak RSS before / after (MiB)": f"{peak_before:.0f} / {peak_after:.0f}",
        "answer median before / during (s)": f"{calm_median:.2f} / {median(timed):.2f}",
        "answers during (not answered)": f"{len(timed)} ({len(during) - len(timed)})",
    }


# The service's own defaults for the caps that harness.py lifts for its load benchmarks (there
# one loopback client plays every user): here they are what is under test.
DEFAULT_CAPS = {"RAG_MAX_CONNECTIONS_PER_CLIENT": "250", "RAG_MAX_STREAMS_WITHOUT_KEYS": "100"}

SCENARIOS: dict[str, tuple[Callable[[Services], Awaitable[dict[str, Any]]], dict[str, Any]]] = {
    "stalled-bodies": (
        stalled_bodies,
        {"ttft": 0.05, "tokens": 10, "tps": 200, "env": DEFAULT_CAPS},
    ),
    "local-streams": (local_streams, {"ttft": 0.3, "tokens": 600, "tps": 10, "env": DEFAULT_CAPS}),
    "v1-streams": (
        v1_streams,
        {
            "ttft": 0.5,
            "tokens": 40,
            "tps": 20,
            "env": {**DEFAULT_CAPS, "RAG_API_KEYS": f"bench={KEY}"},
        },
    ),
    "giant-token": (giant_token, {"ttft": 0.05, "tokens": 10, "tps": 200}),
    "hostile-chunking": (hostile_chunking, {"ttft": 0.05, "tokens": 10, "tps": 200}),
}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-s", "--scenario", action="append", choices=list(SCENARIOS))
    parser.add_argument("--logs", type=Path, help="a folder for the processes' output")
    parser.add_argument("--flood", type=int, default=FLOOD, help="stalled bodies to send")
    args = parser.parse_args()
    globals()["FLOOD"] = args.flood
    logs = args.logs or Path(tempfile.mkdtemp(prefix="rag-attacks-"))
    for name in args.scenario or list(SCENARIOS):
        attack, options = SCENARIOS[name]
        with services(**options, logs=logs / name) as svc:
            result = asyncio.run(attack(svc))
        print(f"## {name}\n{orjson.dumps(result, option=orjson.OPT_INDENT_2).decode()}", flush=True)


if __name__ == "__main__":
    main()
