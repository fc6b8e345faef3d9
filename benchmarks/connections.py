"""Redis connections held by one API process while N SSE clients follow their answers.

The LLM streams slowly (2 tokens/s), so all N streams stay open and receive events while the
connections are counted (CLIENT LIST, the API's connections are named `rag-api`).

    python benchmarks/connections.py -n 200
"""

from __future__ import annotations

import argparse
import asyncio

import httpx
import redis
from harness import services
from httpx_sse import aconnect_sse


async def open_streams(api_url: str, valkey_url: str, n: int, hold: float) -> dict[str, int]:
    limits = httpx.Limits(max_connections=n + 10, max_keepalive_connections=n + 10)
    async with httpx.AsyncClient(base_url=api_url, limits=limits, timeout=60) as http:
        jobs = [
            (await http.post("/chat", json={"query": f"question {i}"})).json()["job_id"]
            for i in range(n)
        ]
        opened = 0
        events = 0
        all_open = asyncio.Event()

        async def follow(job_id: str) -> None:
            nonlocal opened, events
            async with aconnect_sse(http, "GET", f"/jobs/{job_id}/events") as source:
                opened += 1
                if opened == n:
                    all_open.set()
                async for _ in source.aiter_sse():
                    events += 1

        tasks = [asyncio.create_task(follow(job_id)) for job_id in jobs]
        await all_open.wait()
        await asyncio.sleep(hold)
        client = redis.Redis.from_url(valkey_url)
        clients = client.client_list()
        client.close()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return {
        "open_streams": opened,
        "events_received_meanwhile": events,
        "api_connections": sum(1 for c in clients if c.get("name") == "rag-api"),
        "api_pubsub_connections": sum(
            1 for c in clients if c.get("name") == "rag-api" and int(c.get("sub", 0)) > 0
        ),
        "channels_subscribed": max(int(c.get("sub", 0)) for c in clients),
        "all_connections": len(clients),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=200)
    parser.add_argument("--hold", type=float, default=3.0)
    args = parser.parse_args()
    with services(ttft=1.0, tokens=60, tps=2, corpus=False) as svc:
        result = asyncio.run(open_streams(svc.api_url, svc.valkey.url, args.n, args.hold))
    for key, value in result.items():
        print(f"  {key:<28} {value}")


if __name__ == "__main__":
    main()
