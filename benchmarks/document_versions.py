"""Documents under concurrent edits, measured: for each way a document's jobs overlap, how
many rounds ended with exactly one version searchable, the registry and the key's stored
bytes agreeing with it (issue 18, bug 4 and 5).

    python benchmarks/document_versions.py                 # every scenario, 5 rounds each
    python benchmarks/document_versions.py -s reupload -n 10

The services are processes (harness.py: Valkey, the test LLM, the API, one worker). A round
uploads a large document (its word `old<n>`, about a thousand chunks), waits until its first
batch of chunks is written, then does the scenario's edit; it then reads what is searchable
for each version's word (a question's sources), the registry's entry and the tally, and
counts the round as one of:

- `one version`: only the version that should be is searchable, and the registry and the
  tally say so;
- `mixed`: chunks of a version that was replaced, deleted, cancelled or failed are
  searchable;
- `lost`: the version that should be searchable is not;
- `registry wrong`: what is searchable is right, the registry's entry (a deleted document
  back, a cancelled one still queued) or the tally is not;
- `missed`: the edit came too late (the large version had ended) or too early.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import services
from redis.asyncio import Redis

from rag_async.client.api import ApiError, RagClient
from rag_async.domain.events import TERMINAL_EVENT_TYPES, event_type_of
from rag_async.store.documents import DocumentRegistry
from rag_async.store.events import EventLog
from rag_async.store.keys import Keys

PARAGRAPHS = 20_000  # the large version: 1.4 MB of text, a few seconds of ingestion
OUTCOMES = ("one version", "mixed", "lost", "registry wrong", "missed")


def text_of(word: str, paragraphs: int) -> bytes:
    lines = [
        f"Paragraph {i} of the ledger records {word} shipment {i % 97} to harbour {i % 89}."
        for i in range(paragraphs)
    ]
    return ("# Ledger\n\n" + "\n\n".join(lines)).encode()


@dataclass
class Round:
    """One round's document and the client it runs through."""

    client: RagClient
    registry: DocumentRegistry
    n: int
    jobs: dict[str, str] = field(default_factory=dict)  # name -> job id
    sizes: dict[str, int] = field(default_factory=dict)  # name -> bytes
    document_id: str = ""
    made: list[str] = field(default_factory=list)  # every job the round made, shared

    @property
    def filename(self) -> str:
        return f"ledger{self.n}.md"

    async def upload(self, name: str, paragraphs: int) -> None:
        content = text_of(f"{name}{self.n}", paragraphs)
        accepted = await self.client.upload([(self.filename, content)])
        self.jobs[name], self.sizes[name] = accepted["job_id"], len(content)
        self.made.append(accepted["job_id"])
        self.document_id = accepted["document_id"]

    async def until_mid_way(self, name: str) -> bool:
        """Until the version's first batch is written; False if it ended first."""
        async for event in self.client.follow(self.jobs[name]):
            if event.type == "progress" and event.data["stage"] == "upserted":
                return bool(event.data["done"] < event.data["total"])
        return False

    async def delete(self) -> None:
        """Delete the document, and wait for the deletion to end."""
        deleting = await self.client.delete_document(self.document_id)
        self.made.append(deleting["job_id"])
        async for _ in self.client.follow(deleting["job_id"]):
            pass

    async def end(self, name: str) -> str:
        events = [event async for event in self.client.follow(self.jobs[name])]
        return events[-1].type

    async def searchable(self, name: str) -> bool:
        """Whether a chunk of this version answers a question for its word."""
        asked = await self.client.ask(f"{name}{self.n} shipment")
        async for event in self.client.follow(asked["job_id"]):
            if event.type == "sources":
                return any(
                    s["document_id"] == self.document_id and f"{name}{self.n}" in s["text"]
                    for s in event.data["sources"]
                )
        return False

    async def entry(self) -> dict[str, Any] | None:
        try:
            return await self.client.document(self.document_id)
        except ApiError as error:
            if error.status == 404:
                return None
            raise


async def judge(round_: Round, current: str | None, gone: list[str], tally: int) -> str:
    """The round's outcome, if `current` (or, None, no version) should be searchable, the
    versions `gone` not, and the owner's tally be `tally` bytes."""
    if any([await round_.searchable(name) for name in gone]):
        return "mixed"
    entry = await round_.entry()
    if current is None:
        if entry is not None:  # a deleted document is back in the registry
            return "registry wrong"
    elif not await round_.searchable(current):
        return "lost"
    elif entry is None or entry.get("version") != round_.jobs[current]:
        return "registry wrong"
    if await round_.registry.stored_bytes("") != tally:
        return "registry wrong"
    return "one version"


async def reupload(round_: Round) -> str:
    await round_.upload("old", PARAGRAPHS)
    if not await round_.until_mid_way("old"):
        return "missed"
    await round_.upload("new", 20)
    await round_.end("new")
    await round_.end("old")
    return await judge(round_, "new", ["old"], round_.sizes["new"])


async def delete(round_: Round) -> str:
    await round_.upload("old", PARAGRAPHS)
    if not await round_.until_mid_way("old"):
        return "missed"
    deleting = await round_.client.delete_document(round_.document_id)
    round_.made.append(deleting["job_id"])
    await round_.end("old")
    async for _ in round_.client.follow(deleting["job_id"]):
        pass
    return await judge(round_, None, ["old"], 0)


async def cancel_running(round_: Round) -> str:
    await round_.upload("new", 20)
    await round_.end("new")
    await round_.upload("old", PARAGRAPHS)
    if not await round_.until_mid_way("old"):
        return "missed"
    await round_.client.cancel(round_.jobs["old"])
    await round_.end("old")
    return await judge(round_, "new", ["old"], round_.sizes["new"])


async def cancel_queued(round_: Round) -> str:
    """The worker takes one document at a time here: a document queued behind a large one
    is cancelled before it starts."""
    blocker = Round(round_.client, round_.registry, 1000 + round_.n, made=round_.made)
    await blocker.upload("old", PARAGRAPHS)
    await round_.upload("new", 20)
    cancelled = await round_.client.cancel(round_.jobs["new"])
    await blocker.end("old")
    if cancelled["status"] != "cancelled":
        return "missed"
    entry = await round_.entry()
    tally = await round_.registry.stored_bytes("")
    await blocker.delete()
    if await round_.searchable("new"):
        return "mixed"
    if entry is not None and entry["status"] in ("queued", "ingesting"):
        return "registry wrong"
    return "one version" if tally == blocker.sizes["old"] else "registry wrong"


Scenario = Callable[[Round], Awaitable[str]]
# Each edit, and how many documents the worker takes at once: several, so that a document's
# jobs overlap, but one to keep a job queued.
SCENARIOS: dict[str, tuple[str, Scenario, int]] = {
    "reupload": ("re-upload during ingestion", reupload, 4),
    "delete": ("delete during ingestion", delete, 4),
    "cancel-running": ("cancel of a running ingestion", cancel_running, 4),
    "cancel-queued": ("cancel of a queued ingestion", cancel_queued, 1),
}


Ends = dict[str, tuple[str, list[str]]]  # job id -> its status and its log's final events


def run(name: str, rounds: int, logs: Path) -> tuple[Counter[str], Ends]:
    """The rounds' outcomes, and how every job they made ended."""
    at_once = str(SCENARIOS[name][2])
    env = {"RAG_WORKER_MAX_DOCUMENTS": at_once, "RAG_DEMO_CORPUS": "false"}
    with services(ttft=0.0, tokens=5, tps=0.0, workers=1, corpus=None, env=env, logs=logs) as svc:

        async def go() -> tuple[Counter[str], Ends]:
            outcomes: Counter[str] = Counter()
            made: list[str] = []
            redis = Redis.from_url(svc.valkey.url)
            registry = DocumentRegistry(redis, Keys(prefix=svc.prefix))
            try:
                async with RagClient(svc.api_url) as client:
                    for n in range(rounds):
                        round_ = Round(client, registry, n, made=made)
                        outcome = await SCENARIOS[name][1](round_)
                        outcomes[outcome] += 1
                        if round_.document_id and await round_.entry():
                            await round_.delete()
                    ends = await job_ends(client, redis, svc.prefix, made)
            finally:
                await redis.aclose()
            return outcomes, ends

        return asyncio.run(go())


async def job_ends(client: RagClient, redis: Redis, prefix: str, job_ids: list[str]) -> Ends:
    log = EventLog(redis, Keys(prefix), ttl=600)
    ends: Ends = {}
    for job_id in job_ids:
        types = [event_type_of(event.data) for event in await log.replay(job_id)]
        status = (await client.job(job_id))["status"]
        ends[job_id] = (status, [t for t in types if t in TERMINAL_EVENT_TYPES])
    return ends


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-s", "--scenario", action="append", choices=list(SCENARIOS))
    parser.add_argument("-n", "--rounds", type=int, default=5)
    parser.add_argument(
        "--logs", type=Path, default=Path(tempfile.gettempdir()) / "rag-document-versions"
    )
    args = parser.parse_args()
    chosen = args.scenario or list(SCENARIOS)
    print("| edit | rounds | " + " | ".join(OUTCOMES) + " |")
    print("|---|---:|" + "---:|" * len(OUTCOMES))
    broken = False
    for name in chosen:
        began = time.monotonic()
        outcomes, _ = run(name, args.rounds, args.logs / name)
        broken |= any(outcomes[o] for o in ("mixed", "lost", "registry wrong"))
        cells = " | ".join(str(outcomes[o]) for o in OUTCOMES)
        print(f"| {SCENARIOS[name][0]} | {args.rounds} | {cells} |", flush=True)
        print(f"== {name}: {time.monotonic() - began:.0f} s", file=sys.stderr, flush=True)
    if broken:
        sys.exit(1)


if __name__ == "__main__":
    main()
