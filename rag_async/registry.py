"""The document registry: what has been ingested, where, and how it went.

A hash per document (`Keys.document`) and a set of ids (`Keys.documents`). The API writes an
entry when it accepts a document; the ingestion and deletion jobs keep it up to date. Chunks
live in Qdrant; this is the index of them that a listing can read without touching Qdrant
(which only the worker may open, when embedded).
"""

from __future__ import annotations

from collections.abc import Mapping

from redis.asyncio import Redis

from .jobrecord import stored_value
from .keys import Keys
from .schemas import DocumentView


class DocumentRegistry:
    def __init__(self, redis: Redis, keys: Keys) -> None:
        self._redis = redis
        self._keys = keys

    async def put(self, document_id: str, fields: Mapping[str, str | int | float]) -> None:
        """Create or update the entry (only the given fields change)."""
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(
                self._keys.document(document_id),
                mapping={"document_id": document_id}
                | {name: stored_value(value) for name, value in fields.items()},
            )
            pipe.sadd(self._keys.documents, document_id)
            await pipe.execute()

    async def get(self, document_id: str) -> DocumentView | None:
        raw: dict[bytes, bytes] = await self._redis.hgetall(self._keys.document(document_id))  # type: ignore[misc]
        return _view(raw) if raw else None

    async def indexed(self, document_id: str) -> tuple[str, int] | None:
        """The fingerprint and chunk count of the version last indexed in full, if any (an
        ingestion clears the fingerprint when it starts and sets it when it ends)."""
        key = self._keys.document(document_id)
        fingerprint, chunks = await self._redis.hmget(key, ["fingerprint", "chunks"])  # type: ignore[misc]
        if not fingerprint or chunks is None:
            return None
        return fingerprint.decode(), int(chunks)

    async def all(self) -> list[DocumentView]:
        """Every document, most recently ingested first."""
        ids: set[bytes] = await self._redis.smembers(self._keys.documents)  # type: ignore[misc]
        async with self._redis.pipeline(transaction=False) as pipe:
            for document_id in ids:
                pipe.hgetall(self._keys.document(document_id.decode()))
            entries: list[dict[bytes, bytes]] = await pipe.execute()
        views = [_view(raw) for raw in entries if raw]
        return sorted(views, key=lambda view: (-(view.ingested_at or 0.0), view.title))

    async def remove(self, document_id: str) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.delete(self._keys.document(document_id))
            pipe.srem(self._keys.documents, document_id)
            await pipe.execute()


def _view(raw: Mapping[bytes, bytes]) -> DocumentView:
    fields = {k.decode(): v.decode() for k, v in raw.items()}

    def number(name: str) -> float | None:
        value = fields.get(name)
        return float(value) if value else None

    chunks, size = number("chunks"), number("size")
    return DocumentView(
        document_id=fields["document_id"],
        title=fields.get("title") or fields.get("filename") or "untitled",
        source=fields.get("source") or None,
        filename=fields.get("filename") or None,
        format=fields.get("format") or None,
        collection=fields.get("collection") or "default",
        status=fields.get("status", "queued"),
        chunks=None if chunks is None else int(chunks),
        size=None if size is None else int(size),
        ingested_at=number("ingested_at"),
        job_id=fields.get("job_id") or None,
        error=fields.get("error") or None,
    )
