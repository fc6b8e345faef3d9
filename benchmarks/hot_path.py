"""CPU per answer of the per-token hot path, design against design, in one run.

1. Consuming a 40-token chat stream through the openai SDK: its typed chunk objects, against
   the same call's raw streaming response parsed line by line with orjson (what
   `rag_async.providers.llm.OpenAIChat` does).
2. Telling Redis about the tokens: one event-log append (XADD + PUBLISH, one Lua call) per
   token, against one per coalesced batch (what `rag_async.worker.jobs.answer` does).

The test server runs in its own process, so only the consumer's CPU is counted here.

    python benchmarks/hot_path.py
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import openai
from harness import REPO, median
from redis.asyncio import Redis

from rag_async.domain.events import TokenEvent
from rag_async.local.valkey import EmbeddedValkey
from rag_async.providers.llm import OpenAIChat
from rag_async.store.events import EventLog
from rag_async.store.keys import Keys

ANSWERS = 200
TOKENS = 40


async def cpu_per_call(call: Callable[[], Awaitable[object]], n: int, concurrency: int) -> float:
    """Process CPU milliseconds per call, `concurrency` calls in flight at a time."""
    semaphore = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with semaphore:
            await call()

    await asyncio.gather(*(one() for _ in range(10)))  # warm up connections and caches
    started = time.process_time()
    await asyncio.gather(*(one() for _ in range(n)))
    return (time.process_time() - started) / n * 1000


async def llm_designs(base_url: str) -> dict[str, float]:
    client = openai.AsyncOpenAI(base_url=base_url, api_key="bench", max_retries=0)
    messages = [{"role": "user", "content": "hello"}]

    async def typed() -> None:
        stream = await client.chat.completions.create(
            model="m",
            messages=messages,
            stream=True,  # type: ignore[arg-type]
        )
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                pass

    chat = OpenAIChat(client, "m", max_tokens=100)

    async def raw() -> None:
        async for _ in chat.stream("hello", []):
            pass

    aio_client = openai.AsyncOpenAI(
        base_url=base_url, api_key="bench", max_retries=0, http_client=openai.DefaultAioHttpClient()
    )
    aio_chat = OpenAIChat(aio_client, "m", max_tokens=100)

    async def raw_aiohttp() -> None:
        async for _ in aio_chat.stream("hello", []):
            pass

    results = {}
    designs = (
        ("sdk typed chunks", typed),
        ("raw lines + orjson", raw),
        ("raw, aiohttp transport", raw_aiohttp),
    )
    for name, design in designs:
        results[name] = median([await cpu_per_call(design, ANSWERS, 20) for _ in range(3)])
    await client.close()
    await aio_client.close()
    return results


async def redis_designs(url: str) -> dict[str, float]:
    redis = Redis.from_url(url)
    log = EventLog(redis, Keys("bench:"), ttl=60)
    batches = 8  # ~40 tokens over 390 ms, flushed every 50 ms

    async def per_token() -> None:
        job = f"{time.monotonic_ns()}"
        for i in range(TOKENS):
            await log.append(job, TokenEvent(text=f" word{i}"))

    async def coalesced() -> None:
        job = f"{time.monotonic_ns()}"
        for i in range(batches):
            await log.append(job, TokenEvent(text=" word" * (TOKENS // batches) + str(i)))

    results = {}
    for name, design in (("append per token", per_token), ("append per batch", coalesced)):
        results[name] = median([await cpu_per_call(design, ANSWERS, 20) for _ in range(3)])
    await redis.aclose()
    return results


def main() -> None:
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.support.openai_server",
            "--tokens",
            str(TOKENS),
            "--tps",
            "0",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        base_url = server.stdout.readline().split()[-1]
        with (
            tempfile.TemporaryDirectory() as tmp,
            EmbeddedValkey(Path(tmp), appendonly=False) as valkey,
        ):
            llm = asyncio.run(llm_designs(base_url))
            redis = asyncio.run(redis_designs(valkey.url))
    finally:
        server.terminate()
        server.wait()
    print(f"CPU ms per {TOKENS}-token answer, consumer side (median of 3 runs of {ANSWERS}):")
    for results in (llm, redis):
        slowest = max(results.values())
        for name, value in results.items():
            print(f"  {name:<24} {value:6.2f} ms   {slowest / value:4.1f}x less than the slowest")


if __name__ == "__main__":
    main()
