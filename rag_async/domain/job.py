"""The job record, typed: what one Redis hash per job holds, parsed in one place and written
through one encoder, so no module spells a field name or formats a timestamp of its own.

The hash keeps plain strings (JSON for structured fields) so that the event log's Lua script
can update fields in the same atomic step that appends an event (eventlog.py).
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping
from enum import StrEnum
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict

from rag_async.domain.filters import AttributeValue, Filter
from rag_async.domain.generation import Generation, Incomplete, Usage
from rag_async.domain.sources import Source
from rag_async.store.conversations import Turn
from rag_async.store.fair_share import Priority
from rag_async.store.queue import Kind

# 128 random bits as 32 hex characters: unguessable, and easy to tell from anything else.
_JOB_ID = re.compile(r"[0-9a-f]{32}")


def new_job_id() -> str:
    return secrets.token_hex(16)


# The header that names the job whose answer a response carries, where the body cannot: a
# stream started on the request that queued the job (POST /chat, the /v1 routes). A client
# that drops resumes at /jobs/{id}/events.
JOB_ID_HEADER = "x-rag-job-id"


def is_job_id(value: str) -> bool:
    return _JOB_ID.fullmatch(value) is not None


class JobStatus(StrEnum):
    QUEUED = "queued"
    IN_PROGRESS = "in_progress"
    COMPLETE = "complete"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def ended(self) -> bool:
        return self in (JobStatus.COMPLETE, JobStatus.FAILED, JobStatus.CANCELLED)


# How a job ended, written with its last event (its `outcome`): what its end's bookkeeping
# does (worker/ends.py) follows from it, whoever finishes that bookkeeping.
Ending = Literal["complete", "failed", "dead_lettered", "cancelled"]


class IngestProgress(BaseModel):
    """An ingestion's latest `progress` event: `done` of `total` units of `stage`."""

    stage: str
    done: int
    total: int


class WebhookAttempt(BaseModel):
    """One try at delivering a job's webhook: the receiver's HTTP status, or why none came."""

    at: float
    status: int | None = None
    error: str | None = None


class WebhookDelivery(BaseModel):
    """A job's webhook (rag_async/webhooks/): where, the message's id (the same on every try,
    so a receiver can drop a repeat) and its event once the job has ended, and how it went."""

    url: str
    state: Literal["pending", "delivered", "failed"] = "pending"
    id: str | None = None
    event: str | None = None
    attempts: list[WebhookAttempt] = []


class JobRecord(BaseModel):
    """Every field a job's hash may hold; a missing or empty one reads as its default."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    job_id: str
    kind: Kind = "answer"
    status: JobStatus = JobStatus.QUEUED
    stage: str | None = None
    attempt: int = 0  # the latest attempt's number: the event log's fence (eventlog.py)
    seq: int = 0  # the id of the job's latest event
    worker: str | None = None
    request_id: str | None = None
    # The W3C trace context the worker continues (tracing.py), when the request had one.
    traceparent: str | None = None
    owner: str | None = None  # the name of the API key that created it (none: the local user)
    # Its place in the scheduler's order among its owner's jobs (store/fair_share.py).
    priority: Priority = "interactive"
    # What was asked: a question, or a document to ingest or delete.
    query: str | None = None
    collection: str | None = None
    # What a question's or a search's retrieval keeps to: documents whose attributes match.
    filters: Filter | None = None
    # The collections searched with `collection`, their results merged (a /v1 file_search
    # over several vector stores).
    more_collections: list[str] = []
    # A search's own bounds (POST /search), and a /v1 search's or file_search's (with the
    # lowest relevance, domain/relevance.py); without them, the settings'.
    top_k: int | None = None
    score_threshold: float | None = None
    min_relevance: float | None = None
    document_id: str | None = None
    title: str | None = None
    source: str | None = None
    filename: str | None = None
    format: str | None = None
    attributes: dict[str, AttributeValue] | None = None  # what an ingestion gives its chunks
    # A document's own chunk size and overlap, in tokens (a vector store file's static
    # `chunking_strategy`); none: the retriever's (RAG_CHUNK_TOKENS, RAG_CHUNK_OVERLAP).
    chunk_tokens: int | None = None
    chunk_overlap: int | None = None
    # A question's conversation (if any) and the earlier turns it was asked with; in a
    # conversation its worker reads them afresh when the answer starts (conversations.py).
    conversation_id: str | None = None
    history: list[Turn] = []
    # A /v1 response asked while the one it follows (`follows`, a job id; none in a
    # conversation) was still answering, and its `multitask` choice: its worker waits for that
    # one to end and puts its turn before `history` (worker/answering.py `followed_turns`).
    follows: str | None = None
    multitask: str | None = None
    # What the client asked of the generation (instructions, token limit, temperature, stop).
    generation: Generation | None = None
    # What a /v1 request asked that only its response object echoes (metadata, store,
    # background, previous_response_id, text, truncation): api/openai_compat/echo.py.
    v1: dict[str, Any] = {}
    # How it went.
    search_query: str | None = None  # what retrieval looked for, when the history changed it
    sources: list[Source] = []
    answer: str | None = None
    chunks: int | None = None
    usage: Usage | None = None  # the tokens the answer took, as its LLM counted them
    incomplete: Incomplete | None = None  # why the answer stopped short, if it did
    progress: IngestProgress | None = None
    timings: dict[str, float] = {}
    providers: dict[str, str] = {}
    error: str | None = None
    # How the job ended (with its last event), and the id of the last event whose end's
    # bookkeeping is done (store/jobs.py `settle`): an ended job whose `settled` is not its
    # `seq` has bookkeeping left (store/ending.py).
    outcome: Ending | None = None
    settled: int = 0
    cancel_requested: bool = False
    deleted: bool = False  # deleted by its owner: read by nobody until it expires
    webhook: WebhookDelivery | None = None  # its URL is given when the job is created only
    created_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None

    @classmethod
    def from_hash(cls, job_id: str, raw: Mapping[bytes, bytes]) -> JobRecord:
        fields: dict[str, Any] = {"job_id": job_id}
        for key, value in raw.items():
            name, text = key.decode(), value.decode()
            if text:
                fields[name] = orjson.loads(text) if name in _JSON_FIELDS else text
        if fields.get("kind") == "chat":  # an answer's record written before kinds had one name
            fields["kind"] = "answer"
        return cls.model_validate(fields)

    @property
    def last_event_id(self) -> int:
        return self.seq


_JSON_FIELDS = frozenset(
    {
        "sources",
        "progress",
        "timings",
        "providers",
        "webhook",
        "history",
        "generation",
        "v1",
        "usage",
        "filters",
        "attributes",
        "more_collections",
    }
)


def record_fields(**values: Any) -> dict[str, str]:
    """Typed values as the hash stores them: the one place that formats a field.

    A name that is not a field of `JobRecord` is a bug, caught here rather than stored.
    None (or False) clears a field.
    """
    encoded: dict[str, str] = {}
    for name, value in values.items():
        if name not in JobRecord.model_fields or name == "job_id":
            raise KeyError(f"{name!r} is not a field of the job record")
        encoded[name] = stored_value(value)
    return encoded


def stored_value(value: Any) -> str:
    """A value as a Redis hash field holds it: the one place that formats timestamps (and
    other numbers, flags and JSON) for the job record and the document registry alike."""
    if value is None or value is False:
        return ""
    if value is True:
        return "1"
    if isinstance(value, str):  # a StrEnum too
        return str(value)
    if isinstance(value, float):
        return f"{value:.6f}"  # timestamps: microseconds are plenty
    if isinstance(value, int):
        return str(value)
    return orjson.dumps(value, default=_model_dump).decode()


def _model_dump(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    raise TypeError(f"cannot store {type(value).__name__} in a job record")
