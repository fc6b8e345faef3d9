"""The store of chunks, as retrieval sees it: one protocol, two backends.

`qdrant_store.QdrantChunkStore` talks to a Qdrant server through qdrant-client, or runs
qdrant-client's local mode on disk; `edge_store.EdgeChunkStore` runs Qdrant Edge (Qdrant's
engine, in this process). `backend.open_store` picks one from the settings.

A point is one chunk. It carries a sparse vector "lexical" (BM25 weights; Qdrant applies the
IDF) and, when an embedder is configured, a dense vector "dense". Point ids are derived from
the document id, its version and the chunk index, so indexing the same version again
overwrites instead of duplicating: an ingestion job retried after a crash is harmless.

A version is the id of the ingestion job that wrote it (`version` in the payload): a new
version is written beside the current one and the old one deleted once the registry has
switched to the new (domain/document.py). The empty version is a document written without
one (by a tool, a benchmark, or before versions existed): its points have no `version`.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

from qdrant_client import models

from rag_async.domain.filters import AttributeValue, Filter
from rag_async.domain.sources import Source
from rag_async.providers.parsing.chunking import HEADING_SEPARATOR, Chunk
from rag_async.providers.retrieval.payload_filters import attribute_payload, payload_attributes

LEXICAL_VECTOR = "lexical"
DENSE_VECTOR = "dense"
# Chunks encoded and written at a time: bounds both one request to a server and the memory a
# big document's vectors and points take in the worker.
INDEX_BATCH = 256
# Each branch of a hybrid search hands this many candidates per result to the fusion, so a
# chunk ranked well by one branch only still gets its chance.
PREFETCH_FACTOR = 4

# The reciprocal-rank-fusion constant of Qdrant's server and of qdrant-client's local mode,
# given to every backend: Edge has no default, and hybrid results are the same everywhere
# only with the same one.
RRF_K = 2

# The collection of documents ingested without one.
DEFAULT_COLLECTION = "default"

_POINT_NAMESPACE = uuid.UUID("6f1f7a8e-43b1-5c0e-9d1a-2b7c3f0d5e41")


@dataclass(frozen=True, slots=True)
class Fusion:
    """How a hybrid search merges its lexical and dense candidate lists: Qdrant's weighted
    reciprocal rank fusion, where a chunk at rank r (from 0) of a list of weight w scores
    1 / ((r + 1) / w + k - 1), summed over the lists."""

    lexical_weight: float = 1.0
    dense_weight: float = 1.0
    k: int = RRF_K

    def weights(self, with_lexical: bool) -> list[float]:
        """The weights of the prefetches in the order every backend sends them: dense first,
        then lexical unless the query was only stopwords."""
        return [self.dense_weight, self.lexical_weight] if with_lexical else [self.dense_weight]

    def best(self) -> float:
        """The highest fused score: a chunk ranked first by both lists (domain/relevance.py
        scales scores by it)."""
        return sum(1 / (1 / w + self.k - 1) for w in self.weights(True) if w > 0)


class ChunkStore(Protocol):
    """One collection of chunks: create it, write and delete documents, search."""

    async def ensure_collection(self, dense_dim: int | None) -> None:
        """Create the collection if missing; check that an existing one fits `dense_dim`."""

    async def upsert_chunks(
        self,
        document_id: str,
        title: str,
        source: str | None,
        chunks: Sequence[Chunk],
        sparse: Sequence[models.SparseVector],
        dense: Sequence[list[float]] | None,
        *,
        collection: str = DEFAULT_COLLECTION,
        pages: Sequence[int | None] | None = None,
        version: str = "",
        attributes: Mapping[str, AttributeValue] | None = None,
    ) -> None:
        """Write chunks of a document's `version` (a batch of them: see `INDEX_BATCH`),
        overwriting the chunks of the same index. `pages` is each chunk's page, for paged
        formats; `attributes` the document's, which a search's `filters` compare."""

    async def trim_document(self, document_id: str, *, keep: int, version: str = "") -> None:
        """Drop the chunks of `version` numbered `keep` and beyond: what is left of a longer
        earlier write of the same version once the new one is written."""

    async def flush(self) -> None:
        """Write the writes so far out to the store's own files: called once a document is
        written, not per batch. A no-op where every write already is, and spaced out where
        each write is safe in a log already (Edge)."""

    async def holds_exactly(self, document_id: str, chunks: int, *, version: str = "") -> bool:
        """Whether the stored chunks of the document's `version` are exactly 0..chunks-1."""

    async def delete_document(self, document_id: str) -> None:
        """Remove every chunk of the document, of every version (durably, and out of the IDF
        statistics)."""

    async def delete_versions(self, document_id: str, versions: Sequence[str]) -> None:
        """Remove every chunk of these versions of the document ("": its unversioned chunks),
        and nothing of its other versions."""

    async def count_document(self, document_id: str) -> int:
        """How many chunks of `document_id` the collection holds."""

    async def search(
        self,
        sparse: models.SparseVector,
        dense: list[float] | None,
        limit: int,
        *,
        collection: str | None = None,
        filters: Filter | None = None,
    ) -> list[Source]:
        """The best `limit` chunks of `collection` (all of them when None) whose document's
        attributes match `filters` (payload_filters.py), numbered 1..k in rank order; hybrid
        (RRF of a lexical and a dense list) with a dense vector."""

    async def count(self) -> int:
        """How many chunks the collection holds."""

    async def close(self) -> None:
        """Release the store's files or connections."""


def point_id(document_id: str, chunk_index: int, version: str = "") -> str:
    """The same id for the same chunk of the same version of a document, in every process
    and run (an unversioned chunk keeps the id it had before versions existed)."""
    name = (
        f"{document_id}\x00{version}\x00{chunk_index}"
        if version
        else f"{document_id}\x00{chunk_index}"
    )
    return str(uuid.uuid5(_POINT_NAMESPACE, name))


class ChunkPoint(NamedTuple):
    """One chunk as every backend stores it: its id, its vectors and its payload."""

    id: str
    sparse: models.SparseVector
    dense: list[float] | None
    payload: dict[str, Any]


def chunk_points(
    document_id: str,
    title: str,
    source: str | None,
    chunks: Sequence[Chunk],
    sparse: Sequence[models.SparseVector],
    dense: Sequence[list[float]] | None,
    *,
    collection: str,
    pages: Sequence[int | None] | None,
    version: str = "",
    attributes: Mapping[str, AttributeValue] | None = None,
) -> list[ChunkPoint]:
    """The points of `upsert_chunks`'s arguments, each with one sparse (and dense, if any)
    vector of its own."""
    if len(sparse) != len(chunks) or (dense is not None and len(dense) != len(chunks)):
        raise ValueError("one sparse (and dense, if any) vector per chunk is required")
    stamp: dict[str, Any] = {"version": version} if version else {}
    if attributes:
        stamp |= attribute_payload(attributes)
    return [
        ChunkPoint(
            id=point_id(document_id, chunk.index, version),
            sparse=sparse[i],
            dense=None if dense is None else dense[i],
            payload=stamp
            | {
                "document_id": document_id,
                "title": title,
                "source": source,
                "collection": collection,
                "chunk": chunk.index,
                "page": pages[i] if pages else None,
                "heading": chunk.heading,
                "start": chunk.start,
                "end": chunk.end,
                "text": chunk.text,
            },
        )
        for i, chunk in enumerate(chunks)
    ]


def count_probes(document_id: str, chunks: int, version: str = "") -> list[str]:
    """The point ids that tell whether a document's version holds exactly `chunks` chunks
    (numbered 0..n-1): chunk `chunks` must be absent, and chunk `chunks - 1` present."""
    probes = [point_id(document_id, chunks, version)]
    if chunks > 0:
        probes.append(point_id(document_id, chunks - 1, version))
    return probes


def citation_heading(title: str, heading: str | None) -> str | None:
    """ "Title › Section › Subsection" for a chunk, without repeating a title that is also the
    document's first heading."""
    if not heading:
        return title or None
    if not title or heading == title or heading.startswith(title + HEADING_SEPARATOR):
        return heading
    return f"{title}{HEADING_SEPARATOR}{heading}"


def source_of(n: int, payload: Mapping[str, Any] | None, score: float) -> Source:
    """The `n`th result, from a stored chunk's payload and its score."""
    payload = payload or {}
    page = payload.get("page")
    title = str(payload.get("title", ""))
    heading = payload.get("heading")
    return Source(
        n=n,
        document_id=str(payload.get("document_id", "")),
        title=title,
        chunk=int(payload.get("chunk", 0)),
        score=score,
        text=str(payload.get("text", "")),
        source=payload.get("source"),
        heading=citation_heading(title, heading if isinstance(heading, str) else None),
        page=page if isinstance(page, int) else None,
        collection=str(payload.get("collection") or DEFAULT_COLLECTION),
        attributes=payload_attributes(payload),
    )
