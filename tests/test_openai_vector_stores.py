"""OpenAI's Files and Vector Stores APIs, spoken to by the official `openai` SDK only: files
uploaded, listed, read and deleted; vector stores whose files are ingested by the real
worker (`upload_and_poll`, `create_and_poll`, batches) into a collection the native API sees
too; a static chunking honoured; keys that cannot see each other's; the storage quota; and
bad input answered with OpenAI's error shape. Against the real app, worker and Valkey."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from redis.asyncio import Redis

from rag_async.local.valkey import EmbeddedValkey
from tests.conftest import SAMPLE_DOCUMENT, Stack, keyed_settings, make_settings, running_stack

ALICE, BOB = "alice-secret-0123456789", "bob-secret-0123456789ab"
# Long enough to make many chunks of 100 tokens and few of the default 200.
LONG_TEXT = "\n\n".join(
    f"## Part {n}\n\n" + " ".join(f"Green tea note {n}.{i} steeps gently." for i in range(30))
    for n in range(6)
)


def sdk(stack: Stack, key: str = "unused") -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{stack.base_url}/v1", api_key=key, max_retries=0)


@pytest.fixture
async def client(stack: Stack) -> AsyncIterator[openai.AsyncOpenAI]:
    async with sdk(stack) as client:
        yield client


def named(name: str, text: str) -> tuple[str, io.BytesIO]:
    return (name, io.BytesIO(text.encode()))


async def test_a_file_is_uploaded_listed_read_and_deleted(client: openai.AsyncOpenAI) -> None:
    created = await client.files.create(file=named("tea.md", SAMPLE_DOCUMENT), purpose="assistants")
    assert created.id.startswith("file-") and created.object == "file"
    assert created.bytes == len(SAMPLE_DOCUMENT.encode()) and created.filename == "tea.md"
    assert created.purpose == "assistants" and created.expires_at is None
    other = await client.files.create(file=named("notes.txt", "Oolong."), purpose="user_data")

    listed = [f.id async for f in client.files.list()]
    assert listed == [other.id, created.id]  # newest first
    ascending = await client.files.list(order="asc", limit=1)
    assert [f.id for f in ascending.data] == [created.id] and ascending.has_more
    only = await client.files.list(purpose="user_data")
    assert [f.id for f in only.data] == [other.id]

    assert (await client.files.retrieve(created.id)).filename == "tea.md"
    content = await client.files.content(created.id)
    assert content.read() == SAMPLE_DOCUMENT.encode()

    deleted = await client.files.delete(created.id)
    assert deleted.deleted and deleted.id == created.id
    with pytest.raises(openai.NotFoundError) as gone:
        await client.files.retrieve(created.id)
    assert gone.value.code == "file_not_found"
    assert [f.id async for f in client.files.list()] == [other.id]


async def test_a_vector_store_file_is_ingested_by_a_worker_into_its_collection(
    stack: Stack, client: openai.AsyncOpenAI
) -> None:
    store = await client.vector_stores.create(name="Tea", metadata={"team": "kitchen"})
    assert store.id.startswith("vs_") and store.file_counts.total == 0
    assert store.metadata == {"team": "kitchen"} and store.status == "completed"

    attached = await client.vector_stores.files.upload_and_poll(
        vector_store_id=store.id,
        file=named("tea.md", SAMPLE_DOCUMENT),
        attributes={"topic": "tea", "year": 2024, "draft": False},
    )
    assert attached.status == "completed", attached.last_error
    assert attached.usage_bytes == len(SAMPLE_DOCUMENT.encode())
    assert attached.attributes == {"topic": "tea", "year": 2024, "draft": False}
    assert attached.vector_store_id == store.id and attached.last_error is None

    again = await client.vector_stores.retrieve(store.id)
    assert again.file_counts.completed == 1 and again.file_counts.total == 1
    assert again.usage_bytes == attached.usage_bytes and again.status == "completed"
    # The same document, natively: the store is the collection named by its id.
    documents = await stack.client.documents()
    (document,) = [d for d in documents if d["collection"] == store.id]
    assert document["status"] == "indexed" and document["source"] == attached.id
    assert document["title"] == "tea.md" and document["chunks"] >= 1
    asked = await stack.client.ask("How long do I brew green tea?", collection=store.id)
    await stack.client.answer(asked["job_id"])
    sources = (await stack.client.job(asked["job_id"]))["sources"]
    assert sources, "the store's chunks are found by a question in its collection"
    assert {s["source"] for s in sources} == {attached.id}
    # The file's attributes are its document's, carried into its chunks for `filters`.
    assert document["attributes"] == {"topic": "tea", "year": 2024, "draft": False}
    wrong = {"type": "eq", "key": "topic", "value": "coffee"}
    asked = await stack.client.ask("How long?", collection=store.id, filters=wrong)
    await stack.client.answer(asked["job_id"])
    assert (await stack.client.job(asked["job_id"]))["sources"] == []

    files = await client.vector_stores.files.list(vector_store_id=store.id, filter="completed")
    assert [f.id for f in files.data] == [attached.id]
    none = await client.vector_stores.files.list(vector_store_id=store.id, filter="failed")
    assert none.data == []
    relabelled = await client.vector_stores.files.update(
        attached.id, vector_store_id=store.id, attributes={"topic": "green tea"}
    )
    assert relabelled.attributes == {"topic": "green tea"}
    again_file = await client.vector_stores.files.retrieve(attached.id, vector_store_id=store.id)
    assert again_file.attributes == {"topic": "green tea"} and again_file.status == "completed"
    updated = await client.vector_stores.update(store.id, name="Teas")
    assert updated.name == "Teas" and updated.metadata == {"team": "kitchen"}
    assert [s.id async for s in client.vector_stores.list()] == [store.id]


async def test_a_static_chunking_strategy_is_honoured_per_document(
    stack: Stack, client: openai.AsyncOpenAI
) -> None:
    store = await client.vector_stores.create(name="chunks")
    file = await client.files.create(file=named("long.md", LONG_TEXT), purpose="assistants")
    default = await client.vector_stores.files.create_and_poll(
        vector_store_id=store.id, file_id=file.id
    )
    assert default.chunking_strategy.static.max_chunk_size_tokens == 200  # type: ignore[union-attr]
    small_store = await client.vector_stores.create(name="small chunks")
    small = await client.vector_stores.files.create_and_poll(
        vector_store_id=small_store.id,
        file_id=file.id,
        chunking_strategy={
            "type": "static",
            "static": {"max_chunk_size_tokens": 100, "chunk_overlap_tokens": 0},
        },
    )
    assert small.status == "completed", small.last_error
    assert small.chunking_strategy.static.max_chunk_size_tokens == 100  # type: ignore[union-attr]
    chunks = {d["collection"]: d["chunks"] for d in await stack.client.documents()}
    assert chunks[small_store.id] > chunks[store.id]


async def test_a_file_batch_is_ingested_and_a_broken_file_fails_with_its_reason(
    client: openai.AsyncOpenAI,
) -> None:
    store = await client.vector_stores.create(name="batch")
    good = await client.files.create(file=named("tea.md", SAMPLE_DOCUMENT), purpose="assistants")
    broken = await client.files.create(
        file=named("broken.pdf", "%PDF-1.4 not really a pdf"), purpose="assistants"
    )
    batch = await client.vector_stores.file_batches.create_and_poll(
        vector_store_id=store.id, file_ids=[good.id, broken.id]
    )
    assert batch.id.startswith("vsfb_") and batch.status == "completed"
    assert batch.file_counts.completed == 1 and batch.file_counts.failed == 1
    assert batch.file_counts.total == 2
    files = await client.vector_stores.file_batches.list_files(
        batch_id=batch.id, vector_store_id=store.id
    )
    statuses = {f.id: f for f in files.data}
    assert statuses[good.id].status == "completed"
    failed = statuses[broken.id]
    assert failed.status == "failed" and failed.last_error is not None
    assert failed.last_error.code == "invalid_file" and "broken.pdf" in failed.last_error.message


async def test_deleting_a_store_file_removes_its_document_but_keeps_the_file(
    stack: Stack, client: openai.AsyncOpenAI
) -> None:
    store = await client.vector_stores.create(name="delete")
    attached = await client.vector_stores.files.upload_and_poll(
        vector_store_id=store.id, file=named("tea.md", SAMPLE_DOCUMENT)
    )
    deleted = await client.vector_stores.files.delete(attached.id, vector_store_id=store.id)
    assert deleted.deleted and deleted.object == "vector_store.file.deleted"
    assert (await client.files.retrieve(attached.id)).id == attached.id
    assert (await client.vector_stores.retrieve(store.id)).file_counts.total == 0
    for _ in range(500):
        documents = await stack.client.documents()
        if not [d for d in documents if d["collection"] == store.id]:
            break
        await asyncio.sleep(0.02)
    else:
        raise AssertionError("the document was not removed")
    gone = await client.vector_stores.delete(store.id)
    assert gone.deleted and gone.object == "vector_store.deleted"
    with pytest.raises(openai.NotFoundError):
        await client.vector_stores.retrieve(store.id)


async def test_a_cancelled_batch_stops_the_files_not_yet_ingested(
    settings: Any, tmp_path: Path
) -> None:
    # No worker: every ingestion waits in its queue, so the cancel finds them all there.
    async with running_stack(settings, with_worker=False) as stack, sdk(stack) as client:
        store = await client.vector_stores.create(name="cancel")
        file = await client.files.create(
            file=named("tea.md", SAMPLE_DOCUMENT), purpose="assistants"
        )
        batch = await client.vector_stores.file_batches.create(
            vector_store_id=store.id, file_ids=[file.id]
        )
        assert batch.status == "in_progress" and batch.file_counts.in_progress == 1
        cancelled = await client.vector_stores.file_batches.cancel(
            batch.id, vector_store_id=store.id
        )
        assert cancelled.status == "cancelled" and cancelled.file_counts.cancelled == 1
        one = await client.vector_stores.files.retrieve(file.id, vector_store_id=store.id)
        assert one.status == "cancelled"


async def test_another_key_sees_none_of_a_keys_files_or_stores(
    valkey: EmbeddedValkey, tmp_path: Path, llm: Any
) -> None:
    settings = keyed_settings(valkey, tmp_path, llm, users={"alice": ALICE, "bob": BOB}, admins={})
    async with running_stack(settings) as stack, sdk(stack, ALICE) as alice, sdk(stack, BOB) as bob:
        file = await alice.files.create(file=named("tea.md", SAMPLE_DOCUMENT), purpose="assistants")
        store = await alice.vector_stores.create(name="alice's", file_ids=[file.id])
        for call in (
            bob.files.retrieve(file.id),
            bob.files.content(file.id),
            bob.files.delete(file.id),
            bob.vector_stores.retrieve(store.id),
            bob.vector_stores.delete(store.id),
            bob.vector_stores.files.retrieve(file.id, vector_store_id=store.id),
            bob.vector_stores.files.create(vector_store_id=store.id, file_id=file.id),
        ):
            with pytest.raises(openai.NotFoundError) as refused:
                await call
            assert refused.value.type == "not_found_error"
        assert (await bob.files.list()).data == [] and (await bob.vector_stores.list()).data == []
        # Bob cannot ingest Alice's file into a store of his own either.
        his = await bob.vector_stores.create(name="bob's")
        with pytest.raises(openai.NotFoundError):
            await bob.vector_stores.files.create(vector_store_id=his.id, file_id=file.id)
        mine = await alice.vector_stores.files.poll(file.id, vector_store_id=store.id)
        assert mine.status == "completed"


async def test_files_count_in_the_keys_storage_quota(
    valkey: EmbeddedValkey, tmp_path: Path, llm: Any
) -> None:
    settings = keyed_settings(
        valkey, tmp_path, llm, users={"alice": ALICE}, admins={}, max_stored_bytes_per_key=1500
    )
    text = "Green tea steeps for two minutes. " * 30  # about 1,000 bytes
    async with running_stack(settings) as stack, sdk(stack, ALICE) as alice:
        first = await alice.files.create(file=named("a.md", text), purpose="assistants")
        with pytest.raises(openai.APIStatusError) as refused:
            await alice.files.create(file=named("b.md", text), purpose="assistants")
        assert refused.value.status_code == 413 and refused.value.code == "quota_exceeded"
        # A document is held to the same quota, files counted.
        async with httpx.AsyncClient(base_url=stack.base_url) as http:
            native = await http.post(
                "/documents",
                json={"text": text, "title": "c"},
                headers={"authorization": f"Bearer {ALICE}"},
            )
        assert native.status_code == 413 and native.json()["error"]["code"] == "quota_exceeded"
        # Attaching the file stores it again (its chunks): the quota says so.
        store = await alice.vector_stores.create(name="full")
        with pytest.raises(openai.APIStatusError) as attach_refused:
            await alice.vector_stores.files.create(vector_store_id=store.id, file_id=first.id)
        assert attach_refused.value.status_code == 413
        await alice.files.delete(first.id)
        await alice.files.create(file=named("b.md", text), purpose="assistants")


async def test_a_nearly_full_valkey_refuses_new_files_and_stores_and_keeps_no_bytes(
    tmp_path: Path, llm: Any
) -> None:
    server = EmbeddedValkey(tmp_path / "valkey", appendonly=False, maxmemory="64mb")
    server.start()
    try:
        settings = make_settings(server, tmp_path / "data")
        async with (
            running_stack(settings, with_worker=False) as stack,
            sdk(stack) as client,
            Redis.from_url(server.url) as redis,
        ):
            kept = await client.files.create(file=named("a.md", "Tea."), purpose="assistants")
            used = int((await redis.info("memory"))["used_memory"])
            # Within its limit (writes work), but past the line that keeps a reserve free.
            await redis.config_set("maxmemory", used + used // 10)
            with pytest.raises(openai.APIStatusError) as full:
                await client.files.create(file=named("b.md", "Tea."), purpose="assistants")
            assert full.value.status_code == 507 and full.value.code == "insufficient_storage"
            with pytest.raises(openai.APIStatusError) as no_store:
                await client.vector_stores.create(name="full")
            assert no_store.value.status_code == 507
            assert [p.name for p in (tmp_path / "data" / "files").iterdir()] == [kept.id]
            await redis.config_set("maxmemory", "64mb")
            await client.files.create(file=named("b.md", "Tea."), purpose="assistants")
    finally:
        server.stop()


async def test_bad_input_gets_openai_shaped_errors(
    stack: Stack, client: openai.AsyncOpenAI
) -> None:
    with pytest.raises(openai.BadRequestError) as purpose:
        await client.files.create(file=named("tea.md", "Tea."), purpose="fine-tune")
    assert purpose.value.code == "unsupported_purpose"
    assert purpose.value.type == "invalid_request_error"
    with pytest.raises(openai.BadRequestError) as expiring:
        await client.files.create(
            file=named("tea.md", "Tea."),
            purpose="assistants",
            expires_after={"anchor": "created_at", "seconds": 3600},
        )
    assert expiring.value.code == "expiry_unsupported"
    too_big = "x" * (stack.settings.max_document_bytes + 1)
    with pytest.raises(openai.APIStatusError) as big:
        await client.files.create(file=named("big.txt", too_big), purpose="assistants")
    assert big.value.status_code == 413
    with pytest.raises(openai.APIStatusError) as kind:
        await client.files.create(file=named("tea.exe", "MZ"), purpose="assistants")
    assert kind.value.status_code == 415
    with pytest.raises(openai.NotFoundError):
        await client.vector_stores.create(name="x", file_ids=["file-000000000000000000000000"])
    assert (await client.vector_stores.list()).data == [], "a refused create leaves no store"
    with pytest.raises(openai.NotFoundError):
        await client.vector_stores.retrieve("vs_nothing")

    store = await client.vector_stores.create(name="bad input")
    file = await client.files.create(file=named("tea.md", SAMPLE_DOCUMENT), purpose="assistants")
    malformed: list[Any] = [
        {"type": "static"},
        {"type": "static", "static": {"max_chunk_size_tokens": 50, "chunk_overlap_tokens": 0}},
        {"type": "static", "static": {"max_chunk_size_tokens": 400, "chunk_overlap_tokens": 300}},
        {"type": "sometimes"},
    ]
    for strategy in malformed:
        with pytest.raises(openai.UnprocessableEntityError) as invalid:
            await client.vector_stores.files.create(
                vector_store_id=store.id, file_id=file.id, chunking_strategy=strategy
            )
        assert invalid.value.type == "invalid_request_error"
    beyond = {
        "type": "static",
        "static": {"max_chunk_size_tokens": 4000, "chunk_overlap_tokens": 0},
    }
    with pytest.raises(openai.BadRequestError) as unhonoured:
        await client.vector_stores.files.create(
            vector_store_id=store.id,
            file_id=file.id,
            chunking_strategy=beyond,  # type: ignore[arg-type]
        )
    assert unhonoured.value.code == "chunking_unsupported"
    with pytest.raises(openai.BadRequestError):
        await client.vector_stores.create(expires_after={"anchor": "last_active_at", "days": 1})
    with pytest.raises(openai.UnprocessableEntityError):
        await client.vector_stores.files.create(
            vector_store_id=store.id,
            file_id=file.id,
            attributes={"k": {"nested": 1}},  # type: ignore[dict-item]
        )
    with pytest.raises(openai.UnprocessableEntityError):
        await client.vector_stores.search(store.id, query="tea", max_num_results=51)
    assert (await client.vector_stores.search(store.id, query="tea")).data == []
    assert (await client.vector_stores.retrieve(store.id)).file_counts.total == 0
