"""The document registry: what has been ingested, where, and which job owns each document.

A hash per document (`Keys.document`, a `DocumentRecord`) and a set of ids (`Keys.documents`).
Chunks live in Qdrant; this is the index of them that a listing can read without touching
Qdrant (which only the worker may open, when embedded).

A document has one current version (domain/document.py). The API makes the job it accepts
the document's owner (`accept`); every later write of a job is one Lua step that first checks
that the job still owns the document, and is refused (None or False) when a newer upload or
a deletion has taken it over: a superseded job can neither switch the document to its own
version nor bring a deleted document back.

Each owner's stored bytes, for the per-key quota, are a hash of document id -> size
(`Keys.document_bytes`), written in the same step as every status change: the pending
version's size while one is queued or ingesting (so uploads running at once are held to the
quota), else the current version's (0 with none). A document moved to another owner moves
with it; its removal drops it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass

import structlog
from redis.asyncio import Redis

from rag_async.domain.document import VERSION_FIELD, DocumentRecord, DocumentStatus
from rag_async.domain.job import stored_value
from rag_async.store.keys import Keys

log = structlog.get_logger(__name__)

# The owner's tally follows the entry (KEYS[1]); ARGV[1] is the document id, ARGV[2] the
# prefix of the owners' tallies.
_TALLY = """
local function tally()
  local owner = redis.call('HGET', KEYS[1], 'owner') or ''
  local bytes = redis.call('HGET', KEYS[1], 'pending_size') or redis.call('HGET', KEYS[1], 'size')
  if not bytes or bytes == '' then bytes = '0' end
  redis.call('HSET', ARGV[2] .. owner, ARGV[1], bytes)
end
"""

# KEYS: the document's hash, the set of ids. ARGV: the document id, the tallies' prefix, then
# fields and values (the new owner job among them). A version superseded while pending is
# not counted any more. Returns what `_WITHDRAW` needs to undo it: whether the entry
# existed, and its owner job, status, error and pending size before.
_ACCEPT = (
    _TALLY
    + """
local before = redis.call('HMGET', KEYS[1], 'owner', 'job_id', 'status', 'error', 'pending_size')
local existed = redis.call('EXISTS', KEYS[1])
redis.call('HDEL', KEYS[1], 'pending_size')
redis.call('HSET', KEYS[1], unpack(ARGV, 3))
redis.call('SADD', KEYS[2], ARGV[1])
local owner = redis.call('HGET', KEYS[1], 'owner') or ''
if before[1] and before[1] ~= owner then redis.call('HDEL', ARGV[2] .. before[1], ARGV[1]) end
tally()
return {existed, before[2] or '', before[3] or '', before[4] or '', before[5] or ''}
"""
)

# KEYS: the document's hash, the set of ids. ARGV: the document id, the tallies' prefix, the
# job whose acceptance is undone, then `_ACCEPT`'s answer. Nothing if a newer job owns it.
_WITHDRAW = (
    _TALLY
    + """
if redis.call('HGET', KEYS[1], 'job_id') ~= ARGV[3] then return 0 end
if ARGV[4] == '0' then
  redis.call('HDEL', ARGV[2] .. (redis.call('HGET', KEYS[1], 'owner') or ''), ARGV[1])
  redis.call('DEL', KEYS[1])
  redis.call('SREM', KEYS[2], ARGV[1])
  return 1
end
redis.call('HSET', KEYS[1], 'job_id', ARGV[5], 'status', ARGV[6], 'error', ARGV[7])
if ARGV[8] ~= '' then redis.call('HSET', KEYS[1], 'pending_size', ARGV[8]) end
tally()
return 1
"""
)

# KEYS: the document's hash. ARGV: the document id, the tallies' prefix, the job, the number
# n of fields to delete, those n fields, then fields and values to set. Refused (nil) unless
# the job owns the document. Else the versions that may have chunks in the store, but the
# job's own: those marked `v:<job id>`, and '' for chunks written before versions existed
# (a document indexed with no version recorded).
_OWNED_WRITE = (
    _TALLY
    + """
if redis.call('HGET', KEYS[1], 'job_id') ~= ARGV[3] then return false end
local others = {}
if not redis.call('HGET', KEYS[1], 'version') and redis.call('HGET', KEYS[1], 'chunks') then
  others[1] = ''
end
local n = tonumber(ARGV[4])
if n > 0 then redis.call('HDEL', KEYS[1], unpack(ARGV, 5, 4 + n)) end
if #ARGV > 4 + n then redis.call('HSET', KEYS[1], unpack(ARGV, 5 + n)) end
tally()
local own = 'v:' .. ARGV[3]
for _, name in ipairs(redis.call('HKEYS', KEYS[1])) do
  if string.sub(name, 1, 2) == 'v:' and name ~= own then
    others[#others + 1] = string.sub(name, 3)
  end
end
return others
"""
)

# KEYS: the document's hash. ARGV: the document id, the tallies' prefix, the job, how it
# ended (failed, cancelled), why. Refused (0) unless the job owns the document. A deletion
# that did not finish leaves the document failed: it may be half gone. Else a document that
# keeps a current version stays indexed (its error says what became of the newer one).
_ENDED = (
    _TALLY
    + """
if redis.call('HGET', KEYS[1], 'job_id') ~= ARGV[3] then return 0 end
local status = ARGV[4]
if redis.call('HGET', KEYS[1], 'status') == 'deleting' then status = 'failed'
elseif redis.call('HGET', KEYS[1], 'chunks') then status = 'indexed' end
redis.call('HSET', KEYS[1], 'status', status, 'error', ARGV[5])
redis.call('HDEL', KEYS[1], 'pending_size')
tally()
return 1
"""
)

# KEYS: the document's hash, the set of ids. ARGV: the document id, the tallies' prefix, the
# job. The entry goes if the job owns the document.
_OWNED_REMOVE = """
if redis.call('HGET', KEYS[1], 'job_id') ~= ARGV[3] then return 0 end
redis.call('HDEL', ARGV[2] .. (redis.call('HGET', KEYS[1], 'owner') or ''), ARGV[1])
redis.call('DEL', KEYS[1])
redis.call('SREM', KEYS[2], ARGV[1])
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

Fields = Mapping[str, str | int | float]


@dataclass(frozen=True, slots=True)
class Accepted:
    """What `DocumentRegistry.accept` replaced, so that `withdraw` can put it back."""

    existed: bool
    before: tuple[str, str, str, str]  # owner job, status, error, pending size ('' if none)


class DocumentRegistry:
    def __init__(self, redis: Redis, keys: Keys) -> None:
        self._redis = redis
        self._keys = keys
        self._accept = redis.register_script(_ACCEPT)
        self._withdraw = redis.register_script(_WITHDRAW)
        self._owned_write = redis.register_script(_OWNED_WRITE)
        self._owned_remove = redis.register_script(_OWNED_REMOVE)
        self._ended = redis.register_script(_ENDED)
        self._stored_bytes = redis.register_script(_STORED_BYTES)

    # The API's writes: a job accepted makes it the document's owner.

    async def accept(
        self, document_id: str, job_id: str, fields: Fields, *, size: int | None = None
    ) -> Accepted:
        """Make `job_id` the document's owner, with `fields` (status and owner among them).
        `size` is the bytes of the version it ingests (none for a deletion): counted while it
        is pending. Done before the job is queued, so that the job finds itself the owner."""
        values = {**fields, "document_id": document_id, "job_id": job_id}
        if size is not None:
            values["pending_size"] = size
        answer = await self._accept(
            keys=self._entry(document_id), args=self._args(document_id, values)
        )
        existed, *before = (
            value.decode() if isinstance(value, bytes) else str(value) for value in answer
        )
        return Accepted(existed == "1", (before[0], before[1], before[2], before[3]))

    async def withdraw(self, document_id: str, job_id: str, accepted: Accepted) -> None:
        """Undo `accept` for a job that could not be queued after all, unless a newer job
        owns the document since."""
        args = [*self._args(document_id, {}), job_id, "1" if accepted.existed else "0"]
        await self._withdraw(keys=self._entry(document_id), args=[*args, *accepted.before])

    @asynccontextmanager
    async def owned_by(
        self, document_id: str, job_id: str, fields: Fields, *, size: int | None = None
    ) -> AsyncIterator[None]:
        """`accept` the job, and `withdraw` it if the block (queuing the job) fails. The
        block's error is the one raised: a withdrawal that fails too is only logged (the
        next job accepted for the document takes it over anyway)."""
        accepted = await self.accept(document_id, job_id, fields, size=size)
        try:
            yield
        except BaseException:
            try:
                await self.withdraw(document_id, job_id, accepted)
            except Exception as error:
                log.warning("document not given back", document_id=document_id, error=str(error))
            raise

    # A job's writes, each refused once the job no longer owns the document.

    async def owns(self, document_id: str, job_id: str) -> bool:
        owner = await self._redis.hget(self._keys.document(document_id), "job_id")  # type: ignore[misc]
        return owner is not None and owner.decode() == job_id

    async def begin_version(self, document_id: str, job_id: str) -> bool:
        """The job's version is about to write chunks: marked, so that whoever replaces or
        deletes the document removes them even if the job never cleans up."""
        fields: Fields = {"status": DocumentStatus.INGESTING, f"{VERSION_FIELD}{job_id}": 1}
        return await self._owned(document_id, job_id, fields) is not None

    async def keep_version(self, document_id: str, job_id: str) -> bool:
        """The job found its version indexed already: the current one stays, as indexed."""
        fields = {"status": DocumentStatus.INDEXED, "error": ""}
        return await self._owned(document_id, job_id, fields, clear=["pending_size"]) is not None

    async def switch_version(
        self, document_id: str, job_id: str, fields: Fields
    ) -> list[str] | None:
        """Make the job's version the current one, with `fields` (its size and chunks among
        them). Returns the other versions that may have chunks, for the caller to delete
        (then `forget_versions`), or None if the job no longer owns the document."""
        values = {**fields, "status": DocumentStatus.INDEXED, "version": job_id, "error": ""}
        return await self._owned(document_id, job_id, values, clear=["pending_size"])

    async def begin_deletion(self, document_id: str, job_id: str) -> list[str] | None:
        """The versions a deletion job must remove the chunks of (every one), or None if the
        job no longer owns the document."""
        return await self._owned(document_id, job_id, {})

    async def remove(self, document_id: str, job_id: str) -> bool:
        """Drop the entry (and its bytes), if the job still owns the document."""
        args = [*self._args(document_id, {}), job_id]
        return bool(await self._owned_remove(keys=self._entry(document_id), args=args))

    async def version_ended(
        self, document_id: str, job_id: str, status: DocumentStatus, reason: str
    ) -> bool:
        """The job ended without its work done (`status`: failed, cancelled): the entry says
        why and counts the current version's bytes only; a document that keeps a current
        version stays indexed. Nothing changes if a newer job owns the document."""
        args = [*self._args(document_id, {}), job_id, status, reason]
        return bool(await self._ended(keys=[self._keys.document(document_id)], args=args))

    async def forget_versions(self, document_id: str, versions: Sequence[str]) -> None:
        """These versions' chunks are deleted: no longer anyone's to remove. (Not fenced: it
        only drops marks, and never brings a removed entry back.)"""
        named = [f"{VERSION_FIELD}{version}" for version in versions if version]
        if named:
            await self._redis.hdel(self._keys.document(document_id), *named)  # type: ignore[misc]

    async def _owned(
        self, document_id: str, job_id: str, fields: Fields, *, clear: Sequence[str] = ()
    ) -> list[str] | None:
        args = [*self._args(document_id, {}), job_id, str(len(clear)), *clear]
        args += [item for pair in fields.items() for item in (pair[0], stored_value(pair[1]))]
        others = await self._owned_write(keys=[self._keys.document(document_id)], args=args)
        return None if others is None else [version.decode() for version in others]

    def _entry(self, document_id: str) -> list[str]:
        return [self._keys.document(document_id), self._keys.documents]

    def _args(self, document_id: str, fields: Fields) -> list[str]:
        pairs = [item for pair in fields.items() for item in (pair[0], stored_value(pair[1]))]
        return [document_id, self._keys.document_bytes(""), *pairs]

    # Reads.

    async def stored_bytes(self, owner: str, *, besides: str | None = None) -> int:
        """The bytes of the owner's documents, but for the document `besides` (one that an
        upload is about to replace). One round trip; Valkey adds up one entry per document."""
        key = self._keys.document_bytes(owner)
        return int(await self._stored_bytes(keys=[key], args=[besides or ""]))

    async def get(self, document_id: str) -> DocumentRecord | None:
        raw: dict[bytes, bytes] = await self._redis.hgetall(self._keys.document(document_id))  # type: ignore[misc]
        return DocumentRecord.from_hash(raw) if raw else None

    async def all(self, owner: str | None = None) -> list[DocumentRecord]:
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
        records = [DocumentRecord.from_hash(raw) for raw in entries if raw]
        return sorted(records, key=lambda r: (-(r.ingested_at or 0.0), r.title or r.filename or ""))

    async def count(self, collection: str) -> int:
        """How many documents of a collection (its stored name) have a current version: two
        fields of each entry, read in one pipeline."""
        ids: set[bytes] = await self._redis.smembers(self._keys.documents)  # type: ignore[misc]
        async with self._redis.pipeline(transaction=False) as pipe:
            for document_id in ids:
                pipe.hmget(self._keys.document(document_id.decode()), ["collection", "chunks"])
            entries: list[list[bytes | None]] = await pipe.execute()
        wanted = collection.encode()
        return sum(1 for stored, chunks in entries if (stored or b"default") == wanted and chunks)
