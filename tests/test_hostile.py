"""Hostile documents against the real stack (Valkey, the app under uvicorn, a worker, embedded
Qdrant, and the worker's parse processes): each is refused with its own code on its first and
only try, nothing of it is indexed, questions go on being answered, and the worker goes on
ingesting."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import aclosing, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from rag_async.client.api import JobEvent
from rag_async.local.valkey import EmbeddedValkey
from rag_async.providers.parsing import parse
from rag_async.providers.parsing.limits import ParseLimits, TooDeep, TooManyPages
from tests.conftest import Stack, ingest, make_settings, running_stack
from tests.support.hostile import PAGE_TREE_BOMB, deflate_bomb, nested_html, page_tree_bomb
from tests.test_documents import make_pdf


@asynccontextmanager
async def hostile_stack(
    valkey: EmbeddedValkey, data_dir: Path, llm: Any, **limits: Any
) -> AsyncIterator[Stack]:
    settings = make_settings(
        valkey, data_dir, llm_base_url=llm.base_url, llm_api_key="test-key", **limits
    )
    async with running_stack(settings) as stack:
        yield stack


async def upload(stack: Stack, filename: str, content: bytes) -> tuple[str, str]:
    """The job id and document id of one uploaded file."""
    accepted = await stack.client.upload([(filename, content)])
    document = accepted["documents"][0]
    return document["job_id"], document["document_id"]


async def finish(stack: Stack, job_id: str) -> list[JobEvent]:
    return [event async for event in stack.client.follow(job_id)]


async def started(stack: Stack, job_id: str) -> None:
    """Once a worker has started the job."""
    async with aclosing(stack.client.follow(job_id)) as events:
        async for event in events:
            if event.type == "status" and event.data["status"] == "in_progress":
                return


async def answer(stack: Stack, query: str) -> list[dict[str, Any]]:
    """The sources of a question's answer, once it is done."""
    accepted = await stack.client.ask(query)
    events = await finish(stack, accepted["job_id"])
    assert events[-1].type == "done", events[-1]
    return next(event.data["sources"] for event in events if event.type == "sources")


async def assert_refused(stack: Stack, job_id: str, document_id: str, code: str) -> str:
    """The job failed with `code` on its first try, and nothing of the document is stored.
    Returns the error message."""
    events = await finish(stack, job_id)
    assert events[-1].type == "error" and events[-1].data["code"] == code, events[-1]
    view = await stack.client.job(job_id)
    assert view["status"] == "failed" and view["attempt"] == 1, view
    assert not [e for e in events if e.type == "status" and e.data.get("attempt", 1) > 1]
    assert stack.worker is not None
    assert await stack.worker.ctx["services"].retriever.count(document_id) == 0
    # The kind's failure hook runs just after the job's last event: give it a moment.
    for _ in range(100):
        document = await stack.client.document(document_id)
        if document["status"] not in ("queued", "ingesting"):
            break
        await asyncio.sleep(0.02)
    assert document["status"] == "failed" and document["error"] == view["error"], document
    message: str = view["error"]
    return message


async def assert_still_ingests(stack: Stack, word: str) -> None:
    """The worker, and a parse process of its pool, take the next file as if nothing happened."""
    job_id, _ = await upload(stack, f"{word}.md", f"# {word}\n\nThe {word} is fine.".encode())
    assert (await finish(stack, job_id))[-1].type == "done"
    assert (await answer(stack, word))[0]["title"] == word


async def test_a_page_tree_bomb_is_refused_by_its_page_count(
    valkey: EmbeddedValkey, tmp_path: Path, llm: Any
) -> None:
    # The shipped fixture is the generator's output: 16,384 pages from under 2 KB.
    bomb = PAGE_TREE_BOMB.read_bytes()
    assert bomb == page_tree_bomb() and len(bomb) < 4096
    async with hostile_stack(valkey, tmp_path, llm) as stack:  # the default limits
        await ingest(stack)
        job_id, document_id = await upload(stack, "bomb.pdf", bomb)
        sources, _ = await asyncio.gather(
            answer(stack, "How long should green tea brew?"),
            assert_refused(stack, job_id, document_id, "too_many_pages"),
        )
        assert sources and sources[0]["title"] == "Tea"
        view = await stack.client.job(job_id)
        assert view["error"] == "bomb.pdf: more than 5000 pages; the limit is 5000 (RAG_MAX_PAGES)"
        await assert_still_ingests(stack, "Aardvark")


async def test_deeply_nested_html_is_refused_while_a_question_is_answered(
    valkey: EmbeddedValkey, tmp_path: Path, llm: Any
) -> None:
    async with hostile_stack(valkey, tmp_path, llm) as stack:
        await ingest(stack)
        job_id, document_id = await upload(stack, "deep.html", nested_html(30_000))
        await started(stack, job_id)

        # Asked while the page is being parsed (its parser spends a second on the nesting
        # alone) in another process: answered, whichever of the two ends first on a busy
        # machine (which comes first is a matter of timing, not of the design).
        sources = await answer(stack, "How long should green tea brew?")
        assert sources and sources[0]["title"] == "Tea"

        message = await assert_refused(stack, job_id, document_id, "too_deep")
        assert message.startswith("deep.html: HTML nested deeper than 256")
        await assert_still_ingests(stack, "Aardvark")


async def test_a_parse_past_its_time_is_killed_and_the_next_file_gets_a_new_process(
    valkey: EmbeddedValkey, tmp_path: Path, llm: Any
) -> None:
    # A valid PDF of 1,500 pages takes most of a second to parse.
    long_pdf = make_pdf([f"Page {n} of the kettle manual, on limescale." for n in range(1500)])
    async with hostile_stack(valkey, tmp_path, llm, parse_timeout=0.2) as stack:
        assert stack.worker is not None
        pool = stack.worker.ctx["services"].parser
        await assert_still_ingests(stack, "Aardvark")
        assert pool.processes == 1

        job_id, document_id = await upload(stack, "manual.pdf", long_pdf)
        message = await assert_refused(stack, job_id, document_id, "parse_timeout")
        assert message == "manual.pdf: parsing took longer than 0.2 s (RAG_PARSE_TIMEOUT)"
        assert pool.processes == 0  # killed, not handed the next file

        await assert_still_ingests(stack, "Bandicoot")
        assert pool.processes == 1


async def test_a_decompression_bomb_is_refused_by_the_memory_limit(
    valkey: EmbeddedValkey, tmp_path: Path, llm: Any
) -> None:
    # 70 KB of PDF inflate to a 70 MB content stream: within pypdf's own limit of 75 MB a
    # stream, beyond the parse process's 128 MB with the copies it makes.
    bomb = deflate_bomb()
    async with hostile_stack(valkey, tmp_path, llm, parse_memory_mb=128) as stack:
        await ingest(stack)
        job_id, document_id = await upload(stack, "zip.pdf", bomb)
        sources, message = await asyncio.gather(
            answer(stack, "How long should green tea brew?"),
            assert_refused(stack, job_id, document_id, "parse_memory"),
        )
        assert sources and sources[0]["title"] == "Tea"
        assert message.startswith("zip.pdf: parsing needed more than 128 MB")
        await assert_still_ingests(stack, "Aardvark")


async def test_too_much_text_and_too_many_chunks_are_refused_before_anything_is_written(
    valkey: EmbeddedValkey, tmp_path: Path, llm: Any
) -> None:
    sentence = "The walrus naps on the ice floe near the harbour."
    limits = {"max_document_chars": 1000, "max_chunks": 3, "chunk_tokens": 20, "chunk_overlap": 4}
    async with hostile_stack(valkey, tmp_path, llm, **limits) as stack:
        # Under 1,000 characters, but more than three chunks of 20 tokens.
        chunky = f"# Walrus\n\n{' '.join([sentence] * 12)}".encode()
        job_id, document_id = await upload(stack, "walrus.md", chunky)
        message = await assert_refused(stack, job_id, document_id, "too_many_chunks")
        assert message.startswith("walrus.md: ") and "limit is 3" in message

        # A PDF is stopped at the page that passes the limit, the others never extracted.
        pages = [sentence * 4] * 50
        job_id, document_id = await upload(stack, "walrus.pdf", make_pdf(pages))
        message = await assert_refused(stack, job_id, document_id, "too_much_text")
        assert message == ("walrus.pdf: more than 1000 characters of text (RAG_MAX_DOCUMENT_CHARS)")
        job_id, document_id = await upload(stack, "walrus.txt", (sentence * 25).encode())
        await assert_refused(stack, job_id, document_id, "too_much_text")

        await assert_still_ingests(stack, "Aardvark")


def test_limits_apply_to_parse_itself() -> None:
    """Without the worker: the same limits, and the same codes, for any caller of parse()."""
    with pytest.raises(TooManyPages) as pages:
        parse("bomb.pdf", PAGE_TREE_BOMB.read_bytes(), limits=ParseLimits(max_pages=10))
    assert pages.value.code == "too_many_pages" and not pages.value.retryable
    with pytest.raises(TooDeep) as deep:
        parse("deep.html", nested_html(1000))
    assert deep.value.code == "too_deep" and not deep.value.retryable
