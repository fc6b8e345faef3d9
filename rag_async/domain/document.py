"""A document as the registry holds it, typed: its current version and the job that owns it.

A document has ONE current version: the chunks one ingestion job wrote (`version`, that
job's id, also on every chunk's payload). The newest job accepted for the document owns it
(`job_id`): an ingestion that would become the next version, or a deletion. Only the owner's
writes reach the registry (store/documents.py fences them), so a superseded job can neither
switch the document to its version nor bring a deleted one back; it removes what it wrote.

`versions` are the versions that may have chunks in the store (the current one, and any
whose ingestion started and has not cleaned up yet): what a switch or a deletion removes.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict

from rag_async.domain.filters import AttributeValue
from rag_async.domain.identity import shown_collection
from rag_async.domain.schemas import DocumentView

# A field `<VERSION_FIELD><job id>` of the document's hash marks a version that may have
# chunks in the store.
VERSION_FIELD = "v:"


class DocumentStatus(StrEnum):
    """Where the document stands: a version on its way (queued, ingesting), a current version
    searchable (indexed: if a newer one failed or was cancelled, `error` says so), a deletion
    under way, or no version at all because its only one failed or was cancelled."""

    QUEUED = "queued"
    INGESTING = "ingesting"
    INDEXED = "indexed"
    DELETING = "deleting"
    FAILED = "failed"
    CANCELLED = "cancelled"


class DocumentRecord(BaseModel):
    """Every field of a document's registry hash; a missing or empty one reads as None."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    document_id: str
    title: str | None = None
    source: str | None = None
    filename: str | None = None
    format: str | None = None
    collection: str = "default"
    owner: str | None = None  # the API key that added it
    status: DocumentStatus = DocumentStatus.QUEUED
    job_id: str | None = None  # the job that owns the document now: the newest accepted
    version: str | None = None  # the job whose chunks are the current version
    chunks: int | None = None  # of the current version
    size: int | None = None  # bytes of the current version
    pending_size: int | None = None  # bytes of the version on its way, if any
    fingerprint: str | None = None  # what the current version's chunks follow from
    content_sha256: str | None = None
    ingested_at: float | None = None
    error: str | None = None
    attributes: dict[str, AttributeValue] = {}  # the current version's (JSON)
    versions: frozenset[str] = frozenset()

    @classmethod
    def from_hash(cls, raw: Mapping[bytes, bytes]) -> DocumentRecord:
        fields: dict[str, Any] = {}
        versions = set()
        for key, value in raw.items():
            name, text = key.decode(), value.decode()
            if name.startswith(VERSION_FIELD):
                versions.add(name.removeprefix(VERSION_FIELD))
            elif name == "attributes":
                fields[name] = orjson.loads(text or "{}")
            elif text:
                fields[name] = text
        return cls.model_validate(fields | {"versions": frozenset(versions)})

    def view(self) -> DocumentView:
        """The document as the API shows it."""
        return DocumentView(
            document_id=self.document_id,
            title=self.title or self.filename or "untitled",
            source=self.source,
            filename=self.filename,
            format=self.format,
            collection=shown_collection(self.collection),
            status=self.status,
            chunks=self.chunks,
            size=self.size if self.size is not None else self.pending_size,
            ingested_at=self.ingested_at,
            job_id=self.job_id,
            version=self.version,
            error=self.error,
            owner=self.owner,
            attributes=self.attributes,
        )
