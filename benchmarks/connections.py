"""N concurrent SSE streams on one API process: that each receives every token of its
answer, what a stream costs the API in memory and CPU, and the Redis connections it holds.

All N questions are queued first (the worker takes N at once), then N clients follow them;
the test LLM streams slowly, so every stream is open while tokens flow. Each stream's token
events, joined, must equal its `done` event's answer and the test LLM's exact text. Reported:
streams complete and intact, the API's RSS before and at the peak (per stream), its CPU per
stream (POST and SSE alike), and CLIENT LIST while the streams are open (the API's
connections are named `rag-api`).

    python benchmarks/connections.py -n 1000
"""

from __future__ import annotations

import argparse
import asyncio
import time
from dataclasses import dataclass, field

import aiohttp
import orjson
import redis
import uvloop
from harness import Services, cpu_seconds, rss_mib, services

from tests.support.openai_server import expected_answer


@dataclass
class Opened:
    """Streams open so far; `all` is set once every one is."""

    expected: int
    count: int = 0
    all: asyncio.Event = field(default_factory=asyncio.Event)

    def one_more(self) -> None:
        self.count += 1
        if self.count == self.expected:
            self.all.set()


@dataclass
class Stream:
    text: str = ""
    answer: str | None = None  # the `done` event's


async def follow(http: aiohttp.ClientSession, job_id: str, opened: Opened) -> Stream:
    """Read one job's SSE stream to its end: the tokens, and the final answer."""
    stream = Stream()
    async with http.get(f"/jobs/{job_id}/events") as response:
        opened.one_more()
        event = ""
        async for raw in response.content:
            line = raw.decode().rstrip("\r\n")
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: ") and event in ("token", "done"):
                data = orjson.loads(line[6:])
                if event == "token":
                    stream.text += data["text"]
                else:
                    stream.answer = data["answer"]
    return stream


async def open_streams(svc: Services, n: int, tokens: int) -> dict[str, object]:
    api = svc.api.pid
    rss_before, cpu_before = rss_mib(api), cpu_seconds(api)
    connector = aiohttp.TCPConnector(limit=n + 10)
    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(svc.api_url, connector=connector, timeout=timeout) as http:
        jobs = []
        for i in range(n):
            async with http.post("/chat", json={"query": f"question {i}"}) as response:
                jobs.append((await response.json())["job_id"])
        opened = Opened(n)
        started = time.monotonic()
        tasks = [asyncio.create_task(follow(http, job_id, opened)) for job_id in jobs]
        await asyncio.wait_for(opened.all.wait(), 120)
        await asyncio.sleep(1.0)  # every stream is open and tokens flow
        clients = await asyncio.to_thread(client_list, svc.valkey.url)
        rss_open = rss_mib(api)
        streams = await asyncio.gather(*tasks, return_exceptions=True)
        elapsed = time.monotonic() - started
    rss_peak, cpu = rss_mib(api, "VmHWM"), cpu_seconds(api) - cpu_before
    expected = expected_answer(tokens)
    intact = sum(
        1
        for s in streams
        if isinstance(s, Stream) and s.text == s.answer == expected  # every token, in order
    )
    api_clients = [c for c in clients if c.get("name") == "rag-api"]
    return {
        "streams": n,
        "streams_with_every_token": intact,
        "streams_failed": sum(1 for s in streams if not isinstance(s, Stream)),
        "seconds_to_last_done": round(elapsed, 1),
        "api_rss_mib_before": round(rss_before),
        "api_rss_mib_all_open": round(rss_open),
        "api_rss_mib_peak": round(rss_peak),
        "api_kib_per_stream": round((rss_peak - rss_before) * 1024 / n, 1),
        "api_cpu_ms_per_stream": round(cpu * 1000 / n, 2),
        "api_redis_connections": len(api_clients),
        "api_pubsub_connections": sum(1 for c in api_clients if int(c.get("sub", 0)) > 0),
        "all_redis_connections": len(clients),
    }


def client_list(url: str) -> list[dict[str, str]]:
    client = redis.Redis.from_url(url)
    try:
        return client.client_list()  # type: ignore[no-any-return]
    finally:
        client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=1000)
    parser.add_argument("--tokens", type=int, default=40)
    parser.add_argument("--tps", type=float, default=4.0, help="the test LLM's tokens a second")
    args = parser.parse_args()
    env = {
        "RAG_WORKER_MAX_JOBS": str(args.n),  # every answer streams at once
        "RAG_MAX_CONNECTIONS": str(args.n + 100),
    }
    with services(ttft=1.0, tokens=args.tokens, tps=args.tps, corpus=None, env=env) as svc:
        result = uvloop.run(open_streams(svc, args.n, args.tokens))
    for key, value in result.items():
        print(f"  {key:<28} {value}")


if __name__ == "__main__":
    main()
