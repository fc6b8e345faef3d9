"""An OpenAI-compatible server for the tests and the load benchmark.

It speaks the wire format of the OpenAI API closely enough that the real ``openai`` SDK works
against it unchanged, with a configurable time to first token and token rate. It is a raw ASGI
app with pre-encoded chunk frames because the benchmark pushes thousands of chunks per second
through it on the same small machine as the service under test: its CPU must stay negligible.

It also misbehaves on demand, the ways real LLM servers do (see `Fault`): per request with an
``x-test-fault`` header, for every request with ``ServerConfig.fault``, or for the next N chat
requests with ``ServerConfig.faults`` (`OpenAIApp.fail_next`, or ``POST /_faults`` from
another process), so a test or a benchmark can script "fail like this N times, then behave".
An embedding request fails only as its own ``x-test-fault`` header asks, with an HTTP status.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import base64
import contextlib
import logging
import math
import re
import signal
import socket
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import MISSING, asdict, dataclass, field, fields
from functools import lru_cache
from itertools import count
from typing import Any, Literal, get_args

import orjson
import uvicorn

Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_PREAMBLE = ("Based", " on", " [1],")  # the answer cites a source, as a grounded LLM would
_WORD = re.compile(r"\w+")
_JSON = [(b"content-type", b"application/json")]
_SSE = [(b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache")]
_DONE = b"data: [DONE]\n\n"
_KEEP_CALLS = 1000  # Stats.calls keeps the latest ones only: the benchmark makes thousands

FaultKind = Literal["429", "500", "400", "401", "hang", "trickle", "drop", "truncate", "malformed"]
FAULT_KINDS: tuple[str, ...] = get_args(FaultKind)
_HTTP_FAULTS = {
    "429": (
        "requests",
        "rate_limit_exceeded",
        "Rate limit reached for test-model on requests per min (RPM). Please try again later.",
    ),
    "500": (
        "server_error",
        None,
        "The server had an error while processing your request. Sorry about that!",
    ),
    "400": (
        "invalid_request_error",
        "context_length_exceeded",
        "This model's maximum context length is 8192 tokens. Please reduce the length.",
    ),
    "401": (
        "invalid_request_error",
        "invalid_api_key",
        "Incorrect API key provided. You can find your API key in your account settings.",
    ),
}


@dataclass
class Fault:
    """One way a chat request goes wrong, as LLM servers and the networks before them do.

    ``429`` (with a ``Retry-After`` of ``retry_after`` seconds, 1 by default), ``500``, ``400``
    and ``401`` answer in OpenAI's error shape, and so does any other HTTP error status given as
    its digits (``"408"``, ``"503"``), with a ``Retry-After`` if ``retry_after`` is set. The
    rest start a normal stream (headers and the role
    chunk) and then: ``hang`` sends nothing more (for ``hang`` seconds, then drops the
    connection); ``trickle`` sends a token every ``interval`` seconds; after ``after`` tokens,
    ``drop`` closes the connection mid-response, ``truncate`` ends the response cleanly but
    without the stop chunk and ``[DONE]``, and ``malformed`` sends a data line that is not JSON
    (then the rest of the answer, as a server that garbles one line would).
    """

    kind: FaultKind | str  # or an HTTP error status
    retry_after: float | None = None
    after: int = 3
    interval: float = 1.0
    hang: float = 300.0

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS and not _is_status(self.kind):
            raise ValueError(
                f"unknown fault {self.kind!r}; one of {', '.join(FAULT_KINDS)}, "
                "or an HTTP error status"
            )

    def error(self) -> ApiError:
        """The error answer of an HTTP status fault, in OpenAI's shape."""
        status = int(self.kind)
        kind, code, message = _HTTP_FAULTS.get(self.kind) or (
            "server_error" if status >= 500 else "invalid_request_error",
            None,
            f"Test fault: HTTP {status}.",
        )
        retry_after = 1.0 if self.kind == "429" and self.retry_after is None else self.retry_after
        headers = None if retry_after is None else [(b"retry-after", f"{retry_after:g}".encode())]
        return ApiError(status, message, code, kind=kind, headers=headers)


def _is_status(kind: str) -> bool:
    return len(kind) == 3 and kind.isdigit() and 400 <= int(kind) <= 599


@dataclass
class ServerConfig:
    """Behaviour of the server; read afresh on every request, so tests may change it live."""

    ttft: float = 0.0
    tokens: int = 40
    tokens_per_second: float = 100.0  # 0 = every token at once
    embedding_dim: int = 64
    model: str = "test-model"
    # The next chat requests fail like these, one each, in order; then `fault` applies.
    faults: list[Fault] = field(default_factory=list)
    fault: Fault | None = None  # every chat request (once `faults` is used up)
    # What to answer, one chunk per piece, instead of `token`'s words (which `tokens` counts).
    answer: list[str] | None = None
    # Embedding requests with this word in an input wait until `release` is set, then answer
    # (or fail with `release_status`, if set): a test holds an ingestion mid-way, its earlier
    # batches written and a later one not, for as long as it likes.
    hold_word: str | None = None
    release: asyncio.Event = field(default_factory=asyncio.Event)
    release_status: int | None = None
    # Every embedding request fails with this HTTP status while it is set (an embedder that
    # is down), unless the request's own headers ask for another fault.
    embedding_fault: int | None = None


@dataclass
class ChatCall:
    """One chat request: when it came and ended (``time.monotonic()``), the fault it was
    served, and how it ended: complete, error, disconnected (the client left), dropped (the
    server cut it), truncated or malformed."""

    started: float
    fault: str | None
    ended: float | None = None
    outcome: str = "open"


@dataclass
class Stats:
    """What the server saw, so a test can assert on what the service actually sent."""

    chat_requests: int = 0
    streamed_requests: int = 0
    completed_streams: int = 0  # streams that reached [DONE]
    embedding_requests: int = 0
    embedded_inputs: int = 0
    held_embeddings: int = 0  # requests held by `ServerConfig.hold_word`, so far
    errors: int = 0
    disconnects: int = 0
    active_streams: int = 0
    peak_streams: int = 0
    faults: dict[str, int] = field(default_factory=dict)  # faults served, by kind
    calls: list[ChatCall] = field(default_factory=list)  # the latest chat requests, in order
    last_chat_request: dict[str, Any] | None = None
    last_embedding_request: dict[str, Any] | None = None

    def reset(self) -> None:
        """Forget everything (tests share one server)."""
        for f in fields(self):
            default = f.default_factory() if f.default_factory is not MISSING else f.default
            setattr(self, f.name, default)

    @property
    def faults_served(self) -> int:
        return sum(self.faults.values())


def token(i: int) -> str:
    """The i-th content token: the citing preamble, then filler words."""
    return _PREAMBLE[i] if i < len(_PREAMBLE) else f" word{i}"


def expected_answer(tokens: int) -> str:
    """The exact text a client must reassemble from a completion of ``tokens`` chunks."""
    return "".join(token(i) for i in range(tokens))


@lru_cache(maxsize=4096)
def _content_delta(i: int) -> bytes:
    return b'{"content":' + orjson.dumps(token(i)) + b"}"


def embed(text: str, dim: int) -> list[float]:
    """A hashed bag of lowercase words, L2-normalised: texts sharing words are similar.

    crc32 rather than ``hash()`` so that vectors agree across processes and runs.
    """
    vec = [0.0] * dim
    for word in _WORD.findall(text.lower()):
        h = zlib.crc32(word.encode())
        vec[h % dim] += 1.0 if (h >> 31) & 1 else -1.0
    norm = math.sqrt(sum(v * v for v in vec))
    if norm == 0.0:
        vec[0], norm = 1.0, 1.0  # no words: still a valid unit vector
    return [v / norm for v in vec]


class ApiError(Exception):
    """An error answered in OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}``."""

    def __init__(
        self,
        status: int,
        message: str,
        code: str | None,
        *,
        kind: str = "invalid_request_error",
        headers: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.kind, self.headers = status, code, kind, headers or []

    def body(self) -> bytes:
        error = {"message": str(self), "type": self.kind, "param": None, "code": self.code}
        return orjson.dumps({"error": error})


class OpenAIApp:
    """The ASGI app, and what ``serve_openai`` yields: tests read ``stats``, set ``config``."""

    def __init__(self, config: ServerConfig | None = None) -> None:
        self.config = config or ServerConfig()
        self.stats = Stats()
        self.base_url = ""  # set once listening
        self._ids = count(1)
        self._routes: dict[tuple[str, str], Callable[..., Awaitable[None]]] = {
            ("POST", "/v1/chat/completions"): self._chat,
            ("POST", "/v1/embeddings"): self._embeddings,
            ("GET", "/v1/models"): self._models,
            ("GET", "/_stats"): self._stats,
            ("POST", "/_faults"): self._script_faults,
        }

    def fail_next(self, kind: FaultKind | str, count: int = 1, **options: Any) -> None:
        """Make the next ``count`` chat requests fail like ``kind`` (see `Fault`)."""
        self.config.faults.extend(Fault(kind, **options) for _ in range(count))

    async def __call__(self, scope: Message, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        started = asyncio.get_running_loop().time()  # ttft counts from here, not from parsing
        route = self._routes.get((scope["method"], scope["path"]))
        try:
            if route is None:
                raise ApiError(404, f"Invalid URL ({scope['method']} {scope['path']})", "not_found")
            await route(scope, receive, send, started)
        except ApiError as exc:
            self.stats.errors += 1
            await _respond(send, exc.body(), exc.status, exc.headers)

    async def _chat(self, scope: Message, receive: Receive, send: Send, started: float) -> None:
        body = await _read_json(receive)
        if not isinstance(body.get("messages"), list):
            raise ApiError(400, "'messages' is a required list", "invalid_messages")
        plan = _overrides(scope, self.config)
        fault = plan.fault
        stats = self.stats
        stats.chat_requests += 1
        stats.last_chat_request = body
        call = ChatCall(time.monotonic(), fault.kind if fault else None)
        stats.calls.append(call)
        del stats.calls[:-_KEEP_CALLS]
        if fault is not None:
            stats.faults[fault.kind] = stats.faults.get(fault.kind, 0) + 1
        try:
            call.outcome = await self._answer(body, receive, send, started, plan)
        except ApiError:
            call.outcome = "error"
            raise
        finally:
            call.ended = time.monotonic()

    async def _answer(
        self, body: dict[str, Any], receive: Receive, send: Send, started: float, plan: _Plan
    ) -> str:
        """Answer one chat request (or fail it like its fault); returns how it ended."""
        ttft, tokens, tps, fault = plan.ttft, plan.tokens, plan.tps, plan.fault
        if fault is not None and _is_status(fault.kind):
            raise fault.error()
        if fault is not None and fault.kind == "trickle":
            ttft, tps = 0.0, 1.0 / max(fault.interval, 1e-3)
        model = body.get("model") or self.config.model
        cid, created = f"chatcmpl-test{next(self._ids)}", int(time.time())
        head = {"id": cid, "object": "chat.completion", "created": created, "model": model}
        pieces = self.config.answer
        if pieces is not None:
            tokens = len(pieces)
        # A request's token limit cuts the answer, as a model's does ("length").
        limit = body.get("max_completion_tokens") or body.get("max_tokens")
        finish = "stop"
        if isinstance(limit, int) and 0 <= limit < tokens:
            tokens, finish = limit, "length"
            pieces = None if pieces is None else pieces[:limit]
        usage = _usage(body["messages"], tokens)
        outcome = "disconnected"  # unless the response ends
        with _cancel_on_disconnect(receive, self.stats):
            if body.get("stream"):
                head["object"] = "chat.completion.chunk"
                with_usage = (body.get("stream_options") or {}).get("include_usage")
                self.stats.streamed_requests += 1
                self.stats.active_streams += 1
                self.stats.peak_streams = max(self.stats.peak_streams, self.stats.active_streams)
                try:
                    outcome = await _stream(
                        send, head, usage if with_usage else None, started + ttft, tokens, tps,
                        fault, pieces, finish,
                    )  # fmt: skip
                finally:
                    self.stats.active_streams -= 1
                if outcome == "complete":
                    self.stats.completed_streams += 1
                return outcome
            if fault is not None and fault.kind == "hang":
                await asyncio.sleep(fault.hang)
                return "dropped"  # without a response: uvicorn closes the connection
            await _sleep_until(started + ttft + (max(tokens - 1, 0) / tps if tps else 0.0))
            content = expected_answer(tokens) if pieces is None else "".join(pieces)
            message = {"role": "assistant", "content": content, "refusal": None}
            choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": finish}
            reply = orjson.dumps({**head, "choices": [choice], "usage": usage})
            if fault is not None and fault.kind in ("drop", "truncate", "malformed"):
                await _respond(send, reply[: len(reply) // 2])  # JSON cut in half
                return "malformed"
            await _respond(send, reply)
            return "complete"
        return outcome

    async def _embeddings(self, scope: Message, receive: Receive, send: Send, _: float) -> None:
        body = await _read_json(receive)
        fault = _requested_fault(scope)
        if fault is not None:
            if not _is_status(fault.kind):
                raise ApiError(400, "Embeddings fail only with an HTTP status", "bad_header")
            raise fault.error()
        if (status := self.config.embedding_fault) is not None:
            self.stats.faults["embeddings"] = self.stats.faults.get("embeddings", 0) + 1
            raise Fault(str(status)).error()
        texts = body.get("input")
        texts = [texts] if isinstance(texts, str) else texts
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            raise ApiError(400, "'input' must be a string or a list of strings", "invalid_input")
        await self._hold(texts)
        self.stats.embedding_requests += 1
        self.stats.embedded_inputs += len(texts)
        self.stats.last_embedding_request = body
        dim = body.get("dimensions") or self.config.embedding_dim
        if not isinstance(dim, int) or dim < 1:
            raise ApiError(400, "'dimensions' must be a positive integer", "invalid_dimensions")
        as_base64 = body.get("encoding_format") == "base64"
        data = []
        for index, text in enumerate(texts):
            vec: Any = embed(text, dim)
            if as_base64:  # what the SDK asks for by default: little-endian float32
                vec = base64.b64encode(array.array("f", vec).tobytes()).decode()
            data.append({"object": "embedding", "index": index, "embedding": vec})
        n = sum(len(_WORD.findall(t)) for t in texts)
        reply = {"object": "list", "data": data, "model": body.get("model") or "test-embedding"}
        await _respond(
            send, orjson.dumps({**reply, "usage": {"prompt_tokens": n, "total_tokens": n}})
        )

    async def _hold(self, texts: list[str]) -> None:
        word = self.config.hold_word
        if word is None or not any(word in text.lower() for text in texts):
            return
        self.stats.held_embeddings += 1
        await self.config.release.wait()
        if (status := self.config.release_status) is not None:
            raise ApiError(
                status, "Held, then failed as the test asked", "held", kind="server_error"
            )

    async def _models(self, scope: Message, receive: Receive, send: Send, _: float) -> None:
        model = {"id": self.config.model, "object": "model", "created": 0, "owned_by": "tests"}
        await _respond(send, orjson.dumps({"object": "list", "data": [model]}))

    async def _stats(self, scope: Message, receive: Receive, send: Send, _: float) -> None:
        # cpu_seconds lets the benchmark charge this process's CPU apart from the service's
        stats = {**asdict(self.stats), "cpu_seconds": time.process_time()}
        await _respond(send, orjson.dumps(stats))

    async def _script_faults(self, scope: Message, receive: Receive, send: Send, _: float) -> None:
        """``{"kind": "500", "count": 3, ...Fault options}`` queues faults for the next chat
        requests; ``{"clear": true}`` forgets queued ones; ``{"always": {...} | null}`` sets
        the fault of every request; ``{"embeddings": 500 | null}`` fails every embedding
        request with that status, or no longer."""
        body = await _read_json(receive)
        try:
            if body.pop("clear", False):
                self.config.faults.clear()
            if "always" in body:
                always = body.pop("always")
                self.config.fault = Fault(**always) if always else None
            if "embeddings" in body:
                status = body.pop("embeddings")
                if status is not None and not _is_status(str(status)):
                    raise ValueError(f"embeddings: {status!r} is not an HTTP error status")
                self.config.embedding_fault = None if status is None else int(status)
            if "kind" in body:
                self.fail_next(body.pop("kind"), int(body.pop("count", 1)), **body)
        except (TypeError, ValueError) as exc:
            raise ApiError(400, f"Bad fault: {exc}", "bad_fault") from None
        queued = [f.kind for f in self.config.faults]
        always_kind = self.config.fault.kind if self.config.fault else None
        await _respond(send, orjson.dumps({"queued": queued, "always": always_kind}))


async def _stream(
    send: Send,
    head: Message,
    usage: Message | None,
    first_at: float,
    tokens: int,
    tps: float,
    fault: Fault | None = None,
    pieces: list[str] | None = None,
    finish: str = "stop",
) -> str:
    """Send the role chunk now, then token i (or ``pieces[i]``) at ``first_at + i / tps``;
    returns how it ended.

    Chunks are paced on an absolute schedule, so a slow write does not stretch the stream, and
    every chunk already due goes out in one write, so a busy loop catches up instead of lagging.
    A `Fault` of a streaming kind breaks the stream on the way.
    """
    prefix = b"data: " + orjson.dumps(head)[:-1] + b',"choices":[{"index":0,"delta":'
    tail = b',"logprobs":null,"finish_reason":null}]' + (b',"usage":null' if usage else b"")
    tail += b"}\n\n"
    role = prefix + b'{"role":"assistant","content":""}' + tail
    await send({"type": "http.response.start", "status": 200, "headers": _SSE})
    await send({"type": "http.response.body", "body": role, "more_body": True})
    kind = fault.kind if fault else None
    if fault is not None and kind == "hang":
        await asyncio.sleep(fault.hang)
        return "dropped"  # returning mid-response: uvicorn closes the connection
    breaks_at = min(fault.after, tokens) if fault and kind in _BREAKS else None
    loop, sent, frames = asyncio.get_running_loop(), 0, b""
    delta = _content_delta if pieces is None else lambda i: orjson.dumps({"content": pieces[i]})
    await _sleep_until(first_at)  # an empty answer, too, waits for its ttft
    while sent < tokens or sent == breaks_at:
        if sent == breaks_at:
            if kind == "drop":
                await send({"type": "http.response.body", "body": frames, "more_body": True})
                return "dropped"
            if kind == "truncate":
                await send({"type": "http.response.body", "body": frames, "more_body": False})
                return "truncated"
            frames += b'data: {"id":"' + head["id"].encode() + b'","choices":[{"index":0,"del\n\n'
            breaks_at = None  # malformed: one garbled line, then the rest
            if sent == tokens:
                break
        if (delay := first_at + sent / tps - loop.time() if tps else 0.0) > 0:
            await asyncio.sleep(delay)
        due = min(tokens, int((loop.time() - first_at) * tps) + 1) if tps else tokens
        due = max(due, sent + 1)  # float rounding must not stall the schedule
        if breaks_at is not None:
            due = min(due, breaks_at)
        frames += b"".join([prefix + delta(i) + tail for i in range(sent, due)])
        sent = due
        if sent < tokens and sent != breaks_at:
            await send({"type": "http.response.body", "body": frames, "more_body": True})
            frames = b""
    # the last tokens, the stop chunk, the usage chunk and [DONE] share one write
    choice = {"index": 0, "delta": {}, "logprobs": None, "finish_reason": finish}
    stop = {**head, "choices": [choice], **({"usage": None} if usage else {})}
    last = [frames, b"data: ", orjson.dumps(stop), b"\n\n"]
    if usage:
        last += [b"data: ", orjson.dumps({**head, "choices": [], "usage": usage}), b"\n\n"]
    await send({"type": "http.response.body", "body": b"".join([*last, _DONE]), "more_body": False})
    return "malformed" if kind == "malformed" else "complete"


_BREAKS = ("drop", "truncate", "malformed")


@contextlib.contextmanager
def _cancel_on_disconnect(receive: Receive, stats: Stats) -> Iterator[None]:
    """Stop working for a client that left (uvicorn's ``send`` just drops the bytes).

    One watcher task per request, not per chunk; without it an abandoned long ttft would keep
    the task alive and hold up the server's shutdown. Completing the response also ends
    ``receive``, but the watcher is retired on the way out before it can run.
    """
    task = asyncio.current_task()
    assert task is not None

    async def watch() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        stats.disconnects += 1
        task.cancel()

    watcher = asyncio.ensure_future(watch())
    try:
        yield
    except asyncio.CancelledError:
        if not watcher.done() or watcher.cancelled():
            raise  # cancelled by someone else, e.g. the server shutting down
        task.uncancel()
    finally:
        watcher.cancel()


async def _sleep_until(deadline: float) -> None:
    delay = deadline - asyncio.get_running_loop().time()
    if delay > 0:
        await asyncio.sleep(delay)


async def _read_json(receive: Receive) -> dict[str, Any]:
    chunks, more = [], True
    while more:
        message = await receive()
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)
    try:
        body = orjson.loads(b"".join(chunks))
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, f"The body is not valid JSON: {exc}", "invalid_json") from None
    if not isinstance(body, dict):
        raise ApiError(400, "The request body must be a JSON object", "invalid_json")
    return body


@dataclass(frozen=True, slots=True)
class _Plan:
    """How to answer one chat request."""

    ttft: float
    tokens: int
    tps: float
    fault: Fault | None


def _overrides(scope: Message, config: ServerConfig) -> _Plan:
    """ttft, tokens, tps and the fault for one chat request: the config (a queued fault is
    used up here), overridden by x-test-* headers."""
    ttft, tokens, tps = config.ttft, config.tokens, config.tokens_per_second
    options: dict[str, Any] = {}
    for name, value in scope["headers"]:
        if not name.startswith(b"x-test-"):
            continue
        try:
            if name == b"x-test-ttft":
                ttft = float(value)
            elif name == b"x-test-tokens":
                tokens = int(value)
            elif name == b"x-test-tps":
                tps = float(value)
            elif name == b"x-test-fault":
                options["kind"] = value.decode()
            elif name in _FAULT_HEADERS:
                options[_FAULT_HEADERS[name][0]] = _FAULT_HEADERS[name][1](value)
        except ValueError:
            raise ApiError(
                400, f"Bad {name.decode()}: {value.decode('latin-1')!r}", "bad_header"
            ) from None
    fault = config.faults.pop(0) if config.faults else config.fault
    if "kind" in options:
        try:
            fault = Fault(**options)
        except ValueError as exc:
            raise ApiError(400, str(exc), "bad_header") from None
    elif options and fault is not None:
        fault = Fault(**{**asdict(fault), **options})
    return _Plan(ttft, max(tokens, 0), max(tps, 0.0), fault)


_FAULT_HEADERS: dict[bytes, tuple[str, Callable[[bytes], Any]]] = {
    b"x-test-retry-after": ("retry_after", float),
    b"x-test-fault-after": ("after", int),
    b"x-test-trickle": ("interval", float),
    b"x-test-hang": ("hang", float),
}


def _requested_fault(scope: Message) -> Fault | None:
    """The fault a request asks for in its own headers (``x-test-fault`` and its options)."""
    headers = dict(scope["headers"])
    kind = headers.get(b"x-test-fault")
    if kind is None:
        return None
    try:
        options = {
            option: parse(headers[name])
            for name, (option, parse) in _FAULT_HEADERS.items()
            if name in headers
        }
        return Fault(kind.decode(), **options)
    except ValueError as exc:
        raise ApiError(400, f"Bad fault headers: {exc}", "bad_header") from None


def _usage(messages: list[Any], completion: int) -> dict[str, int]:
    contents = [m.get("content") for m in messages if isinstance(m, dict)]
    prompt = sum(len(_WORD.findall(c)) for c in contents if isinstance(c, str))
    return dict(
        prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion
    )


async def _respond(
    send: Send, body: bytes, status: int = 200, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    headers = [*_JSON, (b"content-length", str(len(body)).encode()), *(extra or [])]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


class _DroppedOnPurpose(logging.Filter):
    """Keep uvicorn from reporting as an app error the connections a fault drops on purpose."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("ASGI callable returned without completing")


class _QuietServer(uvicorn.Server):
    """A uvicorn server that leaves signal handling to its host (pytest, or our CLI)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Any:
        yield


@contextlib.asynccontextmanager
async def serve_openai(
    config: ServerConfig | None = None, port: int = 0
) -> AsyncIterator[OpenAIApp]:
    """Run the server in the current event loop on 127.0.0.1 (a free port when 0)."""
    app = OpenAIApp(config)
    sock = socket.create_server(("127.0.0.1", port), backlog=2048)
    # http="auto" is httptools when installed. Keep-alive outlives the clients' pools (5 s would
    # race their reuse of idle connections); 2 s into a shutdown uvicorn cancels what is left.
    options = uvicorn.Config(
        app, lifespan="off", log_level="warning", access_log=False, proxy_headers=False,
        timeout_keep_alive=75, timeout_graceful_shutdown=2,
    )  # fmt: skip
    logging.getLogger("uvicorn.error").addFilter(_DroppedOnPurpose())  # once: a set
    server = _QuietServer(options)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                task.result()  # raises what went wrong
                raise RuntimeError("the OpenAI test server exited during startup")
            await asyncio.sleep(0.005)
        app.base_url = f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
        yield app
    finally:
        server.should_exit = True
        await task
        sock.close()


async def _main(config: ServerConfig, port: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with serve_openai(config, port) as server:
        print(f"READY {server.base_url}", flush=True)
        await stop.wait()


def main() -> None:
    """CLI: run as a separate process so the benchmark measures its CPU apart."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--ttft", type=float, default=0.0)
    parser.add_argument("--tokens", type=int, default=40)
    parser.add_argument("--tps", type=float, default=100.0)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument(
        "--fault", choices=FAULT_KINDS, help="fail every chat request like this (see Fault)"
    )
    args = parser.parse_args()
    config = ServerConfig(args.ttft, args.tokens, args.tps, args.dim)
    config.fault = Fault(args.fault) if args.fault else None
    try:
        from uvloop import new_event_loop as loop_factory
    except ImportError:
        loop_factory = None  # type: ignore[assignment]
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(_main(config, args.port))


if __name__ == "__main__":
    main()
