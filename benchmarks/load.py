"""Closed-loop load: C users each submit a question, follow its answer to the end over SSE,
and submit again. One API process, N worker processes, Valkey, and the OpenAI-compatible test
server (300 ms to first token, 40 tokens at 100 tokens/s: about 690 ms of LLM per answer).

    python benchmarks/load.py                   # C = 10, 50, 200; 20 s each
    python benchmarks/load.py -c 50 -d 30
    python benchmarks/load.py -c 50 --corpus docs --store local   # the 530 pages, old store

Reports answers/s, client-seen latency p50/p99, the pipeline's overhead (latency minus the
LLM's own time), the first token's delay (when the client sees the first text, from its POST,
minus the LLM's own 300 ms to its first token), the queue wait (a job's start minus its
creation, read from the job records after the run), POST /chat latency, CPU per answer of
each process, and the Redis connections the API holds (sampled from CLIENT LIST while C streams
are open).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import aiohttp
import orjson
import redis
import uvloop
from harness import QUESTIONS, Services, median, percentile, services

from rag_async.store.keys import Keys

TTFT, TOKENS, TPS = 0.3, 40, 100.0
LLM_SECONDS = TTFT + (TOKENS - 1) / TPS  # when the fake LLM sends its last token


@dataclass
class Run:
    latencies: list[float] = field(default_factory=list)
    posts: list[float] = field(default_factory=list)
    first_tokens: list[float] = field(default_factory=list)
    job_ids: list[str] = field(default_factory=list)  # the measured answers' (async design)
    errors: int = 0


@dataclass
class Asked:
    """When one question's POST was answered and its first text arrived, and whether its answer
    ended with `done`."""

    posted: float
    first_token: float | None = None
    done: bool = False
    job_id: str | None = None


async def ask_async(http: aiohttp.ClientSession, question: str) -> Asked:
    """Submit, then follow the events to the end: two requests."""
    async with http.post("/chat", data=orjson.dumps({"query": question})) as response:
        job_id = (await response.json())["job_id"]
    asked = Asked(posted=time.monotonic(), job_id=job_id)
    async with http.get(f"/jobs/{job_id}/events") as stream:
        return await _follow(stream, asked)


async def ask_async_one_request(http: aiohttp.ClientSession, question: str) -> Asked:
    """Submit asking for `text/event-stream`: the POST itself streams the job's events."""
    body = orjson.dumps({"query": question})
    async with http.post("/chat", data=body, headers=_EVENT_STREAM) as stream:
        asked = Asked(posted=time.monotonic(), job_id=stream.headers["x-rag-job-id"])
        return await _follow(stream, asked)


async def ask_inline(http: aiohttp.ClientSession, question: str) -> Asked:
    """The replaced design: the POST itself streams the answer back."""
    async with http.post("/chat-inline", data=orjson.dumps({"query": question})) as stream:
        return await _follow(stream, Asked(posted=time.monotonic()))


_EVENT_STREAM = {"accept": "text/event-stream"}
ASKERS = {"async": ask_async, "async-one-request": ask_async_one_request, "inline": ask_inline}


async def _follow(stream: aiohttp.ClientResponse, asked: Asked) -> Asked:
    """Read an event stream to its final event; only the events' types matter here."""
    async for line in stream.content:
        if asked.first_token is None and line.startswith(b"event: token"):
            asked.first_token = time.monotonic()
        if line.startswith((b"event: done", b"event: error")):
            asked.done = line.startswith(b"event: done")
            return asked
    return asked


async def user(
    ask: Callable[[aiohttp.ClientSession, str], Awaitable[Asked]],
    http: aiohttp.ClientSession,
    n: int,
    until: float,
    measure_from: float,
    run: Run,
) -> None:
    """One closed-loop user. aiohttp (already a dependency, via the openai SDK's transport)
    keeps the load generator's own CPU low; it shares the machine with the service."""
    i = n
    while time.monotonic() < until:
        question = QUESTIONS[i % len(QUESTIONS)]
        i += 1
        started = time.monotonic()
        try:
            asked = await ask(http, question)
        except (aiohttp.ClientError, KeyError, TimeoutError):
            run.errors += 1
            continue
        finished = time.monotonic()
        if started >= measure_from and finished <= until:
            if asked.done:
                run.latencies.append(finished - started)
                run.posts.append(asked.posted - started)
                if asked.first_token is not None:
                    run.first_tokens.append(asked.first_token - started - TTFT)
                if asked.job_id is not None:
                    run.job_ids.append(asked.job_id)
            else:
                run.errors += 1


def queue_waits(svc: Services, job_ids: list[str]) -> list[float]:
    """Each job's start minus its creation, read from the job records once the run is over (so
    the reading adds nothing to the load)."""
    client = redis.Redis.from_url(svc.valkey.url)
    try:
        with client.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                pipe.hmget(Keys(svc.prefix).job(job_id), "created_at", "started_at")
            records = pipe.execute()
    finally:
        client.close()
    return [float(started) - float(created) for created, started in records if created and started]


def api_connections(svc: Services) -> int:
    client = redis.Redis.from_url(svc.valkey.url)
    try:
        return sum(1 for c in client.client_list() if c.get("name") == "rag-api")
    finally:
        client.close()


async def load(
    svc: Services, concurrency: int, duration: float, warmup: float, *, design: str = "async"
) -> dict[str, float]:
    async with aiohttp.ClientSession(
        base_url=svc.api_url,
        connector=aiohttp.TCPConnector(limit=concurrency * 2),
        timeout=aiohttp.ClientTimeout(total=120),
        headers={"content-type": "application/json"},
    ) as http:
        run = Run()
        now = time.monotonic()
        measure_from, until = now + warmup, now + warmup + duration
        ask = ASKERS[design]
        tasks = [
            asyncio.create_task(user(ask, http, n, until, measure_from, run))
            for n in range(concurrency)
        ]
        await asyncio.sleep(warmup)
        cpu_before = {**svc.cpu(), "client": time.process_time()}
        connections = []
        while time.monotonic() < until - 0.5:
            await asyncio.sleep(min(2.0, until - time.monotonic() - 0.5))
            connections.append(await asyncio.to_thread(api_connections, svc))
        await asyncio.sleep(max(0.0, until - time.monotonic()))
        cpu_after = {**svc.cpu(), "client": time.process_time()}
        await asyncio.gather(*tasks)
    answers = len(run.latencies)
    overhead = [latency - LLM_SECONDS for latency in run.latencies]
    result = {
        "concurrency": concurrency,
        "answers": answers,
        "answers_per_s": answers / duration,
        "errors": run.errors,
        "latency_p50_ms": percentile(run.latencies, 50) * 1000,
        "latency_p99_ms": percentile(run.latencies, 99) * 1000,
        "overhead_p50_ms": percentile(overhead, 50) * 1000,
        "overhead_p99_ms": percentile(overhead, 99) * 1000,
        "first_token_delay_p50_ms": percentile(run.first_tokens, 50) * 1000,
        "first_token_delay_p99_ms": percentile(run.first_tokens, 99) * 1000,
        "post_chat_p50_ms": percentile(run.posts, 50) * 1000,
        "post_chat_p99_ms": percentile(run.posts, 99) * 1000,
    }
    if run.job_ids:
        waits = await asyncio.to_thread(queue_waits, svc, run.job_ids)
        result["queue_wait_p50_ms"] = percentile(waits, 50) * 1000
        result["queue_wait_p90_ms"] = percentile(waits, 90) * 1000
    result |= {
        "api_redis_connections_max": max(connections, default=0),
        "api_redis_connections_median": median(connections),
    }
    for name in cpu_after:
        if answers:
            result[f"cpu_ms_per_answer_{name}"] = (
                (cpu_after[name] - cpu_before[name]) / answers * 1000
            )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-c", "--concurrency", type=int, action="append")
    parser.add_argument("-d", "--duration", type=float, default=20.0)
    parser.add_argument("--warmup", type=float, default=4.0)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="print JSON lines only")
    parser.add_argument(
        "--inline",
        action="store_true",
        help="measure the replaced design instead: retrieval and the LLM inside the request",
    )
    parser.add_argument(
        "--one-request",
        action="store_true",
        help="the async design with one request per question: POST /chat with `Accept: "
        "text/event-stream` streams the job's events (default: the POST's 202, then "
        "GET /jobs/{id}/events)",
    )
    parser.add_argument(
        "--corpus",
        choices=["demo", "docs", "none"],
        default="demo",
        help="what the store holds: the demo corpus, the 530 pages of the Python docs, or "
        "nothing (retrieval finds no sources, leaving the pipeline's own cost)",
    )
    parser.add_argument(
        "--store",
        choices=["edge", "local"],
        default="edge",
        help="the embedded store: Qdrant Edge, or qdrant-client's local mode (the one before)",
    )
    parser.add_argument(
        "--offline-embedder",
        choices=["static", "off"],
        default="static",
        help="hybrid retrieval with the shipped dense model (the default), or lexical only",
    )
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="RAG_NAME=VALUE",
        help="a setting for the service's processes (repeat for more), e.g. to compare values",
    )
    args = parser.parse_args()
    settings = dict(pair.split("=", 1) for pair in args.env)
    levels = args.concurrency or [10, 50, 200]
    design = "inline" if args.inline else "async-one-request" if args.one_request else "async"
    label = "inline (replaced)" if args.inline else f"{design}, {args.workers} worker(s)"
    with services(
        ttft=TTFT,
        tokens=TOKENS,
        tps=TPS,
        workers=args.workers,
        corpus=None if args.corpus == "none" else args.corpus,
        inline=args.inline,
        env={
            "RAG_STORE": args.store,
            "RAG_OFFLINE_EMBEDDER": args.offline_embedder,
            **settings,
        },
    ) as svc:
        for concurrency in levels:
            measured = load(svc, concurrency, args.duration, args.warmup, design=design)
            result = {
                "design": label,
                "corpus": args.corpus,
                "store": args.store,
                **uvloop.run(measured),
            }
            print(json.dumps(result) if args.json else _table(result), flush=True)


def _table(result: dict[str, object]) -> str:
    return (
        "\n".join(
            f"  {key:<32} {value:,.2f}" if isinstance(value, float) else f"  {key:<32} {value}"
            for key, value in result.items()
        )
        + "\n"
    )


if __name__ == "__main__":
    main()
