"""The chunk store's two embedded backends, qdrant-client's local mode and Qdrant Edge, held
to one set of adapter tests on disk; Edge's own guards; the format file; and a worker on Edge
that ingests and answers. (The server backend's adapter tests are test_qdrant_calls.py's.)"""

from __future__ import annotations

import json
import random
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from qdrant_client import models

from rag_async.config import Settings
from rag_async.domain.errors import ConfigurationError, ProviderError
from rag_async.local.demo_corpus import DEMO_QUESTION, demo_documents
from rag_async.local.valkey import EmbeddedValkey
from rag_async.providers.retrieval import (
    ChunkStore,
    LexicalEncoder,
    Retriever,
    chunk_text,
    open_store,
)
from rag_async.providers.retrieval.backend import FORMAT_FILE, store_folder
from rag_async.providers.retrieval.edge_store import (
    EdgeChunkStore,
    MalformedVector,
    check_sparse,
    edge_call,
)
from tests.conftest import ingest, make_settings, running_stack
from tests.support.processes import run_python
from tests.test_retrieval import HashingEmbedder

BACKENDS = ["local", "edge"]
QUERIES = [
    DEMO_QUESTION,
    "how do I read a file line by line",
    "list comprehension",
    "dictionary keys and values",
    "raise an exception",
    "virtual environment packages",
]


def _settings(data_dir: Path, backend: str) -> Settings:
    return Settings(_env_file=None, data_dir=data_dir, qdrant_url=None, store=backend)


async def _opened(data_dir: Path, backend: str, dense_dim: int | None = None) -> ChunkStore:
    store = await open_store(_settings(data_dir, backend))
    await store.ensure_collection(dense_dim)
    return store


@pytest.fixture(params=BACKENDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ChunkStore]:
    opened = await _opened(tmp_path, request.param)
    try:
        yield opened
    finally:
        await opened.close()


def _retriever(store: ChunkStore) -> Retriever:
    return Retriever(
        store, LexicalEncoder(), None, chunk_tokens=120, chunk_overlap=24, per_document=None
    )


async def _index(retriever: Retriever, documents: list[tuple[str, str, str]]) -> dict[str, int]:
    return {
        source: await retriever.index(source, title, source, text)
        for title, source, text in documents
    }


def _random_documents(count: int) -> list[tuple[str, str, str]]:
    rng = random.Random(11)
    words = [f"{a}{b}" for a in ("kettle", "teapot", "garden", "river") for b in "abcdefgh"]
    return [
        (f"Doc {n}", f"doc{n}.md", " ".join(rng.choices(words, k=rng.randint(8, 40))))
        for n in range(count)
    ]


QUERIES_RANDOM = ["kettlea teapotb", "gardenc riverd kettlee", "teapoth", "riverb gardenf"]


async def _rankings(
    retriever: Retriever, queries: list[str] = QUERIES
) -> list[list[tuple[str, int, float]]]:
    """Each query's results, chunks of equal scores in one order (a tie has none). Chunks
    tied with the last one are left out: which of them make the cut is the tie's choice."""
    rankings = []
    for query in queries:
        found = [
            (s.document_id, s.chunk, round(s.score, 4)) for s in await retriever.search(query, 10)
        ]
        if len(found) == 10:
            found = [r for r in found if r[2] > found[-1][2]]
        rankings.append(sorted(found, key=lambda r: (-r[2], r[0], r[1])))
    return rankings


# --- one set of adapter tests, both backends -----------------------------------------------


async def test_upsert_search_filter_count_holds_delete(store: ChunkStore) -> None:
    retriever = _retriever(store)
    red = await retriever.index("red", "Red", None, "The orchard grows cherries.", collection="r")
    green = await retriever.index("green", "Green", "g.md", "The orchard grows limes.")
    assert await store.count() == red + green == 2
    assert await store.count_document("red") == 1
    assert await store.holds_exactly("red", 1) and not await store.holds_exactly("red", 2)
    assert await store.holds_exactly("absent", 0)

    found = await retriever.search("orchard", 5, collection=None)
    assert {s.document_id for s in found} == {"red", "green"}
    assert [s.n for s in found] == [1, 2]
    only_red = await retriever.search("orchard", 5, collection="r")
    assert [(s.document_id, s.collection, s.title) for s in only_red] == [("red", "r", "Red")]
    default = await retriever.search("orchard", 5)
    assert [(s.document_id, s.source) for s in default] == [("green", "g.md")]
    assert await retriever.search("orchard", 5, collection="nowhere") == []

    await store.delete_document("red")
    assert await store.count() == 1 and await store.count_document("red") == 0
    assert await retriever.search("cherries", 5, collection=None) == []


async def test_reindex_overwrites_and_trims(store: ChunkStore) -> None:
    retriever = Retriever(store, LexicalEncoder(), None, chunk_tokens=20, chunk_overlap=0)
    text = "\n\n".join(f"Paragraph {i} is about topic{i}." for i in range(300))
    total = await retriever.index("big", "Big", None, text)
    assert total > 1 and await store.holds_exactly("big", total)
    shorter = await retriever.index("big", "Big", None, text[:200])
    assert await store.count() == shorter < total
    assert await store.holds_exactly("big", shorter)


async def test_versions_of_a_document_are_written_trimmed_and_deleted_apart(
    store: ChunkStore,
) -> None:
    retriever = Retriever(store, LexicalEncoder(), None, chunk_tokens=20, chunk_overlap=0)
    text = "\n\n".join(f"Paragraph {i} is about topic{i}." for i in range(40))
    old = await retriever.index("doc", "Doc", None, text, version="v1")
    new = await retriever.index("doc", "Doc", None, text[:200], version="v2")
    legacy = await retriever.index("doc", "Doc", None, "Kettles boil water.")  # no version
    assert 1 < new < old and legacy == 1
    # Side by side: a shorter version trims its own chunks only.
    assert await store.count_document("doc") == old + new + legacy
    assert await store.holds_exactly("doc", old, version="v1")
    assert await store.holds_exactly("doc", new, version="v2")
    assert await store.holds_exactly("doc", legacy)

    await store.delete_versions("doc", ["v1", ""])
    assert await store.count_document("doc") == new
    assert await store.holds_exactly("doc", new, version="v2")
    assert not await store.holds_exactly("doc", old, version="v1")
    assert await retriever.search("kettles", 5) == []
    await store.delete_versions("doc", [])  # nothing named: nothing removed
    assert await store.count_document("doc") == new
    await store.delete_document("doc")  # every version
    assert await store.count() == 0


async def test_rankings_after_deleting_a_fifth_equal_a_fresh_index(
    store: ChunkStore, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    # Deleted points must stop counting in the IDF: Edge keeps them in its segments. Distinct
    # random texts, so that no two chunks tie and the order is the scores' alone.
    documents = _random_documents(50)
    doomed = documents[::5]
    await _index(_retriever(store), documents)
    for _, source, _ in doomed:
        await store.delete_document(source)
    kept = [d for d in documents if d not in doomed]

    backend = request.node.callspec.params["store"]
    fresh = await _opened(tmp_path / "fresh", backend)
    try:
        await _index(_retriever(fresh), kept)
        assert await store.count() == await fresh.count()
        assert await _rankings(_retriever(store), QUERIES_RANDOM) == await _rankings(
            _retriever(fresh), QUERIES_RANDOM
        )
    finally:
        await fresh.close()


async def test_a_store_is_reopened_with_its_points(tmp_path: Path, backend: str) -> None:
    store = await _opened(tmp_path, backend)
    counts = await _index(_retriever(store), list(demo_documents()))
    before = await _rankings(_retriever(store))
    await store.close()

    again = await _opened(tmp_path, backend)
    try:
        assert await again.count() == sum(counts.values())
        assert await _rankings(_retriever(again)) == before
    finally:
        await again.close()


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def test_both_backends_rank_alike(tmp_path: Path) -> None:
    # Lexical and hybrid (RRF, k passed to Edge explicitly): the same chunks in the same
    # order, save where scores tie.
    rankings = []
    for backend in BACKENDS:
        for dense_dim in (None, 64):
            store = await _opened(tmp_path / backend, backend, dense_dim)
            try:
                embedder = HashingEmbedder() if dense_dim else None
                retriever = Retriever(
                    store,
                    LexicalEncoder(),
                    embedder,
                    chunk_tokens=120,
                    chunk_overlap=24,
                    per_document=None,
                )
                await _index(retriever, list(demo_documents()))
                rankings.append(await _rankings(retriever))
            finally:
                await store.close()
            shutil.rmtree(tmp_path / backend)
    local_lexical, local_hybrid, edge_lexical, edge_hybrid = rankings
    assert edge_lexical == local_lexical
    # A hybrid's fused scores follow each branch's ranks, and the dense branch has many ties
    # (hashed test vectors): a tie ordered otherwise there shifts a fused score here. The
    # same chunks, and the same first one.
    for edge_found, local_found in zip(edge_hybrid, local_hybrid, strict=True):
        assert edge_found[0] == local_found[0]
        assert {r[:2] for r in edge_found} == {r[:2] for r in local_found}
    assert local_hybrid != local_lexical


# --- the format file ------------------------------------------------------------------------


async def test_an_edge_folder_opened_for_local_mode_says_reingest(tmp_path: Path) -> None:
    store = await _opened(tmp_path, "edge")
    await store.close()

    with pytest.raises(ConfigurationError) as refused:
        await _opened(tmp_path, "local")

    message = refused.value.message
    assert "Re-ingest" in message and str(store_folder(_settings(tmp_path, "local"))) in message
    assert "RAG_STORE=edge" in message


async def test_an_unknown_format_version_says_reingest(tmp_path: Path, backend: str) -> None:
    store = await _opened(tmp_path, backend)
    await store.close()
    folder = store_folder(_settings(tmp_path, backend))
    (folder / FORMAT_FILE).write_text(json.dumps({"backend": backend, "format": 99}))

    with pytest.raises(ConfigurationError) as refused:
        await _opened(tmp_path, backend)

    assert "format 99" in refused.value.message and "Re-ingest" in refused.value.message
    assert "RAG_STORE" not in refused.value.message  # no backend here reads it


async def test_a_local_folder_from_before_format_files_still_opens(tmp_path: Path) -> None:
    store = await _opened(tmp_path, "local")
    await _index(_retriever(store), list(demo_documents())[:1])
    await store.close()
    folder = store_folder(_settings(tmp_path, "local"))
    (folder / FORMAT_FILE).unlink()

    again = await _opened(tmp_path, "local")
    try:
        assert await again.count() > 0
    finally:
        await again.close()
    assert json.loads((folder / FORMAT_FILE).read_text()) == {"backend": "local", "format": 1}


# --- a local-mode folder moves to Edge --------------------------------------------------------


async def _local_store_with_demo(
    data_dir: Path, dense_dim: int | None
) -> list[list[tuple[str, int, str, str, float]]]:
    """A local-mode store holding the demo corpus in two collections; its rankings."""
    store = await _opened(data_dir, "local", dense_dim)
    try:
        retriever = _hybrid_retriever(store, dense_dim)
        documents = list(demo_documents())
        for n, (title, source, text) in enumerate(documents):
            await retriever.index(source, title, source, text, collection=f"c{n % 2}")
        return await _rankings_in(retriever, ["c0", "c1", None], hybrid=bool(dense_dim))
    finally:
        await store.close()


def _hybrid_retriever(store: ChunkStore, dense_dim: int | None) -> Retriever:
    embedder = HashingEmbedder() if dense_dim else None
    return Retriever(
        store, LexicalEncoder(), embedder, chunk_tokens=120, chunk_overlap=24, per_document=None
    )


async def _rankings_in(
    retriever: Retriever, collections: list[str | None], *, hybrid: bool
) -> list[list[tuple[str, int, str, str, float]]]:
    """Every chunk each query finds (no cut-off, where ties would choose), with its payload
    and its score (a hybrid's fused score follows the order of ties: left out)."""
    found = []
    for collection in collections:
        for query in QUERIES:
            sources = await retriever.search(query, 1000, collection=collection)
            found.append(
                sorted(
                    (s.document_id, s.chunk, s.collection, s.title, 0.0 if hybrid else s.score)
                    for s in sources
                )
            )
    return found


def _same_rankings(
    after: list[list[tuple[str, int, str, str, float]]],
    before: list[list[tuple[str, int, str, str, float]]],
) -> bool:
    """The same chunks with the same payloads, and scores equal up to float rounding."""
    flat_after = [r for rs in after for r in rs]
    flat_before = [r for rs in before for r in rs]
    return (
        [len(rs) for rs in after] == [len(rs) for rs in before]
        and [r[:4] for r in flat_after] == [r[:4] for r in flat_before]
        and [r[4] for r in flat_after] == pytest.approx([r[4] for r in flat_before], rel=1e-5)
    )


@pytest.mark.parametrize("dense_dim", [None, 64])
async def test_a_local_mode_folder_is_migrated_to_edge_with_every_point(
    tmp_path: Path, dense_dim: int | None
) -> None:
    before = await _local_store_with_demo(tmp_path, dense_dim)
    folder = store_folder(_settings(tmp_path, "edge"))
    (folder / FORMAT_FILE).unlink()  # as written before format files: migrated all the same

    migrated = await _opened(tmp_path, "edge", dense_dim)
    try:
        retriever = _hybrid_retriever(migrated, dense_dim)
        after = await _rankings_in(retriever, ["c0", "c1", None], hybrid=bool(dense_dim))
        assert _same_rankings(after, before)  # per collection, with their payloads
    finally:
        await migrated.close()

    assert json.loads((folder / FORMAT_FILE).read_text()) == {"backend": "edge", "format": 1}
    [kept] = folder.parent.glob("qdrant-local-mode-*")
    assert (kept / "meta.json").exists()  # the old store is kept, untouched, until deleted
    again = await _opened(tmp_path, "edge", dense_dim)  # opened as Edge, not migrated twice
    await again.close()
    assert len(list(folder.parent.glob("qdrant-local-mode-*"))) == 1


async def test_a_migration_stopped_half_way_is_finished_or_started_over(tmp_path: Path) -> None:
    await _local_store_with_demo(tmp_path, None)
    folder = store_folder(_settings(tmp_path, "edge"))
    staging = folder.with_name("qdrant.migrating")
    staging.mkdir()
    (staging / "half-written").write_text("")  # a copy stopped before it was complete

    first = await _opened(tmp_path, "edge")  # starts the copy over
    chunks = await first.count()
    await first.close()
    assert chunks > 0 and not staging.exists()

    folder.rename(staging)  # stopped between the two renames: the copy waits, complete
    second = await _opened(tmp_path, "edge")
    try:
        assert await second.count() == chunks and not staging.exists()
    finally:
        await second.close()


# --- Edge's guards --------------------------------------------------------------------------

MALFORMED = [
    models.SparseVector.model_construct(indices=[1, 2], values=[1.0]),
    models.SparseVector(indices=[2, 1], values=[1.0, 1.0]),
    models.SparseVector(indices=[1, 1], values=[1.0, 1.0]),
    models.SparseVector(indices=[1], values=[float("nan")]),
    models.SparseVector(indices=[2**32], values=[1.0]),
]


@pytest.mark.parametrize("vector", MALFORMED)
async def test_a_malformed_sparse_vector_never_reaches_the_shard(
    tmp_path: Path, vector: models.SparseVector
) -> None:
    store = await _opened(tmp_path, "edge")
    try:
        retriever = _retriever(store)
        await retriever.index("ok", "Ok", None, "Kettles boil water.")
        chunk = chunk_text("Kettles boil water.", max_tokens=120, overlap=24)[0]
        with pytest.raises(MalformedVector):
            await store.upsert_chunks("bad", "Bad", None, [chunk], [vector], None)
        with pytest.raises(MalformedVector):
            await store.search(vector, None, 3)
        # The shard still answers, and the bad document was not written.
        assert await store.count() == 1
        assert [s.document_id for s in await retriever.search("kettle", 3)] == ["ok"]
    finally:
        await store.close()


def test_a_wellformed_vector_passes_the_check() -> None:
    check_sparse(LexicalEncoder().document("Exceptions are raised and handled."))
    check_sparse(models.SparseVector(indices=[], values=[]))


class FakePanic(BaseException):
    """Stands for pyo3's PanicException, a BaseException."""


def test_edge_failures_become_provider_errors() -> None:
    def fails() -> None:
        raise Exception("Service runtime error")

    def panics() -> None:
        raise FakePanic("index out of bounds")

    for call in (fails, panics):
        with pytest.raises(ProviderError) as error:
            edge_call(call)
        assert error.value.retryable  # like a server's 5xx: retried, counted by the breaker
    for stop in (KeyboardInterrupt, SystemExit):

        def stops(stop: type[BaseException] = stop) -> None:
            raise stop()

        with pytest.raises(stop):
            edge_call(stops)


async def test_an_engine_error_from_the_shard_is_a_provider_error(tmp_path: Path) -> None:
    store = await _opened(tmp_path, "edge")  # lexical only: no dense vector to search
    try:
        assert isinstance(store, EdgeChunkStore)
        query = LexicalEncoder().query("kettle")
        with pytest.raises(ProviderError, match="Qdrant Edge"):
            await store.search(query, [1.0, 0.0, 0.0], 3)
    finally:
        await store.close()


async def test_an_edge_shard_of_another_size_refuses_an_embedder(tmp_path: Path) -> None:
    store = await _opened(tmp_path, "edge", dense_dim=4)
    await store.close()
    with pytest.raises(ConfigurationError, match="RAG_COLLECTION"):
        await _opened(tmp_path, "edge", dense_dim=8)
    reopened = await _opened(tmp_path, "edge", dense_dim=4)
    await reopened.close()


# --- end to end -----------------------------------------------------------------------------


async def test_a_worker_on_edge_ingests_and_answers(valkey: EmbeddedValkey, tmp_path: Path) -> None:
    settings = make_settings(valkey, tmp_path, store="edge")
    async with running_stack(settings) as stack:
        assert stack.worker is not None
        assert isinstance(stack.worker.ctx["services"].store, EdgeChunkStore)
        await ingest(stack, "# Kettles\n\nDescale the kettle monthly with citric acid.", "Kettle")
        accepted = await stack.client.ask("How do I descale the kettle?")
        events = [event async for event in stack.client.follow(accepted["job_id"])]

    assert events[-1].type == "done", events[-1]
    sources = next(e.data["sources"] for e in events if e.type == "sources")
    assert sources and sources[0]["title"] == "Kettle" and "citric" in sources[0]["text"]
    folder = store_folder(settings)
    assert json.loads((folder / FORMAT_FILE).read_text()) == {"backend": "edge", "format": 1}


SECOND_PROCESS = """
import asyncio, sys
from pathlib import Path
from rag_async.config import Settings
from rag_async.domain.errors import ConfigurationError
from rag_async.providers.retrieval import open_store

async def main():
    settings = Settings(_env_file=None, data_dir=Path(sys.argv[1]), qdrant_url=None, store="edge")
    await (await open_store(settings)).ensure_collection(None)

try:
    asyncio.run(main())
except ConfigurationError as exc:
    print(exc.message)
"""


async def test_a_second_process_on_an_edge_shard_is_told_to_use_a_server(tmp_path: Path) -> None:
    store = await _opened(tmp_path, "edge")
    try:
        code, stdout, stderr = await run_python(SECOND_PROCESS, str(tmp_path))
    finally:
        await store.close()
    assert code == 0, stderr
    assert "another process holds the qdrant edge shard" in stdout.lower()
    assert "RAG_QDRANT_URL" in stdout


WITHOUT_EDGE = """
import asyncio, sys
sys.modules["qdrant_edge"] = None  # as on a machine qdrant-edge-py has no wheel for
from pathlib import Path
from rag_async.config import Settings
from rag_async.domain.errors import ConfigurationError
from rag_async.providers.retrieval import open_store

settings = Settings(_env_file=None, data_dir=Path(sys.argv[1]), qdrant_url=None)
try:
    asyncio.run(open_store(settings))
except ConfigurationError as error:
    print(error.message)
local = asyncio.run(open_store(settings.model_copy(update={"store": "local"})))
asyncio.run(local.close())
print("local mode opened")
"""


async def test_without_an_edge_build_the_default_store_says_how_to_go_on(tmp_path: Path) -> None:
    code, stdout, stderr = await run_python(WITHOUT_EDGE, str(tmp_path))
    assert code == 0, stderr
    assert "qdrant-edge-py has no build for this machine" in stdout
    assert "RAG_STORE=local" in stdout and "local mode opened" in stdout


KILLED_AFTER_INDEXING = """
import asyncio, os, signal, sys
from pathlib import Path
from rag_async.config import Settings
from rag_async.local.demo_corpus import demo_documents
from rag_async.providers.retrieval import Retriever, open_store

async def main():
    settings = Settings(_env_file=None, data_dir=Path(sys.argv[1]), qdrant_url=None)
    retriever = await Retriever.open(await open_store(settings), settings)
    chunks = 0
    for title, source, text in demo_documents():
        chunks += await retriever.index(source, title, source, text)
    print(chunks, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)  # before any later flush or a close

asyncio.run(main())
"""


async def test_edge_keeps_every_indexed_chunk_through_a_kill_between_flushes(
    tmp_path: Path,
) -> None:
    # Flushes are spaced out (edge_store.FLUSH_INTERVAL): what they skip is in the log.
    code, stdout, stderr = await run_python(KILLED_AFTER_INDEXING, str(tmp_path))
    assert code == -9, stderr
    store = await _opened(tmp_path, "edge")
    try:
        assert await store.count() == int(stdout) > 0
        assert len(await _retriever(store).search(DEMO_QUESTION, 4)) == 4
    finally:
        await store.close()
