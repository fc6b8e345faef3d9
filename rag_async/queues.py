"""Which queue each kind of job waits in, and which worker function runs it.

Questions and documents wait in separate queues, each served by its own arq worker inside every
worker process (workers/settings.py). A burst of uploads does not hold up a question queued
behind it, each queue has its own concurrency, and arq's in-progress TTL, which follows the
longest job timeout of a worker, is a question's own rather than a long ingestion's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Lane = Literal["questions", "documents"]
LANES: tuple[Lane, ...] = ("questions", "documents")


@dataclass(frozen=True, slots=True)
class JobKind:
    function: str  # the arq function name
    lane: Lane


JOB_KINDS = {
    "chat": JobKind("answer_question", "questions"),
    "ingest": JobKind("ingest_document", "documents"),
    "delete": JobKind("delete_document", "documents"),
}
