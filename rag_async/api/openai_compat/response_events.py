"""A job's event log as the Responses API's stream: `response.created`, `response.in_progress`,
`response.output_item.added`, `response.content_part.added`, `response.output_text.delta`, ...,
then `response.output_text.done`, `response.content_part.done`, `response.output_item.done` and
`response.completed` (or `response.failed`, `response.cancelled`).

Sequence numbers come from the log's event ids, so `starting_after` resumes exactly where a
client stopped, across API processes and until the result expires: the i-th Responses event
made of logged event n is number `n * PARTS + i` (the log's ids, with a digit for the part).
`response.created` is number 0, as in OpenAI's streams. The stream itself is api/stream.py's
`follow_job` (replay, then live; pings, the connection's life cap, the client gone), mapped.

A retried attempt's text cannot be taken back from a client that appended deltas; the final
`response.output_text.done` and `response.completed` carry the authoritative text.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
from sse_starlette import ServerSentEvent

from rag_async.api.openai_compat.cited_files import searched
from rag_async.api.openai_compat.file_search import call_events
from rag_async.api.openai_compat.wire import (
    MESSAGE_PREFIX,
    citations,
    output_message,
    output_text,
    response_object,
)
from rag_async.api.state import AppState
from rag_async.api.stream import follow_job
from rag_async.config import Settings
from rag_async.domain.events import (
    CancelledEvent,
    DoneEvent,
    ErrorEvent,
    Event,
    SourcesEvent,
    StatusEvent,
    TokenEvent,
    decode_event,
)
from rag_async.domain.job import JobRecord
from rag_async.domain.sources import Source
from rag_async.domain.transcript import Transcript

# Room for the Responses events that one logged event becomes (a `done` makes four, and
# the citations still to announce go before them; `sources` with a file_search, seven).
PARTS = 10
_ENDING = 4


class ResponseEvents:
    """Turns a job's logged events, in order, into Responses events (without numbers).

    Each citation is announced once its `[n]` is whole (`response.output_text.annotation
    .added`, after the delta that closed it), numbered in the order of the text; those that
    a logged event has no room left for go with the next one. A new attempt starts the
    numbering over, as its deltas start the text over."""

    def __init__(self, record: JobRecord, settings: Settings) -> None:
        self._record = record
        self._settings = settings
        self._sources: list[Source] = list(record.sources)
        self._transcript = Transcript()  # the answer so far, by the one rule
        self._item = f"{MESSAGE_PREFIX}{record.job_id}"
        self._announced = 0  # the citations of the answer so far announced
        # A file_search's call item comes first (file_search.py): the message is then second.
        self._searched = searched(record)
        self._at = 1 if self._searched else 0

    def created(self) -> dict[str, Any]:
        return {"type": "response.created", "response": self._response("queued")}

    def map(self, event: Event) -> list[dict[str, Any]]:
        attempt = self._transcript.attempt
        self._transcript.apply(event)
        if isinstance(event, StatusEvent):
            if self._transcript.attempt == attempt:
                return []  # a stage of the same attempt: nothing OpenAI tells
            self._announced = 0
            return [{"type": "response.in_progress", "response": self._response("in_progress")}]
        if isinstance(event, SourcesEvent):
            self._sources = list(event.sources)
            item = output_message(self._record.job_id, None, (), done=False)
            part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
            search = call_events(self._record, self._sources) if self._searched else []
            return [
                *search,
                {"type": "response.output_item.added", "output_index": self._at, "item": item},
                {**self._at_part(), "type": "response.content_part.added", "part": part},
            ]
        if isinstance(event, TokenEvent):
            delta = {
                **self._at_part(),
                "type": "response.output_text.delta",
                "delta": event.text,
                "logprobs": [],
            }
            return [delta, *self._annotations(self._transcript.text, PARTS - 1)]
        return self._end(event)

    def _annotations(self, text: str, room: int) -> list[dict[str, Any]]:
        """The citations of `text` not announced yet, at most `room` of them."""
        found = citations(text, self._sources)[self._announced : self._announced + room]
        events = [
            {
                **self._at_part(),
                "type": "response.output_text.annotation.added",
                "annotation_index": self._announced + i,
                "annotation": annotation,
            }
            for i, annotation in enumerate(found)
        ]
        self._announced += len(found)
        return events

    def _end(self, event: Event) -> list[dict[str, Any]]:
        if isinstance(event, ErrorEvent):
            failed = self._response("failed")
            failed["error"] = {"code": event.code, "message": event.message}
            return [{"type": "response.failed", "response": failed}]
        if isinstance(event, CancelledEvent):
            return [{"type": "response.cancelled", "response": self._response("cancelled")}]
        if not isinstance(event, DoneEvent):
            return []  # not a question's event
        text = event.answer
        part = output_text(text, self._sources)
        item = output_message(self._record.job_id, text, self._sources, done=True)
        ended = self._response("completed", text, event)
        if ended["status"] == "incomplete":
            item["status"] = "incomplete"
        return [
            *self._annotations(text, PARTS - _ENDING),
            {**self._at_part(), "type": "response.output_text.done", "text": text, "logprobs": []},
            {**self._at_part(), "type": "response.content_part.done", "part": part},
            {"type": "response.output_item.done", "output_index": self._at, "item": item},
            {"type": f"response.{ended['status']}", "response": ended},
        ]

    def _at_part(self) -> dict[str, Any]:
        return {"item_id": self._item, "output_index": self._at, "content_index": 0}

    def _response(
        self, status: str, text: str | None = None, done: DoneEvent | None = None
    ) -> dict[str, Any]:
        """The response object as of this event: its output only once the answer is done."""
        response = response_object(
            self._record,
            self._settings,
            status=status,
            text=text,
            sources=self._sources,
            usage=done.usage if done is not None else None,
            incomplete=done.incomplete if done is not None else None,
        )
        if text is None:
            response["output"] = []
        return response


async def response_stream(
    state: AppState, record: JobRecord, starting_after: int | None
) -> AsyncIterator[ServerSentEvent]:
    """The job's Responses events after number `starting_after` (all of them when None)."""
    events = ResponseEvents(record, state.settings)
    after = -1 if starting_after is None else starting_after
    if after < 0:
        yield _frame(0, events.created())
    # From the first logged event, whatever `after`: the mapping carries state (the attempt,
    # the citations announced) that a resume must rebuild to send exactly what the original
    # stream sent after it.
    async for logged in follow_job(state, record.job_id, 0):
        number = int(logged.id or 0) * PARTS
        mapped = events.map(decode_event(logged.data or "{}"))
        for part, event in enumerate(mapped):
            if number + part > after:
                yield _frame(number + part, event)


def first_logged(starting_after: int) -> int:
    """The id of the first logged event a stream after `starting_after` reads."""
    return max(1, starting_after // PARTS)


def _frame(number: int, event: dict[str, Any]) -> ServerSentEvent:
    event["sequence_number"] = number
    return ServerSentEvent(data=orjson.dumps(event).decode(), event=event["type"], id=str(number))
