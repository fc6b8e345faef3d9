"""The typed job events and their one wire form.

A job tells its story as a sequence of events, each with a per-job id 1, 2, 3, ... The worker
appends them (see `eventlog`), the SSE endpoint sends them as `id:`/`event:`/`data:` frames,
`/job-status` folds them into a record, and the web page and the CLI read the same JSON.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from rag_async.domain.generation import Incomplete, Usage
from rag_async.domain.job import JobStatus
from rag_async.domain.sources import Source


class _Event(BaseModel):
    model_config = ConfigDict(frozen=True)


class StatusEvent(_Event):
    """The job moved: a new attempt started, or it entered a stage."""

    type: Literal["status"] = "status"
    status: JobStatus
    stage: str | None = None
    attempt: int = 0


class SourcesEvent(_Event):
    type: Literal["sources"] = "sources"
    sources: list[Source]


class TokenEvent(_Event):
    """A batch of answer text. Tokens are coalesced, so one event holds several."""

    type: Literal["token"] = "token"
    text: str


class ProgressEvent(_Event):
    """Ingestion progress: `done` of `total` units of `stage`."""

    type: Literal["progress"] = "progress"
    stage: str
    done: int
    total: int


class DoneEvent(_Event):
    """The job finished: the whole answer (or an ingestion summary), once more, for clients
    that only want the end; `chunks` is set for ingestion."""

    type: Literal["done"] = "done"
    answer: str
    timings: dict[str, float]
    providers: dict[str, str]
    chunks: int | None = None
    # An answer's tokens as its LLM counted them, and why it stopped short, if it did.
    usage: Usage | None = None
    incomplete: Incomplete | None = None


class ErrorEvent(_Event):
    type: Literal["error"] = "error"
    message: str
    code: str = "job_failed"


class CancelledEvent(_Event):
    """The job was cancelled (DELETE /jobs/{id}); no more events follow."""

    type: Literal["cancelled"] = "cancelled"
    message: str = "cancelled on request"


Event = Annotated[
    StatusEvent
    | SourcesEvent
    | TokenEvent
    | ProgressEvent
    | DoneEvent
    | ErrorEvent
    | CancelledEvent,
    Field(discriminator="type"),
]

# The events that end a job's stream.
TERMINAL_EVENT_TYPES: frozenset[str] = frozenset({"done", "error", "cancelled"})


_EVENTS: TypeAdapter[Event] = TypeAdapter(Event)


def decode_event(data: bytes | str) -> Event:
    """A logged or streamed event, as its typed model (`ValidationError` if it is none)."""
    return _EVENTS.validate_json(data)


def parse_event(data: Mapping[str, Any]) -> Event | None:
    """An event's JSON object as its typed model; None for a type this code does not know
    (a newer server's) or a malformed one, which a reader skips."""
    try:
        return _EVENTS.validate_python(data)
    except ValidationError:
        return None


def encode_event(event: _Event) -> bytes:
    """The event's JSON, as stored in the log, published live and sent as SSE `data:`."""
    return orjson.dumps(event.model_dump(mode="json"))


_TYPE_PREFIX = b'{"type":"'


def event_type_of(data: bytes) -> str:
    """The `type` of an encoded event without parsing it: the SSE hot path, which forwards
    the stored bytes as they are and only needs to know where a stream ends (every other
    reader decodes events into their models with `decode_event`).

    `encode_event` always writes `type` first (it is every model's first field)."""
    if data.startswith(_TYPE_PREFIX):
        end = data.find(b'"', len(_TYPE_PREFIX))
        if end > 0:
            return data[len(_TYPE_PREFIX) : end].decode()
    return str(orjson.loads(data)["type"])
