"""The SSE generator: replay a job's log after Last-Event-ID, then follow it live.

Defensive by design: sse-starlette notices a client that left and cancels us (the `finally`
of the subscription then releases the channel), pings keep idle connections alive, a
connection's life is capped (the client reconnects with its Last-Event-ID and loses nothing),
and a finished job's stream always ends with its final event.

A stream holds one of its key's slots (quotas.StreamSlots) from its start to its end. A
request that both queues a job and follows it takes its slot before the job is queued: one
refused for its key's open streams then leaves no job behind, which would otherwise run (and
call the LLM) for a client that was told no and never learnt its id.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, TypeVar

from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.requests import Request
from starlette.types import Receive, Scope, Send

from rag_async.api.state import AppState
from rag_async.domain.events import (
    TERMINAL_EVENT_TYPES,
    SourcesEvent,
    decode_event,
    encode_event,
    event_type_of,
)
from rag_async.domain.identity import Principal
from rag_async.domain.sources import clip_sources
from rag_async.metrics import SSE_CONNECTIONS
from rag_async.store.events import RESYNC, LoggedEvent

T = TypeVar("T")


def wants_event_stream(request: Request) -> bool:
    """Whether the client asked for the answer as an event stream (`Accept:
    text/event-stream`) rather than a 202 with the job's URLs."""
    return "text/event-stream" in request.headers.get("accept", "").lower()


class CountedEventSource(EventSourceResponse):
    """An event stream that gives its slot back when it ends, however it ends: the job's
    final event, the connection's life cap, or a client gone (sse-starlette then cancels the
    stream, and this returns). Released here rather than in the generator, whose `finally`
    never runs if the client left before the first event was sent."""

    def __init__(
        self, content: AsyncIterator[ServerSentEvent], *, release: Callable[[], None], **kw: Any
    ) -> None:
        super().__init__(content, **kw)
        self._release = release

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        SSE_CONNECTIONS.inc()
        try:
            await super().__call__(scope, receive, send)
        finally:
            SSE_CONNECTIONS.dec()
            self._release()


def counted_stream(
    state: AppState,
    content: AsyncIterator[ServerSentEvent],
    release: Callable[[], None],
    headers: Mapping[str, str] | None = None,
) -> CountedEventSource:
    """An event stream as every route sends one: a keep-alive ping every
    `RAG_SSE_PING_INTERVAL`, never cached, its slot given back by `release` when it ends."""
    return CountedEventSource(
        content,
        release=release,
        ping=int(max(1, state.settings.sse_ping_interval)),
        headers={"Cache-Control": "no-store", **(headers or {})},
    )


def stream_slot(state: AppState, caller: Principal) -> Callable[[], None]:
    """One of the caller's stream slots (429 `too_many_streams` when it has none left), and
    what gives it back."""
    return state.streams.take(caller.name)


async def given_back_on_error(release: Callable[[], None], step: Awaitable[T]) -> T:
    """`step`'s result; if it fails (the job refused, say), the slot taken for it is given
    back before the error goes on."""
    try:
        return await step
    except BaseException:
        release()
        raise


async def follow_job(state: AppState, job_id: str, after: int) -> AsyncIterator[ServerSentEvent]:
    last, bound = after, state.settings.max_source_chars
    async with state.hub.subscribe(job_id) as live:
        # Subscribed first, replayed second: whatever is published from here on is queued,
        # so nothing falls between the replay and the live feed.
        for event in await state.events.replay(job_id, last):
            yield _frame(event, bound)
            last = event.id
            if _is_terminal(event):
                return
        try:
            async with asyncio.timeout(state.settings.sse_max_duration):
                while True:
                    event = await live.get()
                    if event is RESYNC or event.id > last + 1:
                        # Missed something on the live channel: the log has it.
                        for missed in await state.events.replay(job_id, last):
                            yield _frame(missed, bound)
                            last = missed.id
                            if _is_terminal(missed):
                                return
                        continue
                    if event.id <= last:
                        if _is_terminal(event):
                            return  # the client claims to have seen even the end
                        continue  # already sent during the replay
                    yield _frame(event, bound)
                    last = event.id
                    if _is_terminal(event):
                        return
        except TimeoutError:
            return  # the connection's life is up; the client resumes from `last`


def _frame(event: LoggedEvent, max_source_chars: int) -> ServerSentEvent:
    kind = event_type_of(event.data)
    data = event.data
    if kind == "sources" and len(data) > max_source_chars:
        data = _bounded_sources(data, max_source_chars)
    return ServerSentEvent(data=data.decode(), event=kind, id=str(event.id))


def _bounded_sources(data: bytes, max_source_chars: int) -> bytes:
    """A `sources` event with each passage within `max_source_chars`: the worker writes them
    so, but a log written before passages were bounded may hold any size of them. Only an
    event longer than one passage may hold a longer one, so most are never decoded."""
    event = decode_event(data)
    if not isinstance(event, SourcesEvent):
        return data
    sources = clip_sources(event.sources, max_source_chars)
    if all(new is old for new, old in zip(sources, event.sources, strict=True)):
        return data
    return encode_event(SourcesEvent(sources=sources))


def _is_terminal(event: LoggedEvent) -> bool:
    return event_type_of(event.data) in TERMINAL_EVENT_TYPES
