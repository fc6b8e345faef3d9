"""Moving a store folder written by qdrant-client's local mode (the embedded default before
Qdrant Edge) to Qdrant Edge, so an upgrade keeps its documents without re-ingesting them.

The points are copied as they are (ids, vectors, payloads): nothing is parsed, chunked or
encoded again. The copy is built beside the old folder and swapped in with two renames; the
old folder is kept, renamed, until its owner deletes it. A process stopped half-way leaves
either the old folder untouched (the copy is started over) or a finished copy waiting for its
last rename (`finish_interrupted` does it).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path

from qdrant_client import AsyncQdrantClient, models

from rag_async.domain.errors import ConfigurationError
from rag_async.providers.retrieval.edge_store import EdgeChunkStore
from rag_async.providers.retrieval.store import (
    DENSE_VECTOR,
    INDEX_BATCH,
    LEXICAL_VECTOR,
    ChunkPoint,
)

# Where the Edge shards live inside a store folder (one folder per collection).
EDGE_SHARDS = "edge"


def staging_folder(folder: Path) -> Path:
    return folder.with_name(folder.name + ".migrating")


def finish_interrupted(folder: Path, is_complete: Callable[[Path], bool]) -> None:
    """Complete a migration stopped between its two renames: the old folder is already
    moved away and the finished copy (`is_complete` says so) still waits under its staging
    name."""
    staging = staging_folder(folder)
    if not folder.exists() and staging.exists() and is_complete(staging):
        staging.rename(folder)


async def copy_local_to_edge(folder: Path, staging: Path) -> int:
    """Copy every collection of the local-mode store in `folder` into Edge shards under
    `staging`; return how many points were copied."""
    shutil.rmtree(staging, ignore_errors=True)  # a copy an earlier, stopped run began
    try:
        client = AsyncQdrantClient(path=str(folder))
    except RuntimeError as error:  # its folder lock: another process has the store open
        raise ConfigurationError(f"Cannot migrate the store at {folder}: {error}") from None
    copied = 0
    try:
        for collection in (await client.get_collections()).collections:
            copied += await _copy_collection(client, collection.name, staging / EDGE_SHARDS)
    finally:
        await client.close()
    return copied


def keep_old(folder: Path, staging: Path) -> Path:
    """Swap the finished copy in; return where the old store now is."""
    kept = folder.with_name(f"{folder.name}-local-mode-{time.strftime('%Y%m%d-%H%M%S')}")
    folder.rename(kept)
    staging.rename(folder)
    return kept


async def _copy_collection(client: AsyncQdrantClient, name: str, shards: Path) -> int:
    store = EdgeChunkStore(shards, name)
    await store.ensure_collection(await _dense_size(client, name))
    copied, offset = 0, None
    try:
        while True:
            batch, offset = await client.scroll(
                name, limit=INDEX_BATCH, offset=offset, with_payload=True, with_vectors=True
            )
            store.write_points([_as_chunk_point(point) for point in batch])
            copied += len(batch)
            if offset is None:
                break
        await store.flush()
    finally:
        await store.close()
    return copied


async def _dense_size(client: AsyncQdrantClient, name: str) -> int | None:
    vectors = (await client.get_collection(name)).config.params.vectors
    params = vectors.get(DENSE_VECTOR) if isinstance(vectors, dict) else None
    return params.size if params else None


def _as_chunk_point(point: models.Record) -> ChunkPoint:
    vectors = point.vector if isinstance(point.vector, dict) else {}
    sparse = vectors.get(LEXICAL_VECTOR)
    if not isinstance(sparse, models.SparseVector):
        sparse = models.SparseVector(indices=[], values=[])
    dense = vectors.get(DENSE_VECTOR)
    return ChunkPoint(
        id=str(point.id),
        sparse=sparse,
        dense=dense if isinstance(dense, list) and dense and isinstance(dense[0], float) else None,
        payload=dict(point.payload or {}),
    )
