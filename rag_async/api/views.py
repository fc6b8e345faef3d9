"""The job record as the API shows it. A running answer's partial text is read from the
event log, so polling and streaming tell exactly the same story."""

from __future__ import annotations

import orjson

from ..events import Source, event_type_of
from ..jobstore import JobRecord
from ..queues import JOB_KINDS
from ..schemas import IngestProgress, JobView
from ..transcript import Transcript
from .state import AppState


async def job_view(state: AppState, record: JobRecord) -> JobView:
    answer = record.text("answer")
    partial = False
    last_event_id = record.last_event_id
    if record.kind == "chat" and record.status == "in_progress":
        # Text and id from the same read of the log, so that resuming after `last_event_id`
        # continues exactly where `answer` stops.
        answer, last_event_id = await _partial_answer(state, record)
        partial = True
    chunks = record.text("chunks")
    progress = record.json("progress")
    position = None
    if record.status == "queued":
        queue = state.keys.queue(JOB_KINDS[record.kind].lane)
        rank = await state.redis.zrank(queue, record.job_id)
        position = None if rank is None else rank + 1
    return JobView(
        job_id=record.job_id,
        kind=record.kind,
        status=record.status,
        stage=record.text("stage"),
        attempt=record.attempt,
        worker=record.text("worker"),
        query=record.text("query"),
        answer=answer,
        answer_is_partial=partial,
        sources=[Source.model_validate(s) for s in record.json("sources") or []],
        timings=record.json("timings") or {},
        providers=record.json("providers") or {},
        error=record.text("error"),
        document_id=record.text("document_id"),
        chunks=int(chunks) if chunks else None,
        progress=IngestProgress.model_validate(progress) if progress else None,
        created_at=record.number("created_at"),
        started_at=record.number("started_at"),
        finished_at=record.number("finished_at"),
        last_event_id=last_event_id,
        queue_position=position,
        events_url=f"/jobs/{record.job_id}/events",
    )


async def _partial_answer(state: AppState, record: JobRecord) -> tuple[str, int]:
    """The answer so far by the rule of `transcript.Transcript` (a dead attempt's text is
    dropped), and the id of the last event it includes."""
    transcript = Transcript()
    last_event_id = 0
    for event in await state.events.replay(record.job_id):
        last_event_id = event.id
        transcript.apply(event_type_of(event.data), orjson.loads(event.data))
    return transcript.text, last_event_id
