"""The document registry: what has been ingested, where, and how it went.

A hash per document (`Keys.document`) and a set of ids (`Keys.documents`). The API writes an
entry when it accepts a document; the ingestion and deletion jobs keep it up to date. Chunks
live in Qdrant; this is the index of them that a listing can read without touching Qdrant
(which only the worker may open, when embedded).

Each owner's stored bytes, for the per-key quota, are a hash of document id -> size
(`Keys.document_bytes`), written in the same Redis step as the entry whenever its size is set
and dropped with it, so the tally follows the registry (a document ingested again replaces
its size; one moved to another owner moves with it).
"""

from __future__ import annotations

from collections.abc import Mapping

from redis.asyncio import Redis

from rag_async.domain.identity import shown_collection
from rag_async.domain.job import stored_value
from rag_async.domain.schemas import DocumentView
from rag_async.store.keys import Keys

# KEYS: the document's hash, the set of ids. ARGV: the document id, the prefix of the owners'
# byte tallies, then fields and values (the size among them).
_PUT_SIZED = """
local before = redis.call('HGET', KEYS[1], 'owner')
redis.call('HSET', KEYS[1], unpack(ARGV, 3))
redis.call('SADD', KEYS[2], ARGV[1])
local owner = redis.call('HGET', KEYS[1], 'owner') or ''
if before and before ~= owner then redis.call('HDEL', ARGV[2] .. before, ARGV[1]) end
redis.call('HSET', ARGV[2] .. owner, ARGV[1], redis.call('HGET', KEYS[1], 'size'))
"""

# KEYS: the document's hash, the set of ids. ARGV: the document id, the tallies' prefix.
_REMOVE = """
redis.call('HDEL', ARGV[2] .. (redis.call('HGET', KEYS[1], 'owner') or ''), ARGV[1])
redis.call('DEL', KEYS[1])
redis.call('SREM', KEYS[2], ARGV[1])
"""

# KEYS: the document's hash. ARGV: the document id, the tallies' prefix, the job that ended
# without doing its work, why. Only the job the entry stands for may mark it (an older one's
# end must not fail a newer version); a version that never got indexed in full stores no
# bytes, so they leave the owner's tally.
_FAILED = """
local job = redis.call('HGET', KEYS[1], 'job_id')
if not job or (job ~= '' and job ~= ARGV[3]) then return 0 end
redis.call('HSET', KEYS[1], 'status', 'failed', 'error', ARGV[4])
local fingerprint = redis.call('HGET', KEYS[1], 'fingerprint')
if not fingerprint or fingerprint == '' then
  redis.call('HDEL', ARGV[2] .. (redis.call('HGET', KEYS[1], 'owner') or ''), ARGV[1])
  redis.call('HDEL', KEYS[1], 'size')
end
return 1
"""

# KEYS: an owner's byte tally. ARGV: a document not to count (the one an upload replaces).
_STORED_BYTES = """
local total = 0
local sizes = redis.call('HGETALL', KEYS[1])
for i = 1, #sizes, 2 do
  if sizes[i] ~= ARGV[1] then total = total + tonumber(sizes[i + 1]) end
end
return total
"""


class DocumentRegistry:
    def __init__(self, redis: Redis, keys: Keys) -> None:
        self._redis = redis
        self._keys = keys
        self._put_sized = redis.register_script(_PUT_SIZED)
        self._remove = redis.register_script(_REMOVE)
        self._stored_bytes = redis.register_script(_STORED_BYTES)
        self._failed = redis.register_script(_FAILED)

    async def put(self, document_id: str, fields: Mapping[str, str | int | float]) -> None:
        """Create or update the entry (only the given fields change)."""
        values = {"document_id": document_id} | {
            name: stored_value(value) for name, value in fields.items()
        }
        keys = [self._keys.document(document_id), self._keys.documents]
        if "size" in fields:  # the owner's tally changes in the same step
            pairs = [item for field in values.items() for item in field]
            prefix = self._keys.document_bytes("")
            await self._put_sized(keys=keys, args=[document_id, prefix, *pairs])
            return
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(keys[0], mapping=values)
            pipe.sadd(keys[1], document_id)
            await pipe.execute()

    async def stored_bytes(self, owner: str, *, besides: str | None = None) -> int:
        """The bytes of the owner's documents, but for the document `besides` (one that an
        upload is about to replace). One round trip; Valkey adds up one entry per document."""
        key = self._keys.document_bytes(owner)
        return int(await self._stored_bytes(keys=[key], args=[besides or ""]))

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

    async def all(self, owner: str | None = None) -> list[DocumentView]:
        """Every document (of `owner`, if given), most recently ingested first. An owner's
        documents are the keys of its byte tally, so a listing reads that owner's entries
        only."""
        ids: set[bytes] | list[bytes]
        if owner is None:
            ids = await self._redis.smembers(self._keys.documents)  # type: ignore[misc]
        else:
            ids = await self._redis.hkeys(self._keys.document_bytes(owner))  # type: ignore[misc]
        async with self._redis.pipeline(transaction=False) as pipe:
            for document_id in ids:
                pipe.hgetall(self._keys.document(document_id.decode()))
            entries: list[dict[bytes, bytes]] = await pipe.execute()
        views = [_view(raw) for raw in entries if raw]
        return sorted(views, key=lambda view: (-(view.ingested_at or 0.0), view.title))

    async def count(self, collection: str) -> int:
        """How many documents of a collection (its stored name) are indexed: two fields of
        each entry, read in one pipeline."""
        ids: set[bytes] = await self._redis.smembers(self._keys.documents)  # type: ignore[misc]
        async with self._redis.pipeline(transaction=False) as pipe:
            for document_id in ids:
                pipe.hmget(self._keys.document(document_id.decode()), ["collection", "status"])
            entries: list[list[bytes | None]] = await pipe.execute()
        wanted = collection.encode()
        return sum(
            1
            for stored, status in entries
            if (stored or b"default") == wanted and status == b"indexed"
        )

    async def failed(self, document_id: str, job_id: str, reason: str) -> None:
        """The document's job `job_id` ended without doing its work (failed, dead-lettered
        or cancelled): its entry says why, and a version never indexed counts no bytes."""
        keys = [self._keys.document(document_id)]
        args = [document_id, self._keys.document_bytes(""), job_id, reason]
        await self._failed(keys=keys, args=args)

    async def remove(self, document_id: str) -> None:
        keys = [self._keys.document(document_id), self._keys.documents]
        await self._remove(keys=keys, args=[document_id, self._keys.document_bytes("")])


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
        collection=shown_collection(fields.get("collection") or "default"),
        status=fields.get("status", "queued"),
        chunks=None if chunks is None else int(chunks),
        size=None if size is None else int(size),
        ingested_at=number("ingested_at"),
        job_id=fields.get("job_id") or None,
        error=fields.get("error") or None,
        owner=fields.get("owner") or None,
    )
