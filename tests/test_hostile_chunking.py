"""Hostile text is chunked in the parse process, never in the worker: megabytes of "#" lines
sent as JSON or as a file fail `too_many_chunks` while the worker's memory stays where it was
and questions go on being answered; one 5 MB word becomes chunks no longer than the cap.
Against the real API under uvicorn, a real worker process (its memory read from /proc) with
its parse processes, Valkey and embedded Qdrant."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from rag_async.client.api import RagClient
from rag_async.local.valkey import EmbeddedValkey
from tests.conftest import (
    SAMPLE_DOCUMENT,
    cli_env,
    make_settings,
    rag_async_command,
    running_api,
    running_stack,
)
from tests.support.documents import add_document
from tests.support.processes import started

# Lowered from the default so that the test's parse stops within seconds on a loaded machine:
# the worker's memory is what it measures, and the old worker chunked the whole text first.
MAX_CHUNKS = 1000
# What the worker may grow by while two hostile texts are refused: the bytes of one upload in
# flight, and the replies of its parse process, not the chunks of the text.
RSS_GROWTH_BOUND = 64 * 1024 * 1024


def peak_rss(pid: int) -> int:
    """The process's peak resident memory (VmHWM), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmHWM for process {pid}")


async def refused_code(client: RagClient, job_id: str) -> str:
    events = [event async for event in client.follow(job_id)]
    assert events[-1].type == "error", events[-1]
    code: str = events[-1].data["code"]
    return code


async def answered(client: RagClient) -> list[dict[str, Any]]:
    """The sources of a question's answer, once it is done."""
    accepted = await client.ask("How long should green tea brew?")
    events = [event async for event in client.follow(accepted["job_id"])]
    assert events[-1].type == "done", events[-1]
    sources: list[dict[str, Any]] = next(e.data["sources"] for e in events if e.type == "sources")
    return sources


@pytest.mark.timeout(240)
async def test_hostile_text_is_chunked_outside_the_worker_for_json_and_files(
    valkey: EmbeddedValkey, tmp_path: Path, llm: Any
) -> None:
    settings = make_settings(
        valkey, tmp_path, llm_base_url=llm.base_url, llm_api_key="test-key", max_chunks=MAX_CHUNKS
    )
    env = cli_env(settings, RAG_MAX_CHUNKS=str(MAX_CHUNKS))
    json_text = "#\n" * 1_600_000  # a 4.8 MB JSON body ("#\\n" is three bytes escaped)
    file_text = ("#\n" * 2_400_000).encode()  # a 4.8 MB file
    async with running_api(settings) as base_url, RagClient(base_url) as client:
        with started("worker", rag_async_command("worker"), env, tmp_path) as worker:
            await worker.async_wait_for("worker ready")
            accepted = await add_document(client, SAMPLE_DOCUMENT, title="Tea", source="Tea.md")
            assert (await client.answer(accepted["job_id"])).final is not None
            assert (await answered(client))[0]["title"] == "Tea"
            before = peak_rss(worker.pid)

            accepted = await add_document(client, json_text, title="Hashes", source="hashes.md")
            code, sources = await asyncio.gather(
                refused_code(client, accepted["job_id"]), answered(client)
            )
            assert code == "too_many_chunks" and sources[0]["title"] == "Tea"
            uploaded = (await client.upload([("hashes.md", file_text)]))["documents"][0]
            code, sources = await asyncio.gather(
                refused_code(client, uploaded["job_id"]), answered(client)
            )
            assert code == "too_many_chunks" and sources[0]["title"] == "Tea"

            growth = peak_rss(worker.pid) - before
            assert growth < RSS_GROWTH_BOUND, f"the worker grew by {growth / 2**20:.0f} MB"


async def test_a_five_megabyte_word_becomes_chunks_no_longer_than_the_cap(
    valkey: EmbeddedValkey, tmp_path: Path, llm: Any
) -> None:
    settings = make_settings(valkey, tmp_path, llm_base_url=llm.base_url, llm_api_key="test-key")
    word = "kettle" * 800_000 + "x"  # 4.8 MB, no space: one token
    async with running_stack(settings) as stack:
        assert stack.worker is not None
        uploaded = (await stack.client.upload([("word.txt", word.encode())]))["documents"][0]
        events = [event async for event in stack.client.follow(uploaded["job_id"])]
        assert events[-1].type == "done", events[-1]
        # Every chunk is a full piece of the cap's length, but the last.
        cap = settings.chunk_max_chars
        assert (await stack.client.job(uploaded["job_id"]))["chunks"] == -(-len(word) // cap)
        retriever = stack.worker.ctx["services"].retriever
        sources = await retriever.search(word[:cap], 1, collection=None)
        assert [len(source.text) for source in sources] == [cap]
