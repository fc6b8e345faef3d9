"""The Qdrant Edge backend of `ChunkStore`: Qdrant's engine in this process, one shard (one
folder) per collection.

Edge is fast (a search takes under a millisecond) but unforgiving, so every call is guarded:

- A malformed sparse vector (indices and values of different lengths) panics inside the shard
  and leaves it unusable for good: vectors are checked here before any reaches it.
- It raises bare `Exception`s, and a Rust panic arrives as a `BaseException`: both become
  `ProviderError`s, retryable like a Qdrant server's 5xx, so the job's retries and the "qdrant"
  breaker treat them alike.
- Deleted points still count in the shard's IDF until segments are rebuilt (and `optimize()`
  leaves small segments alone): searches compute IDF over the live points instead.
- Every write is in the shard's write-ahead log before the call returns, and a process killed
  before a flush loses none of it (tested). A flush writes the segments out, which keeps the
  log short and a reopen fast, but costs more than indexing a small document: flushes are
  spaced at least `FLUSH_INTERVAL` apart, in a thread (the shard object is shared across
  threads safely: it is not a thread-bound PyO3 class), and closing the shard flushes.
- The write-ahead log stays on (its default): without it, two writers silently lose points.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import qdrant_edge as edge
import structlog
from qdrant_client import models

from rag_async.domain.errors import ConfigurationError, ProviderError
from rag_async.domain.filters import AttributeValue, Filter
from rag_async.domain.sources import Source
from rag_async.providers.parsing.chunking import Chunk
from rag_async.providers.retrieval.edge_filters import edge_filter, edge_schema
from rag_async.providers.retrieval.payload_filters import AttributeIndexes, search_filter
from rag_async.providers.retrieval.store import (
    DEFAULT_COLLECTION,
    DENSE_VECTOR,
    INDEX_BATCH,
    LEXICAL_VECTOR,
    PREFETCH_FACTOR,
    ChunkPoint,
    Fusion,
    chunk_points,
    count_probes,
    point_id,
    source_of,
)

T = TypeVar("T")

log = structlog.get_logger(__name__)

# Sparse indices are u32 in the engine.
_MAX_INDEX = 2**32
# IDF over the points a filter matches, and an empty filter matches every live point: deleted
# points, still in the segments until they are rebuilt, no longer weigh on term rarity.
LIVE_IDF = edge.SearchParams(idf=edge.IdfParams(corpus=edge.Filter()))
# Seconds between two flushes at least (see the module's docstring).
FLUSH_INTERVAL = 2.0
# Never let these become provider errors: they stop the process or cancel the job.
_NOT_FAILURES = (KeyboardInterrupt, SystemExit, asyncio.CancelledError, GeneratorExit)


class MalformedVector(ValueError):
    """A sparse vector the engine would choke on, refused before it is written."""


def check_sparse(vector: models.SparseVector) -> None:
    """Refuse a sparse vector that could break the shard: indices and values of unequal
    length, indices unsorted, repeated or out of range, values not finite."""
    indices, values = vector.indices, vector.values
    if len(indices) != len(values):
        raise MalformedVector(f"sparse vector has {len(indices)} indices but {len(values)} values")
    if any(not 0 <= i < _MAX_INDEX for i in indices):
        raise MalformedVector("sparse vector index out of range")
    if any(b <= a for a, b in itertools.pairwise(indices)):
        raise MalformedVector("sparse vector indices are not sorted and unique")
    if not all(math.isfinite(v) for v in values):
        raise MalformedVector("sparse vector value is not finite")


def edge_call(call: Callable[..., T], *args: Any) -> T:
    """`call(*args)` on the shard, its failures as `ProviderError`s."""
    try:
        return call(*args)
    except Exception as error:
        raise ProviderError(f"Qdrant Edge: {error}", retryable=True) from error
    except _NOT_FAILURES:
        raise
    except BaseException as error:  # a Rust panic (pyo3's PanicException)
        raise ProviderError(f"Qdrant Edge failed: {error}", retryable=True) from error


class EdgeChunkStore:
    """A `ChunkStore` in a Qdrant Edge shard at `folder / collection`."""

    def __init__(self, folder: Path, collection: str, fusion: Fusion | None = None) -> None:
        self._path = folder / collection
        self._collection = collection
        self._fusion = fusion or Fusion()
        self._shard: edge.EdgeShard | None = None
        self._flushed_at = -math.inf
        self._attribute_indexes = AttributeIndexes()

    @property
    def shard(self) -> edge.EdgeShard:
        if self._shard is None:
            raise RuntimeError("ensure_collection() opens the shard first")
        return self._shard

    async def ensure_collection(self, dense_dim: int | None) -> None:
        """Open (or create) the shard; check that an existing one fits `dense_dim`."""
        # Opening reads the segments' metadata (0.16 s for 15k chunks): once, at startup.
        await self.close()
        self._attribute_indexes = AttributeIndexes()  # the shard's own are read when needed
        vectors = None
        if dense_dim:
            vectors = {
                DENSE_VECTOR: edge.EdgeVectorParams(size=dense_dim, distance=edge.Distance.Cosine)
            }
        config = edge.EdgeConfig(
            vectors=vectors,
            sparse_vectors={
                LEXICAL_VECTOR: edge.EdgeSparseVectorParams(modifier=edge.Modifier.Idf)
            },
        )
        if (self._path / "segments").exists():
            # Lexical search works on any shard of ours, dense vectors or not: without an
            # embedder the shard opens with the configuration it was created with.
            stored = config if dense_dim else None
            self._shard = self._open(lambda: edge.EdgeShard.load(str(self._path), stored))
            return
        self._shard = self._open(lambda: edge.EdgeShard.create(str(self._path), config))
        for field, schema in (
            ("document_id", edge.PayloadSchemaType.Keyword),
            ("collection", edge.PayloadSchemaType.Keyword),
            ("version", edge.PayloadSchemaType.Keyword),
            ("chunk", edge.PayloadSchemaType.Integer),
        ):
            edge_call(self.shard.update, edge.UpdateOperation.create_field_index(field, schema))

    def _open(self, opening: Callable[[], edge.EdgeShard]) -> edge.EdgeShard:
        try:
            return opening()
        except Exception as error:
            if "incompatible" in str(error).lower():
                raise ConfigurationError(
                    f"The Qdrant Edge shard at {self._path} does not fit the embedder's "
                    f"vectors ({error}). Set RAG_COLLECTION to a new name (and ingest again), "
                    "or delete the shard."
                ) from None
            if "WouldBlock" in str(error):  # the WAL's file lock: another process has it
                raise ConfigurationError(
                    f"Another process holds the Qdrant Edge shard at {self._path} (its WAL "
                    "is locked). A shard can be opened by one process only: more than one "
                    "worker process needs a Qdrant server: set RAG_QDRANT_URL."
                ) from None
            raise ConfigurationError(
                f"Cannot open the Qdrant Edge shard at {self._path}: {error}"
            ) from None

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
        records = chunk_points(
            document_id,
            title,
            source,
            chunks,
            sparse,
            dense,
            collection=collection,
            pages=pages,
            version=version,
            attributes=attributes,
        )
        self.write_points(records)

    def write_points(self, records: Sequence[ChunkPoint]) -> None:
        """Write points as they are (upsert_chunks's, or another store's when migrating)."""
        for record in records:
            check_sparse(record.sparse)  # every one, before any point of the batch is written
        points = []
        for record in records:
            vector: dict[str, edge.NamedVector] = {
                LEXICAL_VECTOR: edge.SparseVector(record.sparse.indices, record.sparse.values)
            }
            if record.dense is not None:
                vector[DENSE_VECTOR] = record.dense
            points.append(edge.Point(record.id, vector, record.payload))
        for start in range(0, len(points), INDEX_BATCH):
            operation = edge.UpdateOperation.upsert_points(points[start : start + INDEX_BATCH])
            # A few ms a batch, on the loop: the call holds the GIL throughout (measured), so a
            # thread would not free the loop. A flush does let go of it, and goes to a thread.
            edge_call(self.shard.update, operation)

    async def trim_document(self, document_id: str, *, keep: int, version: str = "") -> None:
        # Chunks are numbered 0..n-1 (see QdrantChunkStore.trim_document): a look-up by id
        # tells whether anything lies beyond `keep`.
        if self._existing([point_id(document_id, keep, version)]):
            self._delete(_document_filter(document_id, versions=[version], from_chunk=keep))

    async def flush(self) -> None:
        now = time.monotonic()
        if now - self._flushed_at < FLUSH_INTERVAL:
            return  # durable already, in the write-ahead log; the next flush or close writes it
        self._flushed_at = now
        await asyncio.to_thread(edge_call, self.shard.flush)

    async def holds_exactly(self, document_id: str, chunks: int, *, version: str = "") -> bool:
        probes = count_probes(document_id, chunks, version)
        return self._existing(probes) == set(probes[1:])

    def _existing(self, ids: list[str]) -> set[str]:
        records = edge_call(self.shard.retrieve, list(ids), False, False)
        return {str(record.id) for record in records}

    async def delete_document(self, document_id: str) -> None:
        self._delete(_document_filter(document_id))
        await self.flush()

    async def delete_versions(self, document_id: str, versions: Sequence[str]) -> None:
        if versions:
            self._delete(_document_filter(document_id, versions=versions))
            await self.flush()

    async def count_document(self, document_id: str) -> int:
        request = edge.CountRequest(exact=True, filter=_document_filter(document_id))
        return edge_call(self.shard.count, request)

    def _delete(self, where: edge.Filter) -> None:
        edge_call(self.shard.update, edge.UpdateOperation.delete_points_by_filter(where))

    async def search(
        self,
        sparse: models.SparseVector,
        dense: list[float] | None,
        limit: int,
        *,
        collection: str | None = None,
        filters: Filter | None = None,
    ) -> list[Source]:
        # On the loop: a search takes under a millisecond, less than a thread hand-off.
        if dense is None and not sparse.indices:
            return []  # only stopwords: a lexical search has nothing to match
        check_sparse(sparse)
        if filters is not None:
            await self._index_attributes(filters)
        wanted = search_filter(collection, filters)
        where = None if wanted is None else edge_filter(wanted)
        lexical = edge.Query.Nearest(
            edge.SparseVector(sparse.indices, sparse.values), using=LEXICAL_VECTOR
        )
        if dense is None:
            request = edge.QueryRequest(
                limit=limit, query=lexical, filter=where, with_payload=True, params=LIVE_IDF
            )
        else:
            candidates = limit * PREFETCH_FACTOR
            prefetches = [
                edge.Prefetch(
                    limit=candidates,
                    query=edge.Query.Nearest(dense, using=DENSE_VECTOR),
                    filter=where,
                )
            ]
            if sparse.indices:
                prefetches.append(
                    edge.Prefetch(limit=candidates, query=lexical, filter=where, params=LIVE_IDF)
                )
            request = edge.QueryRequest(
                limit=limit,
                # The stub types `query` as `Fusion`, whose variants are its nested classes.
                query=edge.Fusion.Rrf(  # type: ignore[arg-type]
                    k=self._fusion.k, weights=self._fusion.weights(bool(sparse.indices))
                ),
                prefetches=prefetches,
                with_payload=True,
            )
        points = edge_call(self.shard.query, request)
        return [source_of(n, point.payload, point.score) for n, point in enumerate(points, 1)]

    async def _index_attributes(self, filters: Filter) -> None:
        """Index the attributes `filters` compares that have none yet
        (payload_filters.AttributeIndexes), before this search: a filter without one reads
        every candidate's payload. Built in a thread (over every point: a fraction of a
        second for a large shard), then kept up to date by each write."""
        indexes = self._attribute_indexes
        if indexes.stale(filters):
            indexes.learn(edge_call(self.shard.info).payload_schema)
        for path, schema in indexes.missing(filters).items():
            operation = edge.UpdateOperation.create_field_index(path, edge_schema(schema))
            try:
                await asyncio.to_thread(edge_call, self.shard.update, operation)
            except ProviderError as error:  # an index only speeds filters up: search without
                log.warning("attribute index not created", field=path, error=error.message)

    async def count(self) -> int:
        return edge_call(self.shard.count, edge.CountRequest(exact=True))

    async def close(self) -> None:
        shard, self._shard = self._shard, None
        if shard is not None:
            await asyncio.to_thread(edge_call, shard.close)  # flushes


_Condition = edge.FieldCondition | edge.IsEmptyCondition | edge.Filter


def _document_filter(
    document_id: str, *, versions: Sequence[str] | None = None, from_chunk: int = 0
) -> edge.Filter:
    """The document's chunks (of these `versions` only, if given; "" is its unversioned
    ones), from chunk `from_chunk` on."""
    conditions: list[_Condition] = [
        edge.FieldCondition("document_id", match=edge.MatchValue(document_id))
    ]
    if versions is not None:
        named = [version for version in versions if version]
        either: list[_Condition] = []
        if named:
            either.append(edge.FieldCondition("version", match=edge.MatchAny(named)))
        if len(named) < len(versions):
            either.append(edge.IsEmptyCondition("version"))
        conditions.append(edge.Filter(should=list(either)))
    if from_chunk > 0:
        conditions.append(edge.FieldCondition("chunk", range=edge.RangeFloat(gte=from_chunk)))
    return edge.Filter(must=list(conditions))
