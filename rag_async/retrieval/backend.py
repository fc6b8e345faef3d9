"""Which store this process opens, and the format file that says who wrote a store folder.

With `RAG_QDRANT_URL` set, chunks live in a Qdrant server. Otherwise they live on disk under
`data_dir/qdrant`, written by qdrant-client's local mode (`RAG_STORE=local`, the default) or
by Qdrant Edge (`RAG_STORE=edge`). Neither can read the other's files, nor can a future
version be assumed to read today's, so the folder holds `store-format.json` naming the
backend and its format: a mismatch stops the worker with "re-ingest", not a crash deep in an
engine.
"""

from __future__ import annotations

import json
from pathlib import Path

from rag_async.config import Settings
from rag_async.datadir import private_folder
from rag_async.errors import ConfigurationError
from rag_async.retrieval.edge_store import EdgeChunkStore
from rag_async.retrieval.qdrant_store import QdrantChunkStore, open_qdrant
from rag_async.retrieval.store import ChunkStore

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
    if settings.qdrant_url:
        return QdrantChunkStore(await open_qdrant(settings), settings.collection)
    folder = store_folder(settings)
    check_format(folder, settings.store)
    if settings.store == "edge":
        store: ChunkStore = EdgeChunkStore(folder / "edge", settings.collection)
    else:
        store = QdrantChunkStore(await open_qdrant(settings), settings.collection)
    write_format(folder, settings.store)
    return store


def store_folder(settings: Settings) -> Path:
    return private_folder(settings.data_dir) / "qdrant"


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
