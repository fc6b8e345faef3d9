"""What a job calls to search and to index. It knows nothing of arq or Redis."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field

import structlog
from qdrant_client import models

from rag_async.config import Settings
from rag_async.domain.errors import ConfigurationError
from rag_async.domain.filters import AttributeValue, Filter
from rag_async.domain.sources import Source, renumbered
from rag_async.providers.parsing.chunking import DEFAULT_MAX_CHARS, Chunk, Chunking, chunk_document
from rag_async.providers.parsing.limits import TooManyChunks
from rag_async.providers.retrieval.backend import fusion_of
from rag_async.providers.retrieval.embedders import EMBED_BATCH_SIZE, Embedder
from rag_async.providers.retrieval.lexical import LexicalEncoder
from rag_async.providers.retrieval.store import (
    DEFAULT_COLLECTION,
    INDEX_BATCH,
    ChunkStore,
    Fusion,
    citation_heading,
)

log = structlog.get_logger(__name__)

ProgressCallback = Callable[[str, int, int], Awaitable[None]]


def _reporter(on_progress: ProgressCallback | None) -> ProgressCallback:
    async def progress(stage: str, done: int, total: int) -> None:
        if on_progress is not None:
            await on_progress(stage, done, total)

    return progress


@dataclass(frozen=True, slots=True)
class _Target:
    """Where an indexed document's chunks go, and what they are cited by."""

    document_id: str
    title: str
    source: str | None
    collection: str
    version: str
    attributes: Mapping[str, AttributeValue] = field(default_factory=dict)


# Chunks of one document among the first results before the other documents' chunks come
# first: the answer's few sources (`top_k`) are not all one long page's neighbouring chunks.
PER_DOCUMENT = 2
# Candidates fetched per result asked for, to find other documents' chunks to promote.
DIVERSITY_DEPTH = 4

# Embedding a one-word text learns the embedder's dimension without a setting for it.
_DIMENSION_PROBE = "dimension"


class Retriever:
    """Chunks, encodes and stores documents; turns a question into numbered sources.

    Lexical (BM25) retrieval always runs; with an embedder the search is hybrid.
    """

    def __init__(
        self,
        store: ChunkStore,
        lexical: LexicalEncoder,
        embedder: Embedder | None,
        *,
        chunk_tokens: int,
        chunk_overlap: int,
        per_document: int | None = PER_DOCUMENT,
        max_chunks: int | None = None,
        chunk_max_chars: int = DEFAULT_MAX_CHARS,
        dense_optional: bool = False,
        score_threshold: float | None = None,
        fusion: Fusion | None = None,
    ) -> None:
        self._store = store
        self._fusion = fusion or Fusion()
        self._dense_optional = dense_optional
        self.score_threshold = score_threshold
        self._per_document = per_document
        self._lexical = lexical
        self._embedder = embedder
        self.chunking = Chunking(chunk_tokens, chunk_overlap, chunk_max_chars, max_chunks)

    @classmethod
    async def open(
        cls,
        store: ChunkStore,
        settings: Settings,
        *,
        lexical: LexicalEncoder | None = None,
        embedder: Embedder | None = None,
        per_document: int | None = PER_DOCUMENT,
        dense_optional: bool = False,
    ) -> Retriever:
        """The retriever `settings` describe over `store`, its collection created if
        missing. A `dense_optional` embedder (the offline default, not one the user asked
        for) is dropped, with a warning, for a collection created without dense vectors."""
        retriever = cls(
            store,
            lexical or LexicalEncoder(),
            embedder,
            chunk_tokens=settings.chunk_tokens,
            chunk_overlap=settings.chunk_overlap,
            per_document=per_document,
            max_chunks=settings.max_chunks,
            chunk_max_chars=settings.chunk_max_chars,
            dense_optional=dense_optional,
            score_threshold=settings.score_threshold,
            fusion=fusion_of(settings),
        )
        await retriever.ensure_collection()
        return retriever

    @property
    def name(self) -> str:
        if self._embedder is None:
            return self._lexical.name
        return f"hybrid: lexical-bm25 + {self._embedder.name} (RRF)"

    @property
    def best_score(self) -> float | None:
        """The highest score a search can give when it has one (hybrid: the fusion's), None
        when it has none (lexical: BM25's grows with the query). domain/relevance.py."""
        return self._fusion.best() if self._embedder is not None else None

    @property
    def signature(self) -> str:
        """What the chunks of a document depend on besides its content: the same content
        indexed under the same signature gives the same chunks and vectors."""
        chunking = self.chunking
        return (
            f"{self.name}; {self._lexical.signature}; "
            f"chunks {chunking.max_tokens}/{chunking.overlap} tokens, {chunking.max_chars} chars"
        )

    async def ensure_collection(self) -> None:
        """Create the collection if needed, sized for the embedder's vectors (if any)."""
        dense_dim = None
        if self._embedder is not None:
            dense_dim = len((await self._embedder.embed([_DIMENSION_PROBE]))[0])
        try:
            await self._store.ensure_collection(dense_dim)
        except ConfigurationError:
            if dense_dim is None or not self._dense_optional:
                raise
            # A store written before hybrid was the default: it keeps answering, lexically,
            # rather than stop the worker over a model nobody configured.
            log.warning(
                "retrieval.lexical_only",
                reason="the collection was created without dense vectors",
                hint="for hybrid retrieval, ingest the documents into a new collection "
                "(RAG_COLLECTION) or data folder (RAG_DATA_DIR); RAG_OFFLINE_EMBEDDER=off "
                "silences this",
            )
            self._embedder = None
            await self._store.ensure_collection(None)

    @property
    def embeds_queries(self) -> bool:
        """Whether a search first calls the embeddings model (a stage of its own)."""
        return self._embedder is not None

    async def embed_query(self, query: str) -> list[float] | None:
        if self._embedder is None:
            return None
        return (await self._embedder.embed([query]))[0]

    async def search(
        self,
        query: str,
        top_k: int,
        *,
        dense: list[float] | None = None,
        collection: str | None = DEFAULT_COLLECTION,
        filters: Filter | None = None,
        score_threshold: float | None = None,
    ) -> list[Source]:
        """The `top_k` best chunks of `collection` for `query` (None searches every
        collection) among those whose document's attributes match `filters`, at most
        `per_document` of one document ahead of the others (see `diversify`), none scoring
        under `score_threshold` (None: the retriever's own, RAG_SCORE_THRESHOLD); pass `dense`
        if `embed_query` already ran."""
        sparse = self._lexical.query(query)  # a handful of terms: cheap enough for the loop
        if dense is None:
            dense = await self.embed_query(query)
        # With a Qdrant server this is a network call; with Qdrant Edge, under a millisecond
        # on this loop. qdrant-client's local mode instead scores every point in pure Python,
        # on this event loop: fine for a corpus the size of the demo's, but linear in the
        # corpus and blocking every other job meanwhile (docs/benchmarks.md has both ends).
        # Its state is not safe to use from a thread pool either.
        if self._per_document is None:
            found = await self._store.search(
                sparse, dense, top_k, collection=collection, filters=filters
            )
        else:
            candidates = await self._store.search(
                sparse, dense, top_k * DIVERSITY_DEPTH, collection=collection, filters=filters
            )
            found = diversify(candidates, top_k, self._per_document)
        threshold = self.score_threshold if score_threshold is None else score_threshold
        return found if threshold is None else above(found, threshold)

    async def index(
        self,
        document_id: str,
        title: str,
        source: str | None,
        text: str,
        on_progress: ProgressCallback | None = None,
        *,
        collection: str = DEFAULT_COLLECTION,
        page_starts: Sequence[int] = (),
        version: str = "",
        attributes: Mapping[str, AttributeValue] | None = None,
    ) -> int:
        """Chunk `text` (`chunking`) and `index_chunks` them. `page_starts` (paged formats)
        are the offsets in `text` where each page begins, so each chunk records its page. A
        worker never calls this: its parse processes chunk the documents (jobs/ingest.py)."""
        # Chunking grows with the text: for a large document, long enough to stall every
        # other job on this loop (docs/benchmarks.md). Run it in a thread.
        chunks = await asyncio.to_thread(
            chunk_document, text, page_starts, self.chunking, name=source or title
        )
        return await self.index_chunks(
            document_id,
            title,
            source,
            chunks,
            on_progress,
            collection=collection,
            version=version,
            attributes=attributes,
        )

    async def index_chunks(
        self,
        document_id: str,
        title: str,
        source: str | None,
        chunks: Sequence[Chunk],
        on_progress: ProgressCallback | None = None,
        *,
        collection: str = DEFAULT_COLLECTION,
        version: str = "",
        attributes: Mapping[str, AttributeValue] | None = None,
    ) -> int:
        """Encode (and embed) a document's chunks and write them under `document_id` as
        `version`, each with the document's `attributes`, beside its other versions (an
        ingestion job deletes those once the registry has switched to this one:
        jobs/ingest.py); the unversioned "" replaces any earlier unversioned write in place.
        Returns the number of chunks. More than `max_chunks` raises `TooManyChunks`, and
        nothing is written: every chunk stored is scored on every question by embedded
        Qdrant."""
        progress = _reporter(on_progress)
        total, limit = len(chunks), self.chunking.max_chunks
        if limit is not None and total > limit:
            raise TooManyChunks(
                f"{source or title}: {total} chunks; the limit is {limit} per "
                "document (RAG_MAX_CHUNKS)"
            )
        await progress("chunked", total, total)
        # Encoded, embedded and written a batch at a time: a big document's contexts, sparse
        # and dense vectors and Qdrant points (several times the text's size together) never
        # exist all at once. Chunks of an earlier write of the same version (a retried job)
        # are overwritten in place, and its surplus chunks trimmed at the end.
        target = _Target(document_id, title, source, collection, version, attributes or {})
        for start in range(0, total, INDEX_BATCH):
            batch = list(chunks[start : start + INDEX_BATCH])
            await self._write_batch(target, batch, start, total, progress)
        await self._store.trim_document(document_id, keep=total, version=version)
        await self._store.flush()  # once per document: a flush costs tens of ms in Edge
        if total == 0:
            await progress("upserted", 0, 0)
        return total

    async def _write_batch(
        self,
        target: _Target,
        batch: list[Chunk],
        start: int,
        total: int,
        progress: ProgressCallback,
    ) -> None:
        """Encode, embed and upsert the chunks `start`.. of a document of `total` chunks."""
        contexts, sparse = await asyncio.to_thread(self._encode, target.title, batch)
        dense: list[list[float]] | None = None
        if self._embedder is not None:
            dense = []
            for offset in range(0, len(batch), EMBED_BATCH_SIZE):
                part = contexts[offset : offset + EMBED_BATCH_SIZE]
                dense.extend(await self._embedder.embed(part))
                await progress("embedded", start + len(dense), total)
        await self._store.upsert_chunks(
            target.document_id,
            target.title,
            target.source,
            batch,
            sparse,
            dense,
            collection=target.collection,
            pages=[chunk.page for chunk in batch] if batch and batch[0].page else None,
            version=target.version,
            attributes=target.attributes,
        )
        await progress("upserted", start + len(batch), total)

    async def delete(self, document_id: str) -> int:
        """Remove every chunk of a document, of every version; returns how many there were."""
        count = await self._store.count_document(document_id)
        await self._store.delete_document(document_id)
        return count

    async def delete_versions(self, document_id: str, versions: Sequence[str]) -> None:
        """Remove the chunks of these versions of a document, and only theirs."""
        await self._store.delete_versions(document_id, versions)

    async def count(self, document_id: str) -> int:
        """How many chunks of the document are stored."""
        return await self._store.count_document(document_id)

    async def holds(self, document_id: str, chunks: int, *, version: str = "") -> bool:
        """Whether exactly `chunks` chunks of the document's `version` are stored (cheaper
        than `count`)."""
        return await self._store.holds_exactly(document_id, chunks, version=version)

    def _encode(
        self, title: str, chunks: Sequence[Chunk]
    ) -> tuple[list[str], list[models.SparseVector]]:
        """Each chunk's indexed text (its context) and its lexical vector."""
        contexts = self._contexts(title, chunks)
        return contexts, [self._lexical.document(context) for context in contexts]

    def _contexts(self, title: str, chunks: Sequence[Chunk]) -> list[str]:
        # A chunk is indexed with the title and heading path it is cited by in front: the
        # middle of a section about exceptions often never says "exception", yet is about one.
        # The stored and cited text stays the chunk itself.
        return [f"{citation_heading(title, c.heading) or ''}\n\n{c.text}" for c in chunks]


def above(sources: Sequence[Source], threshold: float) -> list[Source]:
    """The sources scoring at least `threshold`, in their order, numbered 1..n again."""
    kept = [source for source in sources if source.score >= threshold]
    return renumbered(kept)


def diversify(sources: Sequence[Source], top_k: int, per_document: int) -> list[Source]:
    """The first `top_k` of `sources` (in rank order) once each document's chunks beyond its
    first `per_document` are moved after every other document's: other documents come
    forward, and a single document still fills all `top_k` when it is all there is.
    Renumbered 1..k."""
    seen: dict[str, int] = {}
    first: list[Source] = []
    rest: list[Source] = []
    for source in sources:
        seen[source.document_id] = seen.get(source.document_id, 0) + 1
        (first if seen[source.document_id] <= per_document else rest).append(source)
    ranked = [*first, *rest][:top_k]
    return renumbered(ranked)
