"""Where one answer's overhead goes, with nothing else running: the async design (one request,
`POST /chat` with `Accept: text/event-stream`) and the inline design side by side, one
question at a time.

For each answer, the client's clock marks when the response started and when each kind of
event first arrived; the async job's record adds its queue wait and its worker's own timings.
Printed: the median of each mark, in milliseconds from the POST. The test LLM answers in 690
ms (300 to its first token), so *overhead* is `done` minus 690 ms, and *first token minus the
LLM's* is `token` minus 300 ms.

    python benchmarks/critical_path.py            # 60 answers per design
    python benchmarks/critical_path.py -n 200
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict

import aiohttp
import orjson
import redis
import uvloop
from harness import QUESTIONS, median, services
from load import LLM_SECONDS, TOKENS, TPS, TTFT

from rag_async.store.keys import Keys

PATHS = {"async": "/chat", "inline": "/chat-inline"}
WARMUP = 10
_HEADERS = {"accept": "text/event-stream", "content-type": "application/json"}


async def answer(
    http: aiohttp.ClientSession, path: str, question: str
) -> tuple[dict[str, float], str]:
    """The client's marks of one answer (seconds from the POST) and its job id ('' inline)."""
    posted = time.monotonic()
    marks: dict[str, float] = {}
    async with http.post(path, data=orjson.dumps({"query": question}), headers=_HEADERS) as s:
        marks["response"] = time.monotonic() - posted
        async for line in s.content:
            if line.startswith(b"event: "):
                kind = line[7:].strip().decode()
                marks.setdefault(kind, time.monotonic() - posted)
                if kind in ("done", "error"):
                    break
        return marks, s.headers.get("x-rag-job-id", "")


async def answers(url: str, path: str, n: int) -> list[tuple[dict[str, float], str]]:
    async with aiohttp.ClientSession(base_url=url) as http:
        for i in range(WARMUP):
            await answer(http, path, QUESTIONS[i % len(QUESTIONS)])
        return [await answer(http, path, QUESTIONS[i % len(QUESTIONS)]) for i in range(n)]


def job_timings(valkey_url: str, prefix: str, job_id: str) -> dict[str, float]:
    """The worker's side of one job, from its record: its queue wait and stage timings."""
    with redis.Redis.from_url(valkey_url) as r:
        timings = r.hget(Keys(prefix).job(job_id), "timings")
    return orjson.loads(timings or b"{}")


def measure(design: str, n: int) -> tuple[dict[str, float], dict[str, float]]:
    """The medians of the client's marks and of the job's timings (none inline)."""
    with services(ttft=TTFT, tokens=TOKENS, tps=TPS, workers=1, inline=design == "inline") as svc:
        results = uvloop.run(answers(svc.api_url, PATHS[design], n))
        client, worker = defaultdict(list), defaultdict(list)
        for marks, job_id in results:
            timings = job_timings(svc.valkey.url, svc.prefix, job_id) if job_id else {}
            for name, seconds in marks.items():
                client[name].append(seconds)
            for name, seconds in timings.items():
                worker[name].append(seconds)
    medians = {name: median(values) for name, values in client.items()}
    return medians, {name: median(values) for name, values in worker.items()}


def derived(marks: dict[str, float]) -> dict[str, float]:
    return {
        "first token minus the LLM's 300 ms": marks["token"] - TTFT,
        "overhead: done minus 690 ms": marks["done"] - LLM_SECONDS,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=60, help="answers per design")
    n = parser.parse_args().n
    (asynchronous, worker), (inline, _) = measure("async", n), measure("inline", n)
    print(f"p50 of {n} answers, one at a time: ms after the POST")
    print(f"{'mark':36s} {'async':>8s} {'inline':>8s}")
    rows = sorted(asynchronous.items(), key=lambda item: item[1])
    inline.update(derived(inline))
    for name, seconds in [*rows, *derived(asynchronous).items()]:
        other = f"{inline[name] * 1000:8.2f}" if name in inline else ""
        print(f"{name:36s} {seconds * 1000:8.2f} {other}")
    print("\nthe async jobs' records, p50 ms")
    for name, seconds in sorted(worker.items(), key=lambda item: item[1]):
        print(f"{name:36s} {seconds * 1000:8.2f}")


if __name__ == "__main__":
    main()
