"""Request and response models of the HTTP API."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from .events import Source


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: str = Field(description="The question. Its length limit is RAG_MAX_QUERY_CHARS.")


class JobAccepted(BaseModel):
    job_id: str
    status: str = "queued"
    status_url: str
    events_url: str


class DocumentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str
    title: str | None = Field(default=None, max_length=500)
    source: str | None = Field(default=None, max_length=2000)
    document_id: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9._:-]{1,128}$",
        description="Re-using an id replaces that document. Defaults to one derived from "
        "`source` (or `title`), so ingesting the same file again replaces it.",
    )


class DocumentAccepted(JobAccepted):
    document_id: str


class JobView(BaseModel):
    """The job record as `/job-status` and `/jobs/{id}` tell it."""

    job_id: str
    kind: str
    status: str
    stage: str | None = None
    attempt: int = 0
    worker: str | None = Field(
        default=None, description='Who runs (or ran) the latest attempt, as "hostname:pid".'
    )
    query: str | None = None
    answer: str | None = None
    answer_is_partial: bool = False
    sources: list[Source] = []
    timings: dict[str, float] = {}
    providers: dict[str, str] = {}
    error: str | None = None
    document_id: str | None = None
    chunks: int | None = None
    created_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    last_event_id: int = 0
    queue_position: int | None = Field(
        default=None,
        description="While queued: 1 + the unfinished jobs ahead of it (running ones included).",
    )
    events_url: str


class JobCancelled(BaseModel):
    job_id: str
    status: Literal["cancelled", "cancelling"]


class ErrorDetail(BaseModel):
    code: str
    message: str
    details: list[dict[str, Any]] | None = None


class ErrorBody(BaseModel):
    error: ErrorDetail
