"""A document has one current version (issue 18, bug 4): a re-upload, a delete, a cancel or a
failure during an ingestion leaves exactly one version searchable, the registry telling the
same, and the key's stored bytes counting that version only.

The real stack (Valkey, the app under uvicorn, a worker, Qdrant Edge) with dense embeddings
from the OpenAI-compatible test server, which holds an ingestion mid-way: its first batch of
chunks written, the embedding of a later one waiting (`ServerConfig.hold_word`) until the
test releases it.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from rag_async.domain.document import DocumentStatus
from rag_async.local.valkey import EmbeddedValkey
from rag_async.providers.retrieval.store import INDEX_BATCH
from rag_async.store.documents import DocumentRegistry
from rag_async.store.keys import Keys
from tests.conftest import Stack, make_settings, running_stack
from tests.support.documents import add_document
from tests.support.openai_server import OpenAIApp

HOLD = "zzholdword"
SOURCE = "orchard.md"


@pytest.fixture
async def stack(valkey: EmbeddedValkey, tmp_path: Path, llm: OpenAIApp) -> AsyncIterator[Stack]:
    """The stack with embeddings from the test server and small chunks (a paragraph each)."""
    settings = make_settings(
        valkey,
        tmp_path,
        llm_base_url=llm.base_url,
        llm_api_key="test-key",
        embed_base_url=llm.base_url,
        embed_api_key="test-key",
        embed_model="test-embedding",
        chunk_tokens=20,
        chunk_overlap=4,
    )
    llm.config.hold_word, llm.config.release_status = HOLD, None
    llm.config.release = asyncio.Event()
    llm.stats.held_embeddings = 0
    async with running_stack(settings) as running:
        try:
            yield running
        finally:  # never leave a job waiting on the server the other tests share
            llm.config.hold_word = None
            llm.config.release.set()


def paragraphs(fruit: str, count: int, *, held: int = 0) -> str:
    """`count` paragraphs about `fruit`, a chunk each; the last `held` say `HOLD` too."""
    lines = [
        f"Row {i} of the orchard grows {fruit}, picked by hand every autumn and kept cool"
        + (f" {HOLD}." if i >= count - held else ".")
        for i in range(count)
    ]
    return "# Orchard\n\n" + "\n\n".join(lines)


# Two batches of chunks: the first written before the hold, the second held.
HELD_TEXT = paragraphs("kumquats", INDEX_BATCH + 40, held=20)


async def add(stack: Stack, text: str) -> dict[str, Any]:
    return await add_document(stack.client, text, title="Orchard", source=SOURCE)


async def last_event(stack: Stack, job_id: str) -> Any:
    return [event async for event in stack.client.follow(job_id)][-1]


def services(stack: Stack) -> Any:
    assert stack.worker is not None
    return stack.worker.ctx["services"]


async def held_mid_way(stack: Stack, llm: OpenAIApp, document_id: str, before: int = 0) -> None:
    """Until the ingestion of `HELD_TEXT` has written its first batch (beside the `before`
    chunks of the document's current version) and waits in its second."""
    for _ in range(600):
        count = await services(stack).retriever.count(document_id)
        if llm.stats.held_embeddings and count > before:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the ingestion never reached its held batch")


async def mentions(stack: Stack, fruit: str) -> int:
    """How many of the best chunks for `fruit` say it."""
    sources = await services(stack).retriever.search(f"{fruit} orchard", 20, collection=None)
    return sum(fruit in source.text for source in sources)


async def stored_bytes(stack: Stack) -> int:
    registry: DocumentRegistry = services(stack).registry
    return await registry.stored_bytes("")


async def test_a_reupload_during_ingestion_leaves_only_the_new_version(
    stack: Stack, llm: OpenAIApp
) -> None:
    first = await add(stack, HELD_TEXT)
    document_id = first["document_id"]
    await held_mid_way(stack, llm, document_id)

    second_text = paragraphs("quinces", 5)
    second = await add(stack, second_text)
    assert second["document_id"] == document_id
    done = await last_event(stack, second["job_id"])
    assert done.type == "done", done
    llm.config.release.set()  # the first version goes on, and finds itself superseded
    ended = await last_event(stack, first["job_id"])

    assert await services(stack).retriever.count(document_id) == 5
    assert await mentions(stack, "kumquats") == 0 and await mentions(stack, "quinces") == 5
    shown = await stack.client.document(document_id)
    assert shown["status"] == "indexed" and shown["chunks"] == done.data["chunks"] == 5
    assert shown["job_id"] == shown.get("version") == second["job_id"]
    assert await stored_bytes(stack) == shown["size"] == len(second_text.encode())
    assert ended.type == "cancelled" and "superseded" in ended.data["message"], ended


async def test_a_delete_during_ingestion_is_not_undone(stack: Stack, llm: OpenAIApp) -> None:
    accepted = await add(stack, HELD_TEXT)
    document_id = accepted["document_id"]
    await held_mid_way(stack, llm, document_id)

    deleting = await stack.client.delete_document(document_id)
    assert (await last_event(stack, deleting["job_id"])).type == "done"
    llm.config.release.set()
    ended = await last_event(stack, accepted["job_id"])

    assert await services(stack).retriever.count(document_id) == 0
    assert await mentions(stack, "kumquats") == 0
    assert document_id not in {d["document_id"] for d in await stack.client.documents()}
    assert await services(stack).registry.get(document_id) is None
    assert await stored_bytes(stack) == 0
    assert ended.type == "cancelled" and "superseded" in ended.data["message"], ended


async def test_a_cancelled_ingestion_leaves_the_previous_version(
    stack: Stack, llm: OpenAIApp
) -> None:
    first_text = paragraphs("quinces", 3)
    first = await add(stack, first_text)
    assert (await last_event(stack, first["job_id"])).type == "done"
    second = await add(stack, HELD_TEXT)
    document_id = second["document_id"]
    await held_mid_way(stack, llm, document_id, before=3)

    assert (await stack.client.cancel(second["job_id"]))["status"] == "cancelling"
    assert (await last_event(stack, second["job_id"])).type == "cancelled"

    assert await services(stack).retriever.count(document_id) == 3
    assert await mentions(stack, "kumquats") == 0 and await mentions(stack, "quinces") == 3
    shown = await stack.client.document(document_id)
    assert await stored_bytes(stack) == shown["size"] == len(first_text.encode())
    assert shown["chunks"] == 3 and shown.get("version") == first["job_id"]
    assert shown["status"] == "indexed" and shown["job_id"] == second["job_id"]
    assert shown["error"] == "cancelled on request"


async def test_a_failed_first_ingestion_leaves_nothing_searchable(
    stack: Stack, llm: OpenAIApp
) -> None:
    llm.config.release_status = 400  # the held batch's embedding fails, for good
    accepted = await add(stack, HELD_TEXT)
    document_id = accepted["document_id"]
    await held_mid_way(stack, llm, document_id)

    llm.config.release.set()
    ended = await last_event(stack, accepted["job_id"])
    assert ended.type == "error" and "400" in ended.data["message"], ended

    assert await services(stack).retriever.count(document_id) == 0
    assert await mentions(stack, "kumquats") == 0
    assert await stored_bytes(stack) == 0
    shown = await stack.client.document(document_id)
    assert shown["status"] == "failed" and "400" in shown["error"]
    assert shown.get("version") is None and shown["chunks"] is None


async def test_a_version_ended_before_it_ran_drops_its_bytes(valkey: EmbeddedValkey) -> None:
    """The registry's side of cancelling a queued ingestion (bug 5): the failure hook's one
    call leaves the document `cancelled`, counting the current version's bytes only."""
    from redis.asyncio import Redis

    redis = Redis.from_url(valkey.url)
    registry = DocumentRegistry(redis, Keys(prefix=f"t{secrets.token_hex(4)}:"))
    try:
        await registry.accept("d", "job1", {"status": "queued", "owner": "k"}, size=100)
        assert await registry.stored_bytes("k") == 100
        await registry.version_ended("d", "job1", DocumentStatus.CANCELLED, "cancelled")
        record = await registry.get("d")
        assert record is not None and record.status == DocumentStatus.CANCELLED
        assert await registry.stored_bytes("k") == 0

        await registry.accept("d", "job2", {"status": "queued", "owner": "k"}, size=70)
        assert await registry.begin_version("d", "job2")
        assert await registry.switch_version("d", "job2", {"chunks": 2, "size": 70}) == []
        await registry.accept("d", "job3", {"status": "queued", "owner": "k"}, size=500)
        assert await registry.stored_bytes("k") == 500
        # An older job's end says nothing of the document; the owner's end restores the tally.
        assert not await registry.version_ended("d", "job2", DocumentStatus.FAILED, "late")
        await registry.version_ended("d", "job3", DocumentStatus.CANCELLED, "cancelled")
        assert await registry.stored_bytes("k") == 70
        record = await registry.get("d")
        assert record is not None and record.version == "job2" and record.chunks == 2
        assert record.status == DocumentStatus.INDEXED and record.error == "cancelled"
    finally:
        await redis.aclose()


async def test_an_upload_refused_after_its_acceptance_gives_the_document_back(
    valkey: EmbeddedValkey,
) -> None:
    """The API makes a job the owner before queuing it; if the queue refuses it, `withdraw`
    puts back the owner, status and counted bytes of before (or no entry at all)."""
    from redis.asyncio import Redis

    redis = Redis.from_url(valkey.url)
    registry = DocumentRegistry(redis, Keys(prefix=f"t{secrets.token_hex(4)}:"))
    queued = {"status": "queued", "owner": "k"}
    try:
        fresh = await registry.accept("new", "job0", queued, size=10)
        await registry.withdraw("new", "job0", fresh)
        assert await registry.get("new") is None and await registry.stored_bytes("k") == 0

        await registry.accept("d", "job1", queued, size=100)
        assert await registry.begin_version("d", "job1")
        refused = await registry.accept("d", "job2", queued, size=300)
        assert await registry.stored_bytes("k") == 300
        assert not await registry.owns("d", "job1")
        await registry.withdraw("d", "job2", refused)
        record = await registry.get("d")
        assert record is not None and record.job_id == "job1"
        assert record.status == DocumentStatus.INGESTING and record.versions == {"job1"}
        assert await registry.stored_bytes("k") == 100
        # A job that lost the document can neither switch it nor remove it.
        await registry.accept("d", "job3", {"status": "deleting"})
        assert await registry.switch_version("d", "job1", {"chunks": 1, "size": 100}) is None
        assert not await registry.remove("d", "job1")
        assert await registry.begin_deletion("d", "job3") == ["job1"]
        assert await registry.remove("d", "job3") and await registry.get("d") is None
        assert await registry.stored_bytes("k") == 0
    finally:
        await redis.aclose()


async def test_a_cancelled_queued_ingestion_leaves_no_bytes_and_no_queued_document(
    valkey: EmbeddedValkey, tmp_path: Path, llm: OpenAIApp
) -> None:
    """Bug 5, end to end: no worker runs, so the ingestion is cancelled while queued."""
    from redis.asyncio import Redis

    settings = make_settings(valkey, tmp_path, llm_base_url=llm.base_url)
    async with running_stack(settings, with_worker=False) as stack:
        accepted = await add(stack, paragraphs("quinces", 3))
        assert (await stack.client.cancel(accepted["job_id"]))["status"] == "cancelled"
        shown = await stack.client.document(accepted["document_id"])
    redis = Redis.from_url(valkey.url)
    try:
        registry = DocumentRegistry(redis, Keys(prefix=settings.key_prefix))
        assert await registry.stored_bytes("") == 0
    finally:
        await redis.aclose()
    assert shown["status"] == "cancelled" and shown["version"] is None, shown


async def test_an_upload_the_queue_refuses_leaves_the_document_to_its_job(
    valkey: EmbeddedValkey, tmp_path: Path, llm: OpenAIApp
) -> None:
    """The API makes a job the document's owner before queuing it: when the queue refuses
    it (the key's unfinished jobs), the document is given back to the job before it."""
    from tests.test_auth import ALICE, as_, keyed_settings

    settings = keyed_settings(valkey, tmp_path, llm, max_unfinished_jobs_per_key=1)
    body = {"text": paragraphs("quinces", 3), "title": "Orchard", "source": SOURCE}
    async with running_stack(settings, with_worker=False) as stack, as_(stack, ALICE) as alice:
        first = await alice.post("/documents", json=body)
        assert first.status_code == 202, first.text
        again = await alice.post("/documents", json=body | {"text": paragraphs("limes", 4)})
        assert again.status_code == 429, again.text
        shown = (await alice.get(f"/documents/{first.json()['document_id']}")).json()
    assert shown["job_id"] == first.json()["job_id"] and shown["status"] == "queued", shown
    assert shown["size"] == len(body["text"].encode())
