"""The qdrant-client backend of `ChunkStore`: a Qdrant server (`RAG_QDRANT_URL`), or
qdrant-client's local mode on disk (`RAG_STORE=local`), which scores in Python."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import structlog
from qdrant_client import AsyncQdrantClient, models
from qdrant_client.http.exceptions import UnexpectedResponse

from rag_async.config import Settings
from rag_async.datadir import private_folder
from rag_async.domain.errors import ConfigurationError
from rag_async.domain.filters import AttributeValue, Filter
from rag_async.domain.sources import Source
from rag_async.providers.parsing.chunking import Chunk
from rag_async.providers.retrieval.payload_filters import AttributeIndexes, search_filter
from rag_async.providers.retrieval.store import (
    DEFAULT_COLLECTION,
    DENSE_VECTOR,
    INDEX_BATCH,
    LEXICAL_VECTOR,
    PREFETCH_FACTOR,
    Fusion,
    chunk_points,
    count_probes,
    point_id,
    source_of,
)

log = structlog.get_logger(__name__)


async def open_qdrant(settings: Settings) -> AsyncQdrantClient:
    """The Qdrant client of this process: a server when `RAG_QDRANT_URL` is set, else the
    embedded (local) mode on disk under `data_dir`, which one process only may open."""
    if settings.qdrant_url:
        key = settings.qdrant_api_key
        return AsyncQdrantClient(
            url=settings.qdrant_url,
            api_key=key.get_secret_value() if key else None,
            timeout=math.ceil(settings.qdrant_timeout),
        )
    path = private_folder(settings.data_dir) / "qdrant"
    try:
        # Loads the stored points into memory: a blocking read, done once at startup, before
        # any job runs.
        return AsyncQdrantClient(path=str(path))
    except RuntimeError as exc:
        # qdrant-client holds an exclusive file lock on the folder and reports a conflict as
        # a bare RuntimeError; say what it means for this deployment instead.
        if "already accessed" in str(exc):
            raise ConfigurationError(
                f"Another process holds the embedded Qdrant at {path} (or this process opened "
                "it twice). Embedded Qdrant can be opened by one process only: more than one "
                "worker process (or an API and a worker in separate processes) needs a Qdrant "
                "server: set RAG_QDRANT_URL."
            ) from None
        raise ConfigurationError(f"Cannot open the embedded Qdrant at {path}: {exc}") from None


class QdrantChunkStore:
    """A `ChunkStore` in one Qdrant collection, through qdrant-client."""

    def __init__(
        self, client: AsyncQdrantClient, collection: str, fusion: Fusion | None = None
    ) -> None:
        self._client = client
        self._collection = collection
        self._fusion = fusion or Fusion()
        # Embedded Qdrant checks a filter point by point in Python (docs/benchmarks.md has its
        # cost). This process is its only user, so it can know which collections the store
        # holds, and skip the filter when there is only the one asked for. With a server,
        # other workers write too, so the (indexed, cheap) filter always applies.
        self._known_collections: set[str] | None = None
        self._attribute_indexes = AttributeIndexes()

    async def ensure_collection(self, dense_dim: int | None) -> None:
        """Create the collection if missing; check that an existing one fits `dense_dim`."""
        if _is_embedded(self._client):
            self._known_collections = set()
        if await self._client.collection_exists(self._collection):
            await self._check_dense(dense_dim)
            await self._learn_collections()
            return
        dense_config: dict[str, models.VectorParams] = {}
        if dense_dim:
            dense_config[DENSE_VECTOR] = models.VectorParams(
                size=dense_dim, distance=models.Distance.COSINE
            )
        try:
            await self._client.create_collection(
                self._collection,
                vectors_config=dense_config,
                sparse_vectors_config={
                    LEXICAL_VECTOR: models.SparseVectorParams(modifier=models.Modifier.IDF)
                },
            )
        except UnexpectedResponse as exc:
            # Two workers starting at once against one server: the loser sees 409, and the
            # collection it wanted exists.
            if exc.status_code != 409:
                raise
            await self._check_dense(dense_dim)
            return
        if not _is_embedded(self._client):
            # Deleting or trimming a document filters on these: on a server, an index makes
            # that cheap. Local mode scans anyway (and warns that indexes have no effect).
            for field, schema in (
                ("document_id", models.PayloadSchemaType.KEYWORD),
                ("collection", models.PayloadSchemaType.KEYWORD),
                ("version", models.PayloadSchemaType.KEYWORD),
                ("chunk", models.PayloadSchemaType.INTEGER),
            ):
                await self._client.create_payload_index(self._collection, field, schema)

    async def _learn_collections(self) -> None:
        """Read which collections an embedded store holds (once, at start)."""
        if self._known_collections is None:
            return
        offset = None
        while True:
            points, offset = await self._client.scroll(
                self._collection, limit=1000, offset=offset, with_payload=["collection"]
            )
            for point in points:
                payload = point.payload or {}
                self._known_collections.add(str(payload.get("collection") or DEFAULT_COLLECTION))
            if offset is None:
                return

    async def _check_dense(self, dense_dim: int | None) -> None:
        if not dense_dim:
            return  # lexical search works on any collection of ours
        info = await self._client.get_collection(self._collection)
        vectors = info.config.params.vectors
        params = vectors.get(DENSE_VECTOR) if isinstance(vectors, dict) else None
        if params is None or params.size != dense_dim:
            found = "no dense vectors" if params is None else f"dense vectors of size {params.size}"
            raise ConfigurationError(
                f"Qdrant collection {self._collection!r} holds {found}, but the embedder makes "
                f"vectors of size {dense_dim}. Set RAG_COLLECTION to a new name (and ingest "
                "again), or delete the collection."
            )

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
        points = []
        for point in chunk_points(
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
        ):
            vector: dict[str, Any] = {LEXICAL_VECTOR: point.sparse}
            if point.dense is not None:
                vector[DENSE_VECTOR] = point.dense
            points.append(models.PointStruct(id=point.id, vector=vector, payload=point.payload))
        if self._known_collections is not None:
            self._known_collections.add(collection)  # before writing: never under-filter
        # (Embedded Qdrant writes to its SQLite file synchronously, on the loop: one more
        # reason for a server at scale.)
        for start in range(0, len(points), INDEX_BATCH):
            await self._client.upsert(
                self._collection, points=points[start : start + INDEX_BATCH], wait=True
            )

    async def trim_document(self, document_id: str, *, keep: int, version: str = "") -> None:
        """Drop the chunks of `version` numbered `keep` and beyond: what is left of a longer
        earlier write of the same version once the new one is written."""
        # A document's chunks are always numbered 0..n-1 (written in order, trimmed from
        # the end), so if chunk `keep` is absent there is nothing beyond it. The look-up by id
        # is O(1); the filtered delete scans every point in embedded Qdrant, which made
        # ingesting a corpus quadratic in its size.
        if await self._existing([point_id(document_id, keep, version)]):
            await self._delete(_document_filter(document_id, versions=[version], from_chunk=keep))

    async def flush(self) -> None:
        """Nothing to do: qdrant-client's upserts wait until written."""

    async def holds_exactly(self, document_id: str, chunks: int, *, version: str = "") -> bool:
        """Whether the stored chunks of the document's `version` are exactly 0..chunks-1: two
        look-ups by id, as chunks are numbered without gaps (see `trim_document`)."""
        probes = count_probes(document_id, chunks, version)
        return await self._existing(probes) == set(probes[1:])

    async def _existing(self, ids: list[str]) -> set[str]:
        points = await self._client.retrieve(
            self._collection, ids=ids, with_payload=False, with_vectors=False
        )
        return {str(point.id) for point in points}

    async def delete_document(self, document_id: str) -> None:
        await self._delete(_document_filter(document_id))

    async def delete_versions(self, document_id: str, versions: Sequence[str]) -> None:
        if versions:
            await self._delete(_document_filter(document_id, versions=versions))

    async def count_document(self, document_id: str) -> int:
        """How many chunks of `document_id` the collection holds."""
        document = models.FieldCondition(
            key="document_id", match=models.MatchValue(value=document_id)
        )
        result = await self._client.count(
            self._collection, count_filter=models.Filter(must=[document]), exact=True
        )
        return result.count

    async def _delete(self, where: models.Filter) -> None:
        await self._client.delete(
            self._collection, points_selector=models.FilterSelector(filter=where), wait=True
        )

    async def search(
        self,
        sparse: models.SparseVector,
        dense: list[float] | None,
        limit: int,
        *,
        collection: str | None = None,
        filters: Filter | None = None,
    ) -> list[Source]:
        """The best `limit` chunks of `collection` (all of them when None) that match
        `filters`, numbered 1..k in rank order.

        With a dense vector the search is hybrid: a lexical and a dense candidate list, fused
        by reciprocal rank (RRF), which needs no calibration between the two kinds of score.
        """
        if dense is None and not sparse.indices:
            return []  # only stopwords: a lexical search has nothing to match
        if collection is not None and self._known_collections is not None:
            if collection not in self._known_collections:
                return []  # nothing was ever stored in it
            if self._known_collections == {collection}:
                collection = None  # everything here is of that collection
        if filters is not None and not _is_embedded(self._client):
            try:
                await self._index_attributes(filters)
            except Exception as error:  # an index only speeds filters up: search without
                log.warning("attribute index not created", error=str(error))
        where = search_filter(collection, filters)
        if dense is None:
            response = await self._client.query_points(
                self._collection,
                query=sparse,
                using=LEXICAL_VECTOR,
                limit=limit,
                query_filter=where,
            )
        else:
            response = await self._client.query_points(
                self._collection,
                prefetch=_hybrid_prefetch(sparse, dense, limit * PREFETCH_FACTOR, where),
                query=_fusion_query(self._fusion, bool(sparse.indices)),
                limit=limit,
            )
        return [
            source_of(n, point.payload, point.score)
            for n, point in enumerate(response.points, start=1)
        ]

    async def _index_attributes(self, filters: Filter) -> None:
        """On a server, index the attributes `filters` compares that have none yet
        (payload_filters.AttributeIndexes). Not waited for: this search, and those until the
        index is built, filter without it. (Embedded Qdrant has no indexes to make.)"""
        indexes = self._attribute_indexes
        if indexes.stale(filters):
            info = await self._client.get_collection(self._collection)
            indexes.learn(info.payload_schema)
        for path, schema in indexes.missing(filters).items():
            await self._client.create_payload_index(self._collection, path, schema, wait=False)

    async def count(self) -> int:
        result = await self._client.count(self._collection, exact=True)
        return result.count

    async def close(self) -> None:
        await self._client.close()


def _document_filter(
    document_id: str, *, versions: Sequence[str] | None = None, from_chunk: int = 0
) -> models.Filter:
    """The document's chunks (of these `versions` only, if given; "" is its unversioned
    ones), from chunk `from_chunk` on."""
    conditions: list[models.Condition] = [
        models.FieldCondition(key="document_id", match=models.MatchValue(value=document_id))
    ]
    if versions is not None:
        named = [version for version in versions if version]
        either: list[models.Condition] = []
        if named:
            either.append(models.FieldCondition(key="version", match=models.MatchAny(any=named)))
        if len(named) < len(versions):
            either.append(models.IsEmptyCondition(is_empty=models.PayloadField(key="version")))
        conditions.append(models.Filter(should=either))
    if from_chunk > 0:
        conditions.append(models.FieldCondition(key="chunk", range=models.Range(gte=from_chunk)))
    return models.Filter(must=conditions)


def _is_embedded(client: AsyncQdrantClient) -> bool:
    options = client.init_options
    return options.get("path") is not None or options.get("location") == ":memory:"


def _hybrid_prefetch(
    sparse: models.SparseVector,
    dense: list[float],
    candidates: int,
    where: models.Filter | None,
) -> list[models.Prefetch]:
    """The candidate lists a hybrid search fuses: dense, and lexical unless only stopwords
    were asked. The filter goes on each branch: a fusion of unfiltered candidates could come
    up short, or empty, for a small collection."""
    prefetch = [models.Prefetch(query=dense, using=DENSE_VECTOR, limit=candidates, filter=where)]
    if sparse.indices:
        prefetch.append(
            models.Prefetch(query=sparse, using=LEXICAL_VECTOR, limit=candidates, filter=where)
        )
    return prefetch


def _fusion_query(fusion: Fusion, with_lexical: bool) -> models.Query:
    """Plain RRF when the fusion is the default one, which every Qdrant server since hybrid
    queries understands; weighted RRF (a newer server's) only when weights were set."""
    if fusion == Fusion():
        return models.FusionQuery(fusion=models.Fusion.RRF)
    return models.RrfQuery(rrf=models.Rrf(k=fusion.k, weights=fusion.weights(with_lexical)))
