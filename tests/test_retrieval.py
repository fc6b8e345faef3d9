"""Retrieval against a real embedded Qdrant on disk, and the real openai SDK against a small
OpenAI-compatible server."""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import sys
import zlib
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import openai
import pytest
from qdrant_client import AsyncQdrantClient, models

from rag_async.config import Settings
from rag_async.demo_corpus import DEMO_QUESTION, demo_documents
from rag_async.errors import ConfigurationError, ProviderError
from rag_async.retrieval import (
    ChunkStore,
    LexicalEncoder,
    OpenAIEmbedder,
    Retriever,
    chunk_text,
    open_qdrant,
)

ROOT = Path(__file__).resolve().parents[1]


def _settings(data_dir: Path) -> Settings:
    return Settings(data_dir=data_dir, qdrant_url=None)


@pytest.fixture
async def qdrant(tmp_path: Path) -> AsyncIterator[AsyncQdrantClient]:
    client = await open_qdrant(_settings(tmp_path))
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture
async def store(qdrant: AsyncQdrantClient) -> ChunkStore:
    store = ChunkStore(qdrant, "chunks")
    await store.ensure_collection(None)
    return store


def _retriever(store: ChunkStore, embedder: HashingEmbedder | None = None) -> Retriever:
    return Retriever(store, LexicalEncoder(), embedder, chunk_tokens=120, chunk_overlap=24)


async def _index_demo_corpus(retriever: Retriever) -> dict[str, int]:
    counts = {}
    for title, source, text in demo_documents():
        counts[source] = await retriever.index(source, title, source, text)
    return counts


# --- chunking -------------------------------------------------------------------------------

SENTENCES = " ".join(f"Sentence {i} says that lists keep their order." for i in range(40))
MARKDOWN = f"""Some words before any heading.

# Tutorial

## Empty

## Lists

{SENTENCES}

A short closing paragraph about lists.

## Tuples

```python
# a comment in code, not a heading

point = (1, 2)
```

{"x " * 70}
"""


def test_chunks_are_exact_spans_within_the_size_limit() -> None:
    chunks = chunk_text(MARKDOWN, max_tokens=30, overlap=8)

    assert [c.index for c in chunks] == list(range(len(chunks)))
    for chunk in chunks:
        assert MARKDOWN[chunk.start : chunk.end] == chunk.text
        assert 0 < len(chunk.text.split()) <= 30
    assert chunk_text("  \n\n ", max_tokens=30, overlap=8) == []


def test_chunks_carry_heading_paths_and_never_straddle_a_heading() -> None:
    chunks = chunk_text(MARKDOWN, max_tokens=30, overlap=8)

    assert chunks[0].heading is None
    assert chunks[0].text == "Some words before any heading."
    # "## Empty" has no text of its own: it stays with the section that follows.
    assert chunks[1].text.startswith("# Tutorial\n\n## Empty\n\n## Lists\n\nSentence 0 ")
    assert {c.heading for c in chunks if "lists" in c.text} == {"Tutorial › Lists"}
    tuples = [c for c in chunks if c.heading == "Tutorial › Tuples"]
    assert tuples[0].text.startswith("## Tuples\n\n```python\n# a comment in code")
    assert "Tutorial › Tuples › a comment" not in {c.heading for c in chunks}
    assert all("lists" not in c.text for c in tuples)  # no overlap across the heading
    # A run of 70 words without a sentence end is cut to fit, not dropped.
    assert sum(c.text.count("x") for c in tuples) >= 70


def test_consecutive_chunks_of_a_section_overlap() -> None:
    chunks = chunk_text(MARKDOWN, max_tokens=30, overlap=8)
    lists = [c for c in chunks if c.heading == "Tutorial › Lists"]

    assert len(lists) >= 5
    for previous, current in itertools.pairwise(lists):
        assert previous.text.split()[-8:] == current.text.split()[:8]
        assert previous.start < current.start < previous.end < current.end


def test_a_long_paragraph_is_cut_at_sentence_ends() -> None:
    chunks = chunk_text(SENTENCES, max_tokens=30, overlap=0)

    assert len(chunks) > 1
    assert all(c.text.endswith("order.") for c in chunks)
    assert " ".join(c.text for c in chunks) == SENTENCES


# --- lexical encoding -----------------------------------------------------------------------


def test_lexical_terms_and_stable_ids() -> None:
    lexical = LexicalEncoder()

    assert lexical.terms("How do I handle Exceptions in Python?") == [
        "handl",
        "exception",
        "python",
    ]
    assert lexical.terms("handling handled handles") == ["handl"] * 3
    query = lexical.query("exceptions, EXCEPTION and handling")
    # CRC-32, not the per-process salted hash(): the same ids in every worker, every run.
    assert query.indices == sorted([2143915629, 3945152013])
    assert query.indices == sorted(zlib.crc32(t.encode()) for t in ("exception", "handl"))
    assert query.values == [1.0, 1.0]


def test_lexical_document_weights_saturate_and_normalise_length() -> None:
    lexical = LexicalEncoder()
    exception = zlib.crc32(b"exception")

    def weight(text: str) -> float:
        vector = lexical.document(text)
        return vector.values[vector.indices.index(exception)]

    once, thrice, many = (weight(" ".join(["exception"] * n)) for n in (1, 3, 50))
    assert once < thrice < many < lexical.k1 + 1  # more is better, but saturates
    padding = " ".join(f"word{i}" for i in range(200))
    assert weight(f"exception {padding}") < weight("exception word")  # long dilutes


# --- the store and the retriever on embedded Qdrant -----------------------------------------


async def test_demo_question_finds_the_errors_tutorial_first(store: ChunkStore) -> None:
    retriever = _retriever(store)
    progress: list[tuple[str, int, int]] = []

    async def on_progress(stage: str, done: int, total: int) -> None:
        progress.append((stage, done, total))

    title, source, text = next(d for d in demo_documents() if d[1] == "tutorial-errors.md")
    chunks = await retriever.index(source, title, source, text, on_progress)
    assert progress == [("chunked", chunks, chunks), ("upserted", chunks, chunks)]
    await _index_demo_corpus(retriever)

    sources = await retriever.search(DEMO_QUESTION, 4)

    assert retriever.name == "lexical-bm25 (offline)"
    assert [s.n for s in sources] == [1, 2, 3, 4]
    assert sources[0].document_id == "tutorial-errors.md"
    assert sources[0].title == "Errors and Exceptions"
    assert "exception" in sources[0].text.lower()
    assert sources[0].score >= sources[-1].score
    assert await retriever.search("the and of how", 4) == []  # stopwords match nothing


async def test_reindexing_adds_no_points_and_trims_a_shorter_version(store: ChunkStore) -> None:
    retriever = _retriever(store)
    counts = await _index_demo_corpus(retriever)
    total = await store.count()
    assert total == sum(counts.values())

    await _index_demo_corpus(retriever)  # a retried ingestion
    assert await store.count() == total

    title, source, text = next(d for d in demo_documents() if d[1] == "tutorial-errors.md")
    shorter = await retriever.index(source, title, source, text[: len(text) // 3])
    assert 0 < shorter < counts[source]
    assert await store.count() == total - counts[source] + shorter


async def test_delete_document_removes_its_points(store: ChunkStore) -> None:
    retriever = _retriever(store)
    counts = await _index_demo_corpus(retriever)

    await store.delete_document("tutorial-errors.md")

    assert await store.count() == sum(counts.values()) - counts["tutorial-errors.md"]
    sources = await retriever.search(DEMO_QUESTION, 10)
    assert sources and all(s.document_id != "tutorial-errors.md" for s in sources)


SECOND_PROCESS = """
import asyncio, json, sys
from pathlib import Path
from rag_async.config import Settings
from rag_async.errors import ConfigurationError
from rag_async.retrieval import open_qdrant

try:
    asyncio.run(open_qdrant(Settings(data_dir=Path(sys.argv[1]), qdrant_url=None)))
except ConfigurationError as exc:
    print(json.dumps({"message": exc.message, "hides_cause": exc.__suppress_context__}))
"""


async def test_a_second_process_is_told_to_use_a_qdrant_server(
    qdrant: AsyncQdrantClient, tmp_path: Path
) -> None:
    # The fixture holds the embedded Qdrant in this process; a worker in another process
    # must get a clear ConfigurationError, not the lock's RuntimeError.
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        SECOND_PROCESS,
        str(tmp_path),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=60)

    assert process.returncode == 0, stderr.decode()
    report = json.loads(stdout)
    assert "another process holds the embedded qdrant" in report["message"].lower()
    assert str(tmp_path / "qdrant") in report["message"]
    assert "RAG_QDRANT_URL" in report["message"]
    assert report["hides_cause"] is True


# --- hybrid search --------------------------------------------------------------------------


class HashingEmbedder:
    """A deterministic embedder for tests: each term adds one to a hashed dimension."""

    name = "hashing-64"

    def __init__(self, dim: int = 64) -> None:
        self.dim = dim
        self.calls = 0
        self._lexical = LexicalEncoder()

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        self.calls += 1
        vectors = []
        for text in texts:
            vector = [0.0] * self.dim
            for term in self._lexical.terms(text):
                vector[zlib.crc32(term.encode()) % self.dim] += 1.0
            norm = math.sqrt(sum(v * v for v in vector)) or 1.0
            vectors.append([v / norm for v in vector])
        return vectors


async def test_hybrid_search_fuses_lexical_and_dense(qdrant: AsyncQdrantClient) -> None:
    store = ChunkStore(qdrant, "hybrid")
    embedder = HashingEmbedder()
    retriever = _retriever(store, embedder)
    await retriever.ensure_collection()
    info = await qdrant.get_collection("hybrid")
    assert isinstance(info.config.params.vectors, dict)
    assert info.config.params.vectors["dense"].size == 64

    progress: list[tuple[str, int, int]] = []

    async def on_progress(stage: str, done: int, total: int) -> None:
        progress.append((stage, done, total))

    title, source, text = next(d for d in demo_documents() if d[1] == "tutorial-classes.md")
    chunks = await retriever.index(source, title, source, text, on_progress)
    embedded = [p for p in progress if p[0] == "embedded"]
    assert chunks > 64 and embedded[-1] == ("embedded", chunks, chunks) and len(embedded) > 1
    await _index_demo_corpus(retriever)

    sources = await retriever.search(DEMO_QUESTION, 4)

    assert retriever.name == "hybrid: lexical-bm25 + hashing-64 (RRF)"
    assert [s.n for s in sources] == [1, 2, 3, 4]
    assert sources[0].document_id == "tutorial-errors.md"
    # The dense branch alone answers too (a query of no lexical terms).
    [query_vector] = await embedder.embed([DEMO_QUESTION])
    empty = models.SparseVector(indices=[], values=[])
    dense_only = await store.search(empty, query_vector, 3)
    assert len(dense_only) == 3


async def test_a_collection_without_dense_vectors_refuses_an_embedder(store: ChunkStore) -> None:
    with pytest.raises(ConfigurationError, match="RAG_COLLECTION"):
        await store.ensure_collection(64)
    await store.ensure_collection(None)  # idempotent


# --- the OpenAI-compatible embedder ---------------------------------------------------------


class EmbeddingsServer:
    """A minimal OpenAI-compatible `/v1/embeddings` over real HTTP: answers each input with
    [len(text), position], lists the results in reverse order (the API allows any order), and
    answers with `fail_status` when it is set."""

    def __init__(self) -> None:
        self.batch_sizes: list[int] = []
        self.fail_status: int | None = None
        self._server: asyncio.Server | None = None

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/v1"

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.decode("latin-1").split("\r\n")[1:]:
                    name, _, value = line.partition(":")
                    if name.strip().lower() == "content-length":
                        length = int(value)
                request = json.loads(await reader.readexactly(length))
                status, body = self._answer(request)
                payload = json.dumps(body).encode()
                writer.write(
                    f"HTTP/1.1 {status} X\r\ncontent-type: application/json\r\n"
                    f"content-length: {len(payload)}\r\n\r\n".encode()
                    + payload
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    def _answer(self, request: dict[str, object]) -> tuple[int, dict[str, object]]:
        if self.fail_status is not None:
            return self.fail_status, {"error": {"message": "no", "type": "test"}}
        inputs = request["input"]
        assert isinstance(inputs, list)
        self.batch_sizes.append(len(inputs))
        data = [
            {"object": "embedding", "index": i, "embedding": [float(len(text)), float(i)]}
            for i, text in enumerate(inputs)
        ]
        return 200, {
            "object": "list",
            "data": data[::-1],
            "model": request["model"],
            "usage": {"prompt_tokens": 1, "total_tokens": 1},
        }


async def test_openai_embedder_batches_orders_and_wraps_errors() -> None:
    server = EmbeddingsServer()
    base_url = await server.start()
    client = openai.AsyncOpenAI(base_url=base_url, api_key="test", max_retries=0, timeout=5)
    try:
        embedder = OpenAIEmbedder(client, "test-embed")
        texts = ["a" * (i % 7) for i in range(130)]

        vectors = await embedder.embed(texts)

        assert embedder.name == "test-embed"
        assert server.batch_sizes == [64, 64, 2]
        assert [v[0] for v in vectors] == [float(len(t)) for t in texts]
        assert await embedder.embed([]) == []

        server.fail_status = 429
        with pytest.raises(ProviderError) as busy:
            await embedder.embed(["x"])
        assert busy.value.retryable is True
        server.fail_status = 400
        with pytest.raises(ProviderError) as bad:
            await embedder.embed(["x"])
        assert bad.value.retryable is False
    finally:
        await client.close()
        await server.stop()
