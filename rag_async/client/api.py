"""A small async client of the rag-async HTTP API, used by the CLI (and handy in scripts).

Following a job reads its SSE stream and resumes with Last-Event-ID if the connection drops,
so a caller sees every event exactly once. `Answer` turns those events into the text to show:
a job may be retried, and each new attempt starts its answer over.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx
import orjson
from httpx_sse import EventSource, ServerSentEvent, aconnect_sse

from rag_async.domain.events import TERMINAL_EVENT_TYPES, parse_event
from rag_async.domain.job import JOB_ID_HEADER
from rag_async.domain.transcript import Transcript

# Statuses that mean "not now" rather than "no": the API, or a proxy before it, is restarting.
_UNAVAILABLE = frozenset({502, 503, 504})
# How long `follow` keeps reconnecting without an event before it gives up, in seconds.
_PATIENCE = 60.0


class ApiError(Exception):
    """The API answered with an error; `message` is its human-readable explanation."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{message} (HTTP {status}, {code})")
        self.status = status
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class JobEvent:
    id: int
    type: str
    data: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Asked:
    """A question asked with `RagClient.asking`: its job, and the job's events to its end."""

    job_id: str
    events: AsyncIterator[JobEvent]


class Answer:
    """A question's answer as a client should show it, built event by event with `apply`.

    The text follows the one rule of `transcript.Transcript`: only the current attempt's text
    counts, so when a status event announces a later attempt (the worker died, or a call
    failed and the job is retried) the text so far is dropped (kept in `discarded`, for the
    curious), and the `done` event's answer is authoritative. `final` is the job's last event
    (done, error or cancelled).
    """

    def __init__(self) -> None:
        self._transcript = Transcript()
        self.final: JobEvent | None = None

    @property
    def text(self) -> str:
        return self._transcript.text

    @property
    def attempt(self) -> int:
        return self._transcript.attempt

    @property
    def discarded(self) -> list[str]:
        return self._transcript.discarded

    def apply(self, event: JobEvent) -> bool:
        """Take one event; True if it started a new attempt that dropped text already shown."""
        if event.type in TERMINAL_EVENT_TYPES:
            self.final = event
        typed = parse_event(event.data)
        return typed is not None and self._transcript.apply(typed)

    def __repr__(self) -> str:
        return f"Answer(text={self.text!r}, attempt={self.attempt}, final={self.final!r})"


class RagClient:
    def __init__(self, base_url: str, *, api_key: str | None = None, timeout: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {api_key}"} if api_key else None,
            # A stream may idle between events, but the server pings every 10 s (by default).
            timeout=httpx.Timeout(timeout, read=60.0),
            limits=httpx.Limits(max_connections=1000, max_keepalive_connections=1000),
        )

    async def __aenter__(self) -> RagClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def ask(
        self,
        query: str,
        *,
        collection: str | None = None,
        conversation_id: str | None = None,
        filters: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Submit a question, within conversation `conversation_id` if given (the client names
        it; its first question begins it), searching the documents whose attributes match
        `filters` (if given); returns the 202 body (job_id, status_url, events_url,
        conversation_id)."""
        return await self._post("/chat", _question(query, collection, conversation_id, filters))

    @contextlib.asynccontextmanager
    async def asking(
        self,
        query: str,
        *,
        collection: str | None = None,
        conversation_id: str | None = None,
        filters: dict[str, Any] | None = None,
    ) -> AsyncIterator[Asked]:
        """Ask as `ask` does, in one request: the POST answers with the job's event stream
        (`Accept: text/event-stream`), which `Asked.events` follows to its end, resuming at
        /jobs/{id}/events if the connection drops. An API that answers 202 instead is
        followed as `follow` does."""
        body = _question(query, collection, conversation_id, filters)
        headers = {"content-type": "application/json", "accept": "text/event-stream"}
        async with aconnect_sse(
            self._http, "POST", "/chat", content=orjson.dumps(body), headers=headers
        ) as source:
            response = source.response
            if response.status_code != 200:  # an error, or the 202 of an API that does not stream
                await response.aread()
                job_id = _json_or_raise(response)["job_id"]
                yield Asked(job_id, self.follow(job_id))
                return
            job_id = response.headers[JOB_ID_HEADER]
            yield Asked(job_id, self._rest_of(job_id, source))

    async def _rest_of(self, job_id: str, source: EventSource) -> AsyncIterator[JobEvent]:
        """The events of a stream already open, then, if it ends before the job's last event,
        the rest from /jobs/{id}/events."""
        last = 0
        with contextlib.suppress(httpx.TransportError):
            async for sse in source.aiter_sse():
                if (event := _job_event(sse)) is None:
                    continue
                last = event.id
                yield event
                if event.type in TERMINAL_EVENT_TYPES:
                    return
        async for event in self.follow(job_id, last):
            yield event

    async def search(
        self,
        query: str,
        *,
        collection: str | None = None,
        top_k: int | None = None,
        score_threshold: float | None = None,
    ) -> dict[str, Any]:
        """The passages best matching `query` (`POST /search`): `{job_id, results}`, or, for
        a search still queued when the API's wait was up, the 202 body (`job_id`,
        `status_url`, ...) whose job has the results once it ends (`searched`)."""
        body: dict[str, Any] = {"query": query}
        given = {"collection": collection, "top_k": top_k, "score_threshold": score_threshold}
        body.update({name: value for name, value in given.items() if value is not None})
        return await self._post("/search", body)

    async def searched(self, job_id: str) -> list[dict[str, Any]]:
        """A search job's results, once it has ended (followed to its end); raises `ApiError`
        if it failed."""
        final = None
        async for event in self.follow(job_id):
            final = event
        if final is None or final.type != "done":
            message = str(final.data.get("message")) if final else "its events ended early"
            raise ApiError(502, "search_failed", f"search {job_id}: {message}")
        sources: list[dict[str, Any]] = (await self.job(job_id))["sources"]
        return sources

    async def conversation(self, conversation_id: str) -> dict[str, Any]:
        """A conversation's turns (question, search, answer, job), oldest first."""
        return _json_or_raise(await self._http.get(f"/conversations/{_segment(conversation_id)}"))

    async def upload(
        self,
        files: list[tuple[str, bytes]],
        *,
        collection: str | None = None,
        source: str | None = None,
        attributes: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Upload `(filename, content)` files in one multipart request, each with
        `attributes` (if given); returns the 202 body (`documents` accepted, `rejected`
        files)."""
        data = {k: v for k, v in (("collection", collection), ("source", source)) if v}
        if attributes:
            data["attributes"] = orjson.dumps(attributes).decode()
        response = await self._http.post(
            "/documents",
            files=[("files", (name, content)) for name, content in files],
            data=data,
        )
        return _json_or_raise(response)

    async def documents(self, collection: str | None = None) -> list[dict[str, Any]]:
        params = {"collection": collection} if collection else {}
        response = await self._http.get("/documents", params=params)
        entries: list[dict[str, Any]] = _json_or_raise(response)["documents"]
        return entries

    async def document(self, document_id: str) -> dict[str, Any]:
        return _json_or_raise(await self._http.get(f"/documents/{_segment(document_id)}"))

    async def delete_document(self, document_id: str) -> dict[str, Any]:
        return _json_or_raise(await self._http.delete(f"/documents/{_segment(document_id)}"))

    async def dead_letters(self) -> list[dict[str, Any]]:
        response = await self._http.get("/dead-letters")
        entries: list[dict[str, Any]] = _json_or_raise(response)["dead_letters"]
        return entries

    async def requeue(self, job_id: str) -> dict[str, Any]:
        return _json_or_raise(await self._http.post(f"/dead-letters/{_segment(job_id)}/requeue"))

    async def drop_dead_letter(self, job_id: str) -> None:
        response = await self._http.delete(f"/dead-letters/{_segment(job_id)}")
        if response.status_code != 204:
            _json_or_raise(response)

    async def job(self, job_id: str) -> dict[str, Any]:
        response = await self._http.get(f"/jobs/{_segment(job_id)}")
        return _json_or_raise(response)

    async def cancel(self, job_id: str) -> dict[str, Any]:
        """Cancel a job; returns its `status`: `cancelled` (it was queued) or `cancelling` (its
        worker stops it as soon as it hears of it, and its stream ends with a `cancelled` event)."""
        return _json_or_raise(await self._http.delete(f"/jobs/{_segment(job_id)}"))

    async def stats(self) -> dict[str, Any]:
        """Queue depth, jobs in flight, breakers; for an admin also workers and failures."""
        return _json_or_raise(await self._http.get("/stats"))

    async def follow(self, job_id: str, after: int = 0) -> AsyncIterator[JobEvent]:
        """Every event of the job after `after`, until its final one, across reconnects.

        A lost connection or an API that cannot serve for a moment (503 while Valkey
        restarts, or a 502/504 from a proxy in front) is retried with backoff, resuming after
        the last event, for up to a minute without an event.
        """
        last = after
        failures = 0
        deadline: float | None = None
        while True:
            try:
                headers = {"Last-Event-ID": str(last)} if last else {}
                async with aconnect_sse(
                    self._http, "GET", f"/jobs/{_segment(job_id)}/events", headers=headers
                ) as source:
                    if source.response.status_code == 204:
                        return  # nothing after `last` and the job is over
                    if source.response.status_code >= 400:
                        await source.response.aread()
                        _json_or_raise(source.response)
                    async for sse in source.aiter_sse():
                        failures, deadline = 0, None
                        if (event := _job_event(sse)) is None:
                            continue
                        last = event.id
                        yield event
                        if event.type in TERMINAL_EVENT_TYPES:
                            return
            except (httpx.TransportError, ApiError) as error:
                if isinstance(error, ApiError) and error.status not in _UNAVAILABLE:
                    raise
                now = time.monotonic()
                deadline = deadline or now + _PATIENCE
                if now >= deadline:
                    raise
                failures += 1
                await asyncio.sleep(min(0.1 * 2**failures, 2.0))

    async def answer(self, job_id: str) -> Answer:
        """Follow a question to its end; the answer as a client shows it (see `Answer`)."""
        answer = Answer()
        async for event in self.follow(job_id):
            answer.apply(event)
        return answer

    async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        response = await self._http.post(
            path, content=orjson.dumps(body), headers={"content-type": "application/json"}
        )
        return _json_or_raise(response)


def _job_event(sse: ServerSentEvent) -> JobEvent | None:
    """One event of a job's stream; None for the blank line after a keep-alive comment."""
    if not sse.data:
        return None
    return JobEvent(int(sse.id), sse.event, orjson.loads(sse.data))


def _question(
    query: str,
    collection: str | None,
    conversation_id: str | None,
    filters: dict[str, Any] | None,
) -> dict[str, Any]:
    """The body of POST /chat."""
    given = {"collection": collection, "conversation_id": conversation_id, "filters": filters}
    return {"query": query} | {name: value for name, value in given.items() if value is not None}


def _segment(value: str) -> str:
    """An id as one path segment: `../stats` names no job, it does not lead elsewhere."""
    return quote(value, safe="")


def _json_or_raise(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        body = None
    if response.status_code >= 400:
        error = body.get("error") if isinstance(body, dict) else None
        if not isinstance(error, dict) or "message" not in error:
            raise _not_rag_async(response)
        raise ApiError(response.status_code, str(error.get("code", "http_error")), error["message"])
    if not isinstance(body, dict):
        raise _not_rag_async(response)
    return body


def _not_rag_async(response: httpx.Response) -> ApiError:
    """Another program answers at the API's address (a proxy's or a web server's error page):
    say who answered, not what its page says (a page of HTML in a terminal helps no one)."""
    kind = response.headers.get("content-type", "").split(";")[0].strip() or "no content type"
    return ApiError(
        response.status_code,
        "not_rag_async",
        f"{response.request.url} answered HTTP {response.status_code} ({kind}), which is not "
        "rag-async's JSON: is another program listening at that address?",
    )
