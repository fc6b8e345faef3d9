"""arq polls its queue: choose `RAG_WORKER_POLL_DELAY` from queue wait versus idle cost.

For each poll delay, one worker process runs against Valkey: first idle for a while (CPU of
the worker and of Valkey per second), then it answers questions submitted one at a time, at
random moments, so each one's queue wait (job picked up minus job created) is measured apart
from any other load.

    python benchmarks/poll_delay.py                 # 0.5, 0.1, 0.05, 0.02, 0.01, 0.005 s
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time

import httpx
from harness import median, percentile, services

from rag_async.client.api import RagClient


async def queue_waits(api_url: str, count: int) -> list[float]:
    waits = []
    async with RagClient(api_url) as client, httpx.AsyncClient(base_url=api_url) as http:
        for i in range(count):
            await asyncio.sleep(random.uniform(0.0, 0.3))  # land anywhere in a poll cycle
            job_id = (await client.ask(f"question {i}"))["job_id"]
            async for _ in client.follow(job_id):
                pass
            view = (await http.get(f"/jobs/{job_id}")).json()
            waits.append(view["started_at"] - view["created_at"])
    return waits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--delays", type=float, nargs="*", default=[0.5, 0.1, 0.05, 0.02, 0.01, 0.005]
    )
    parser.add_argument("--idle", type=float, default=10.0, help="seconds of idle measurement")
    parser.add_argument("--jobs", type=int, default=40)
    args = parser.parse_args()
    print(
        f"{'poll delay':>10} {'wait p50':>9} {'wait p90':>9} {'idle CPU worker':>16} "
        f"{'idle CPU valkey':>16}"
    )
    for delay in args.delays:
        env = {"RAG_WORKER_POLL_DELAY": str(delay), "RAG_DEMO_CORPUS": "false"}
        with services(ttft=0.0, tokens=5, tps=0, corpus=None, env=env) as svc:
            before, started = svc.cpu(), time.monotonic()
            time.sleep(args.idle)
            after, elapsed = svc.cpu(), time.monotonic() - started
            waits = asyncio.run(queue_waits(svc.api_url, args.jobs))
        idle_worker = (after["worker"] - before["worker"]) / elapsed * 100
        idle_valkey = (after["valkey"] - before["valkey"]) / elapsed * 100
        print(
            f"{delay:>9.3f}s {median(waits) * 1000:>7.1f}ms {percentile(waits, 90) * 1000:>7.1f}ms"
            f" {idle_worker:>15.2f}% {idle_valkey:>15.2f}%",
            flush=True,
        )


if __name__ == "__main__":
    main()
