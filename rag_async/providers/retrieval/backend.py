"""Which store this process opens, and the format file that says who wrote a store folder.

With `RAG_QDRANT_URL` set, chunks live in a Qdrant server. Otherwise they live on disk under
`data_dir/qdrant`, written by Qdrant Edge (`RAG_STORE=edge`, the default) or by qdrant-client's
local mode (`RAG_STORE=local`). Neither can read the other's files, nor can a future version
be assumed to read today's, so the folder holds `store-format.json` naming the backend and its
format: a mismatch stops the worker with "re-ingest", not a crash deep in an engine. The one
exception is the way forward: a local-mode folder opened for Edge is migrated (migration.py).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import structlog

from rag_async.config import Settings
from rag_async.datadir import private_folder
from rag_async.domain.errors import ConfigurationError
from rag_async.providers.retrieval.qdrant_store import QdrantChunkStore, open_qdrant
from rag_async.providers.retrieval.store import ChunkStore, Fusion

log = structlog.get_logger(__name__)

FORMAT_FILE = "store-format.json"
# The on-disk format each backend writes; raise one when a release can no longer read the
# folders an earlier one wrote.
FORMATS = {"local": 1, "edge": 1}
_NAMES = {"local": "qdrant-client local mode", "edge": "Qdrant Edge"}
# What qdrant-client's local mode leaves in its folder: a folder that has it but no format
# file was written before format files existed.
_LOCAL_MARKER = "meta.json"


async def open_store(settings: Settings) -> ChunkStore:
    """The chunk store `settings` describe; call `ensure_collection` before using it."""
    fusion = fusion_of(settings)
    if settings.qdrant_url:
        return QdrantChunkStore(await open_qdrant(settings), settings.collection, fusion)
    folder = store_folder(settings)
    if settings.store == "edge":
        return await _open_edge(folder, settings.collection, fusion)
    check_format(folder, "local")
    store = QdrantChunkStore(await open_qdrant(settings), settings.collection, fusion)
    write_format(folder, "local")
    return store


def fusion_of(settings: Settings) -> Fusion:
    return Fusion(
        lexical_weight=settings.rrf_lexical_weight, dense_weight=settings.rrf_dense_weight
    )


def store_folder(settings: Settings) -> Path:
    return private_folder(settings.data_dir) / "qdrant"


async def _open_edge(folder: Path, collection: str, fusion: Fusion) -> ChunkStore:
    try:
        from rag_async.providers.retrieval import migration
        from rag_async.providers.retrieval.edge_store import EdgeChunkStore
    except ImportError as error:
        raise ConfigurationError(
            f"Qdrant Edge cannot be loaded here ({error}): qdrant-edge-py has no build for "
            "this machine. Set RAG_STORE=local (qdrant-client's local mode: the same features, "
            "far slower searches) or RAG_QDRANT_URL (a Qdrant server)."
        ) from None
    migration.finish_interrupted(folder, lambda staging: read_format(staging) is not None)
    if read_format(folder) == ("local", FORMATS["local"]):
        await _migrate(folder)
    check_format(folder, "edge")
    write_format(folder, "edge")
    return EdgeChunkStore(folder / migration.EDGE_SHARDS, collection, fusion)


async def _migrate(folder: Path) -> None:
    """Copy a local-mode store into Qdrant Edge and swap it in (see migration.py)."""
    from rag_async.providers.retrieval import migration

    log.warning("store.migrating", folder=str(folder), to="Qdrant Edge")
    started = time.monotonic()
    staging = migration.staging_folder(folder)
    copied = await migration.copy_local_to_edge(folder, staging)
    write_format(staging, "edge")  # the copy is complete from here on
    kept = migration.keep_old(folder, staging)
    log.warning(
        "store.migrated",
        chunks=copied,
        seconds=round(time.monotonic() - started, 1),
        old_store=str(kept),
        hint="the old store is no longer read: delete that folder once you are satisfied",
    )


def check_format(folder: Path, backend: str) -> None:
    """Raise `ConfigurationError` unless `backend` can read the store in `folder`."""
    found = read_format(folder)
    if found is None:
        return
    written_by, version = found
    if written_by == backend and version == FORMATS[backend]:
        return
    name = _NAMES.get(written_by, f"backend {written_by!r}")
    raise ConfigurationError(
        f"The store at {folder} was written by {name} (format {version}); this process uses "
        f"{_NAMES[backend]} (format {FORMATS[backend]}), which cannot read it. Re-ingest: move "
        "that folder away (or set RAG_DATA_DIR to a new folder) and add the documents again"
        + (f", or set RAG_STORE={written_by}." if FORMATS.get(written_by) == version else ".")
    )


def read_format(folder: Path) -> tuple[str, int] | None:
    """Who wrote the store in `folder` and in which format; None for an empty folder."""
    try:
        text = (folder / FORMAT_FILE).read_text()
    except FileNotFoundError:
        if (folder / _LOCAL_MARKER).exists():
            return "local", 1  # written before format files
        return None
    try:
        found = json.loads(text)
        return str(found["backend"]), int(found["format"])
    except (ValueError, KeyError, TypeError):
        return "unknown", 0


def write_format(folder: Path, backend: str) -> None:
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = folder / FORMAT_FILE
    text = json.dumps({"backend": backend, "format": FORMATS[backend]}) + "\n"
    if not path.exists() or path.read_text() != text:
        path.write_text(text)
