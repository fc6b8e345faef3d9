"""The job record as the API shows it. A running answer's partial text is read from the
event log, so polling and streaming tell exactly the same story."""

from __future__ import annotations

from rag_async.api.enqueue import events_url
from rag_async.api.state import AppState
from rag_async.domain.job import JobRecord, JobStatus
from rag_async.domain.schemas import JobView
from rag_async.domain.sources import fit_sources


async def job_view(state: AppState, record: JobRecord) -> JobView:
    answer, partial, last_event_id = record.answer, False, record.last_event_id
    if record.kind == "answer" and record.status is JobStatus.IN_PROGRESS:
        # Text and id from the same read of the log, so that resuming after `last_event_id`
        # continues exactly where `answer` stops.
        answer, last_event_id = await state.events.answer_so_far(record.job_id)
        partial = True
    position = None
    if record.status is JobStatus.QUEUED:
        position = await state.queue.position(record.job_id, record.kind)
    return JobView(
        **{name: getattr(record, name) for name in _SHOWN},
        # A record written before passages were bounded may hold any size of them.
        sources=fit_sources(record.sources, state.settings.max_source_chars),
        answer=answer,
        answer_is_partial=partial,
        last_event_id=last_event_id,
        queue_position=position,
        events_url=events_url(state, record.job_id, record.owner),
    )


# The record's fields that the view shows as they are.
_SHOWN = {
    "job_id", "kind", "status", "stage", "attempt", "worker", "query", "conversation_id", "timings",
    "providers", "error", "document_id", "chunks", "progress", "created_at", "started_at",
    "finished_at", "webhook", "priority", "filters", "attributes",
}  # fmt: skip
