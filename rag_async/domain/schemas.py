"""Request and response models of the HTTP API."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from rag_async.domain.filters import FILTERS_DESCRIPTION, Attributes, AttributeValue, Filter
from rag_async.domain.job import IngestProgress, JobStatus, WebhookDelivery
from rag_async.domain.sources import VIEW_MAX_SOURCES, Source
from rag_async.domain.text import clean
from rag_async.store.fair_share import Priority
from rag_async.store.queue import Kind

# A document collection's name: the same alphabet as document ids, shorter.
COLLECTION_PATTERN = r"^[A-Za-z0-9._-]{1,64}$"
# A conversation's id, chosen by its client: the alphabet of document ids.
CONVERSATION_PATTERN = r"^[A-Za-z0-9._:-]{1,128}$"


# What "Try it out" in /docs fills in: a body that works as it is, on a fresh `rag-async up`
# (the fields left out take their defaults; a made-up collection or webhook would be refused).
EXAMPLE_QUESTION = "How do I handle exceptions in Python?"

# What a conversation's question does when an earlier one is still answering (double-texting):
# `reject` it (409), `enqueue` it after them (their answers in its history), `interrupt` them
# (cancelled; what they had answered stays in the history) or `rollback` them (cancelled and
# gone from the history, questions and all). worker/answering.py.
Multitask = Literal["reject", "enqueue", "interrupt", "rollback"]
MULTITASK_DESCRIPTION = (
    "When an earlier question of the conversation is still answering: `enqueue` (the default) "
    "runs this one after it, with its answer in the history; `reject` refuses this one (409); "
    "`interrupt` cancels it, keeping its partial answer in the history (marked `interrupted`); "
    "`rollback` cancels it and removes it from the history."
)


class ChatRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"query": EXAMPLE_QUESTION}]}
    )

    query: str = Field(description="The question. Its length limit is RAG_MAX_QUERY_CHARS.")
    collection: str | None = Field(
        default=None,
        pattern=COLLECTION_PATTERN,
        description="Search this collection only; RAG_DEFAULT_COLLECTION when not given.",
    )
    webhook_url: str | None = Field(
        default=None,
        max_length=2048,
        description="POSTed to (signed, Standard Webhooks) when the job ends; "
        "RAG_WEBHOOK_URL when not given. Only hosts RAG_WEBHOOK_HOSTS allows.",
    )
    conversation_id: str | None = Field(
        default=None,
        pattern=CONVERSATION_PATTERN,
        description="Ask within this conversation (begun by its first question): the prompt "
        "carries its latest turns, and the search what the previous question was about. "
        "Read it at GET /conversations/{id}.",
    )
    multitask: Multitask = Field(default="enqueue", description=MULTITASK_DESCRIPTION)
    filters: Filter | None = Field(default=None, description=FILTERS_DESCRIPTION)


class SearchRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"query": EXAMPLE_QUESTION, "top_k": 5}]}
    )

    query: str = Field(description="What to look for. Its length limit is RAG_MAX_QUERY_CHARS.")
    collection: str | None = Field(
        default=None,
        pattern=COLLECTION_PATTERN,
        description="Search this collection only; RAG_DEFAULT_COLLECTION when not given.",
    )
    top_k: int | None = Field(
        default=None,
        strict=True,  # 5, not "5" or true
        ge=1,
        le=VIEW_MAX_SOURCES,
        description="How many passages, best first; RAG_TOP_K (what an answer gets) when not "
        "given.",
    )
    score_threshold: float | None = Field(
        default=None,
        strict=True,
        allow_inf_nan=False,
        description="Leave out passages scoring below this. The scale is the retrieval's: BM25 "
        "offline, reciprocal rank fusion when hybrid (the job's `providers.retrieval` says).",
    )
    filters: Filter | None = Field(default=None, description=FILTERS_DESCRIPTION)


class SearchResults(BaseModel):
    """The passages found, best first, numbered as an answer would cite them."""

    job_id: str = Field(description="The search's job: GET /jobs/{id} shows it, timings too.")
    results: list[Source]


class JobAccepted(BaseModel):
    job_id: str
    status: str = "queued"
    status_url: str
    events_url: str


class QuestionAccepted(JobAccepted):
    conversation_id: str | None = None


class DocumentIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "text": "Green tea is steeped at 80 °C for two minutes.",
                    "title": "Tea",
                    "source": "tea.md",
                }
            ]
        },
    )

    text: str
    title: str | None = Field(default=None, max_length=500)
    source: str | None = Field(default=None, max_length=2000)
    document_id: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9._:-]{1,200}$",
        description="Re-using an id replaces that document. An id is the key's own: stored "
        "(and answered) as `<key name>:<id>`, which names it too. Defaults to one derived "
        "from `source` (or `title`) and the collection, so ingesting the same file again "
        "replaces it.",
    )
    collection: str | None = Field(
        default=None,
        pattern=COLLECTION_PATTERN,
        description="The collection to add it to; RAG_DEFAULT_COLLECTION when not given.",
    )
    attributes: Attributes | None = None
    webhook_url: str | None = Field(
        default=None,
        max_length=2048,
        description="POSTed to (signed, Standard Webhooks) when the job ends; "
        "RAG_WEBHOOK_URL when not given. Only hosts RAG_WEBHOOK_HOSTS allows.",
    )


class AcceptedDocument(BaseModel):
    """One file (or JSON document) of an upload, queued as its own ingestion job."""

    document_id: str
    job_id: str
    filename: str | None = None
    status_url: str
    events_url: str


class RejectedFile(BaseModel):
    """A file of a multipart upload refused at upload time; the others still ingest."""

    filename: str
    status: int = Field(description="The HTTP status this file alone would have had.")
    code: str
    message: str


class DocumentAccepted(JobAccepted):
    """`job_id`/`document_id` are the first document's (all of them for a JSON body); a
    multipart upload lists every accepted file in `documents` and every refused one in
    `rejected`."""

    document_id: str
    documents: list[AcceptedDocument] = []
    rejected: list[RejectedFile] = []


class DocumentView(BaseModel):
    """A document as the registry knows it."""

    document_id: str
    title: str
    source: str | None = None
    filename: str | None = None
    format: str | None = None
    collection: str
    status: Literal["queued", "ingesting", "indexed", "failed", "cancelled", "deleting"] = Field(
        description="indexed: a version is searchable (`error`: a newer one that failed)."
    )
    chunks: int | None = Field(default=None, description="Of the current version.")
    size: int | None = Field(
        default=None,
        description="Bytes of the uploaded file or text (the current version's, if any).",
    )
    ingested_at: float | None = None
    job_id: str | None = Field(default=None, description="The latest job on this document.")
    version: str | None = Field(
        default=None,
        description="The ingestion job whose chunks are searchable; none before one ends.",
    )
    error: str | None = None
    owner: str | None = Field(default=None, description="The name of the API key that added it.")
    attributes: dict[str, AttributeValue] = Field(
        default={}, description="The current version's: what a search's `filters` compare."
    )

    # What its uploader wrote, without terminal control characters (domain/text.py).
    _clean = field_validator("title", "source", "filename")(clean)


class DocumentList(BaseModel):
    documents: list[DocumentView]


class JobView(BaseModel):
    """The job record as `/job-status` and `/jobs/{id}` tell it."""

    job_id: str
    kind: Kind
    status: JobStatus
    stage: str | None = None
    attempt: int = 0
    worker: str | None = Field(
        default=None, description='Who runs (or ran) the latest attempt, as "hostname:pid".'
    )
    query: str | None = None
    conversation_id: str | None = Field(
        default=None, description="The conversation a question was asked in (if any)."
    )
    filters: Filter | None = Field(
        default=None, description="What a question's search kept to (`POST /chat`'s)."
    )
    attributes: dict[str, AttributeValue] | None = Field(
        default=None, description="What an ingestion gives its document's chunks."
    )
    answer: str | None = None
    answer_is_partial: bool = False
    sources: list[Source] = []
    timings: dict[str, float] = {}
    providers: dict[str, str] = {}
    error: str | None = None
    document_id: str | None = None
    chunks: int | None = None
    progress: IngestProgress | None = None
    created_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    last_event_id: int = 0
    webhook: WebhookDelivery | None = Field(
        default=None, description="The job's webhook: its URL, state and every try so far."
    )
    queue_position: int | None = Field(
        default=None,
        description="While queued: 1 + the unfinished jobs ahead of it (running ones included), "
        "in the order the fair-share scheduler will hand them to the workers.",
    )
    priority: Priority = Field(
        default="interactive",
        description="interactive (a client waits for it) or background (a background /v1 "
        "response, an ingestion): interactive jobs are handed to the workers first.",
    )
    events_url: str


class JobCancelled(BaseModel):
    job_id: str
    status: Literal["cancelled", "cancelling"]


class WebhookRequeued(BaseModel):
    job_id: str
    webhook_id: str  # the message's id: the same as its earlier tries'
    state: Literal["pending"] = "pending"
    status_url: str  # the job, whose `webhook` shows how the delivery goes


class ErrorDetail(BaseModel):
    code: str
    message: str
    details: list[dict[str, Any]] | None = None


class ErrorBody(BaseModel):
    error: ErrorDetail
