"""An event's wire JSON read back into its typed model. The service only writes events
(`rag_async.domain.events.encode_event`); tests check what it wrote against the one schema."""

from __future__ import annotations

from pydantic import TypeAdapter

from rag_async.domain.events import Event

_EVENT: TypeAdapter[Event] = TypeAdapter(Event)


def decode_event(data: bytes | str) -> Event:
    return _EVENT.validate_json(data)
