"""Retrieval against a real embedded Qdrant on disk, and the real openai SDK against a small
OpenAI-compatible server."""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import re
import zlib
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import openai
import pytest
import snowballstemmer
from qdrant_client import AsyncQdrantClient, models

from rag_async.config import Settings
from rag_async.domain.errors import ConfigurationError, ProviderError
from rag_async.local.demo_corpus import DEMO_QUESTION, demo_documents
from rag_async.providers.parsing.chunking import (
    MAX_HEADING_CHARS,
    Chunking,
    chunk_document,
    count_tokens,
    iter_chunks,
)
from rag_async.providers.parsing.limits import TooManyChunks
from rag_async.providers.retrieval import (
    ChunkStore,
    LexicalEncoder,
    OpenAIEmbedder,
    Retriever,
    chunk_text,
    open_qdrant,
    open_store,
)
from rag_async.providers.retrieval.stemming import english_stem
from rag_async.providers.retrieval.store import INDEX_BATCH
from tests.support.processes import run_python


def _settings(data_dir: Path) -> Settings:
    return Settings(data_dir=data_dir, qdrant_url=None)


@pytest.fixture
async def qdrant(tmp_path: Path) -> AsyncIterator[AsyncQdrantClient]:
    client = await open_qdrant(_settings(tmp_path))
    try:
        yield client
    finally:
        await client.close()


async def _default_store(data_dir: Path, collection: str) -> ChunkStore:
    """The store a worker opens with nothing configured (Qdrant Edge)."""
    return await open_store(
        Settings(_env_file=None, data_dir=data_dir, qdrant_url=None, collection=collection)
    )


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[ChunkStore]:
    store = await _default_store(tmp_path, "chunks")
    await store.ensure_collection(None)
    try:
        yield store
    finally:
        await store.close()


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
        assert 0 < count_tokens(chunk.text) <= 30
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
        assert previous.start < current.start < previous.end < current.end
        shared = previous.text[current.start - previous.start :]
        assert current.text.startswith(shared)
        assert 4 <= count_tokens(shared) <= 8  # whole words, up to the overlap


def test_a_long_paragraph_is_cut_at_sentence_ends() -> None:
    chunks = chunk_text(SENTENCES, max_tokens=30, overlap=0)

    assert len(chunks) > 1
    assert all(c.text.endswith("order.") for c in chunks)
    assert " ".join(c.text for c in chunks) == SENTENCES


def test_chunks_are_sized_in_tokens_not_words() -> None:
    prose = "Lists keep their order and tuples do too. " * 20
    code = "```\n" + "value = mapping.get(key, []) or [default]\n" * 20 + "```"

    prose_chunks = chunk_text(prose, max_tokens=60, overlap=0)
    code_chunks = chunk_text(code, max_tokens=60, overlap=0)

    # A line of code is 6 words but 15 tokens: code makes smaller chunks, in words.
    assert count_tokens("value = mapping.get(key, []) or [default]") == 15
    assert all(count_tokens(c.text) <= 60 for c in prose_chunks + code_chunks)
    assert max(len(c.text.split()) for c in code_chunks) < max(
        len(c.text.split()) for c in prose_chunks
    )
    # A word longer than a chunk is cut into pieces that fit, packed like any other words.
    url = "https://example.org/" + "a/" * 40
    chunks = chunk_text(f"See {url} now.", max_tokens=20, overlap=0)
    assert len(chunks) > 1 and all(count_tokens(c.text) <= 20 for c in chunks)
    assert "".join(c.text.replace(" ", "") for c in chunks) == f"See{url}now."


def test_no_text_makes_a_chunk_longer_than_the_cap() -> None:
    # One 5 MB token (a file without spaces), a run of punctuation (a token a character),
    # and two words far apart on one line.
    for text in ("a" * 5_000_000, "#" * 50_000, "a" + " " * 50_000 + "b"):
        chunks = chunk_text(text, max_tokens=200, overlap=40, max_chars=4000)
        assert chunks and max(len(c.text) for c in chunks) <= 4000
        assert max(count_tokens(c.text) for c in chunks) <= 200
        assert all(c.text == text[c.start : c.end] for c in chunks)
    # A heading's title is cut too: the heading path goes with every chunk of its section.
    (chunk, *_) = chunk_text("# " + "t" * 100_000 + "\n\nBody.", max_tokens=20, overlap=0)
    assert chunk.heading is not None and len(chunk.heading) <= MAX_HEADING_CHARS


def test_chunking_stops_at_the_chunk_past_the_limit_without_reading_on() -> None:
    """The chunks are cut as the text is read, and the one past `max_chunks` ends it: a
    hostile text costs the chunks it is allowed, not the chunks it would make."""
    read: list[str] = []

    def count(word: str) -> int:
        read.append(word)
        return count_tokens(word)

    text = "#\n" * 2_400_000  # 4.8 MB of bare headings
    chunking = Chunking(max_tokens=20, overlap=4, max_chunks=3)
    with pytest.raises(TooManyChunks) as refused:
        chunk_document(text, (), chunking, name="hashes.md", count=count)
    assert refused.value.code == "too_many_chunks" and "limit is 3" in refused.value.message
    # Four chunks of 20 tokens (16 new ones each after the first): about 70 words read of
    # 2.4 million, and nothing past the fourth chunk's text.
    assert len(read) < 100
    chunks = list(itertools.islice(iter_chunks(text, max_tokens=20, overlap=4), 4))
    assert chunks[-1].end < 200


# --- lexical encoding -----------------------------------------------------------------------


def test_lexical_terms_and_stable_ids() -> None:
    lexical = LexicalEncoder()

    assert lexical.terms("How do I handle Exceptions in Python?") == [
        "handl",
        "except",
        "python",
    ]
    assert lexical.terms("handling handled handles") == ["handl"] * 3
    query = lexical.query("exceptions, EXCEPTION and handling")
    # CRC-32, not the per-process salted hash(): the same ids in every worker, every run.
    assert query.indices == sorted([1065421233, 3945152013])
    assert query.indices == sorted(zlib.crc32(t.encode()) for t in ("except", "handl"))
    assert query.values == [1.0, 1.0]


def test_identifiers_match_by_their_parts_and_whole_and_numbers_stay_whole() -> None:
    lexical = LexicalEncoder()

    assert lexical.terms("ThreadPoolExecutor") == [
        "thread",
        "pool",
        "executor",
        "threadpoolexecutor",
    ]
    assert lexical.terms("functools.lru_cache()") == ["functool", "lru", "cach", "lru_cache"]
    assert lexical.terms("HTTPServer __init__ sha256") == [
        "http",
        "server",
        "httpserver",
        "init",
        "sha256",
    ]
    assert lexical.terms("New in Python 3.11: 0.1 + 0.2") == ["new", "python", "3.11", "0.1", "0.2"]
    # Prose about a thread pool meets the class; its exact name ranks it higher still.
    prose = set(lexical.query("a pool of threads").indices)
    assert prose <= set(lexical.document("class ThreadPoolExecutor").indices)


def test_stemming_conflates_derived_forms() -> None:
    for word, expected in [
        ("caresses", "caress"), ("ponies", "poni"), ("hopping", "hop"), ("relational", "relat"),
        ("hopefulness", "hope"), ("adjustment", "adjust"), ("generalizations", "general"),
    ]:  # fmt: skip
        assert english_stem(word) == expected, word
    lexical = LexicalEncoder()
    for forms in (("compress", "compression"), ("automatic", "automatically"),
                  ("deprecated", "deprecation"), ("connect", "connections")):  # fmt: skip
        assert lexical.terms(forms[0]) == lexical.terms(forms[1])


def test_the_c_stemmer_is_used_and_stems_as_the_python_one() -> None:
    from snowballstemmer.english_stemmer import EnglishStemmer

    # With PyStemmer installed, snowballstemmer hands out its C stemmer.
    assert type(snowballstemmer.stemmer("english")).__module__ == "Stemmer"
    python = EnglishStemmer()
    words = {w for _, _, text in demo_documents() for w in re.findall(r"[a-z']+", text.lower())}
    assert len(words) > 1000
    assert [english_stem(w) for w in sorted(words)] == [python.stemWord(w) for w in sorted(words)]


def test_lexical_document_weights_saturate_and_normalise_length() -> None:
    lexical = LexicalEncoder()
    exception = zlib.crc32(b"except")

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


async def test_one_long_document_does_not_fill_every_source(store: ChunkStore) -> None:
    retriever = _retriever(store)
    # A section a chunk: each chunk of it mentions kettles more often than the short page.
    long_text = "\n\n".join(
        f"# Part {n}\n\nKettles boil water, kettle after kettle." for n in range(8)
    )
    await retriever.index("long", "Kettles", None, long_text)
    await retriever.index("short", "Tea", None, "A kettle for tea.")

    sources = await retriever.search("kettle", 4)

    # The long page's chunks all score higher; its third and later come after the other page.
    assert [s.document_id for s in sources] == ["long", "long", "short", "long"]
    assert [s.n for s in sources] == [1, 2, 3, 4]
    # Alone, a document still fills every source; and the cap can be switched off.
    assert len(await retriever.search("boil", 4)) == 4
    uncapped = Retriever(
        store, LexicalEncoder(), None, chunk_tokens=120, chunk_overlap=24, per_document=None
    )
    assert [s.document_id for s in await uncapped.search("kettle", 4)] == ["long"] * 4


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


async def test_a_big_document_is_written_in_batches_and_trimmed(store: ChunkStore) -> None:
    retriever = Retriever(store, LexicalEncoder(), None, chunk_tokens=20, chunk_overlap=0)
    paragraphs = [f"Paragraph {i} is about topic{i}." for i in range(1200)]
    progress: list[tuple[str, int, int]] = []

    async def on_progress(stage: str, done: int, total: int) -> None:
        progress.append((stage, done, total))

    total = await retriever.index("big", "Big", None, "\n\n".join(paragraphs), on_progress)

    assert total > INDEX_BATCH and await store.count() == total
    upserted = [p for p in progress if p[0] == "upserted"]
    assert upserted[0] == ("upserted", INDEX_BATCH, total) and upserted[-1] == (
        "upserted",
        total,
        total,
    )
    assert (await retriever.search("topic1199", 1))[0].chunk == total - 1
    # A shorter version: the tail of the old one is trimmed once the new one is written.
    shorter = await retriever.index("big", "Big", None, "\n\n".join(paragraphs[:40]))
    assert await store.count() == shorter < total
    assert await retriever.search("topic1199", 1) == []


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
from rag_async.domain.errors import ConfigurationError
from rag_async.providers.retrieval import open_qdrant

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
    code, stdout, stderr = await run_python(SECOND_PROCESS, str(tmp_path))

    assert code == 0, stderr
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


@pytest.fixture
async def hybrid_store(tmp_path: Path) -> AsyncIterator[ChunkStore]:
    store = await _default_store(tmp_path, "hybrid")
    try:
        yield store
    finally:
        await store.close()


async def test_hybrid_search_fuses_lexical_and_dense(hybrid_store: ChunkStore) -> None:
    store = hybrid_store
    embedder = HashingEmbedder()
    retriever = _retriever(store, embedder)
    await retriever.ensure_collection()

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
