"""What a webhook says: the job's end, as JSON. Built from the ended job's record, which no
longer changes, so every try of a message sends the same bytes."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson

from rag_async.domain.job import JobRecord


def payload(record: JobRecord, event: str) -> str:
    """`{type, timestamp, data: {job_id, kind, status, error, answer | document_id}}` (a
    search's `answer` says how many sources it found; they are at GET /jobs/{id})."""
    data: dict[str, Any] = {
        "job_id": record.job_id,
        "kind": record.kind,
        "status": record.status.value,
        "error": record.error,
    }
    if record.kind in ("answer", "search"):
        data["answer"] = record.answer
    else:
        data["document_id"] = record.document_id
    ended = record.finished_at or record.created_at or 0.0
    timestamp = datetime.fromtimestamp(ended, tz=UTC).isoformat().replace("+00:00", "Z")
    return orjson.dumps({"type": event, "timestamp": timestamp, "data": data}).decode()
