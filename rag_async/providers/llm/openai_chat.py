"""Any OpenAI-compatible chat-completions server (OpenAI, vLLM, Ollama, llama.cpp server).

The SDK does what it is good at: configuration, auth, the request and its errors. The stream
itself is read from the SDK's raw streaming response as bytes and parsed line by line with
orjson: the typed chunk objects cost several times the CPU per token (docs/benchmarks.md,
"The per-token hot path").

Retries within one call are this module's, not the SDK's: the SDK would sleep out a
Retry-After inside the wait for the first token, and it cannot know whether text has already
been passed on. Here each try has its own first-token deadline, a retry waits at least what
the server asked, and only a call that has yielded nothing is retried: once text is out, a
failure ends the call and the job's next attempt (announced to clients) starts the answer over.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx2  # the HTTP client of openai>=3; its transport errors escape mid-stream
import openai
import orjson
import structlog

from rag_async import tracing
from rag_async.domain.errors import ProviderError
from rag_async.domain.generation import Generation, GenerationReport, Usage
from rag_async.domain.sources import Source
from rag_async.metrics import count_tokens
from rag_async.providers.llm.prompt import build_messages
from rag_async.providers.retry import backoff, status_error
from rag_async.store.conversations import Turn

log = structlog.get_logger(__name__)

_HINTS = {
    401: " (check RAG_LLM_API_KEY)",
    403: " (check RAG_LLM_API_KEY and the model's access)",
    404: " (check RAG_LLM_BASE_URL and RAG_LLM_MODEL)",
}


@dataclass(frozen=True, slots=True)
class StreamTimeouts:
    """How long an answer may take in all, wait for its first token, and idle between chunks
    (the connect timeout is the HTTP client's)."""

    total: float = 120.0
    first_token: float = 30.0
    idle: float = 15.0


class OpenAIChat:
    """Streams an answer from a chat-completions endpoint, every wait bounded.

    A call is tried again as often as the client's `max_retries` says; the client itself is
    used with the SDK's retries off (see the module's docstring).
    """

    def __init__(
        self,
        client: openai.AsyncOpenAI,
        model: str,
        *,
        max_tokens: int,
        timeouts: StreamTimeouts | None = None,
    ) -> None:
        self._retries = client.max_retries
        self._client = client.with_options(max_retries=0)
        self._model = model
        self._max_tokens = max_tokens
        self._timeouts = timeouts or StreamTimeouts()
        self.name = f"openai-compatible:{model}"

    async def stream(
        self,
        question: str,
        sources: Sequence[Source],
        *,
        collection: str | None = None,
        history: Sequence[Turn] = (),
        generation: Generation | None = None,
        report: GenerationReport | None = None,
    ) -> AsyncIterator[str]:
        generation = generation or Generation()
        messages = build_messages(question, sources, history, generation.instructions)
        request = _Request(messages, generation, generation.token_limit(self._max_tokens), report)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeouts.total
        retry = 0
        while True:
            yielded = False
            try:
                async with contextlib.aclosing(self._one_try(request, deadline)) as pieces:
                    async for piece in pieces:
                        yielded = True
                        yield piece
                return
            except ProviderError as error:
                if yielded or not error.retryable or retry >= self._retries:
                    raise
                # Shorter steps than a job's: this wait counts against the call's deadline.
                pause = backoff(retry + 1, error.retry_after, first=0.5, cap=8.0)
                if loop.time() + pause >= deadline:
                    raise  # no time left in this call: the job's retry honours Retry-After
                retry += 1
                log.info("LLM call failed, retrying", error=error.message, pause=round(pause, 2))
                await asyncio.sleep(pause)

    async def _one_try(self, request: _Request, deadline: float) -> AsyncGenerator[str, None]:
        """One request: its first token within `first_token`, each next one within `idle`,
        all before `deadline`.

        Each wait is bounded on its own rather than by one timer around the loop: a timer held
        across `yield` would fire in the consumer's code (say, while it appends an event to a
        slow Redis) and cancel the job instead of failing this call.
        """
        loop = asyncio.get_running_loop()
        first = _Wait(min(loop.time() + self._timeouts.first_token, deadline), "first")
        progress = _Progress(first)
        # Not the current span: the context between two yields is the consumer's.
        call = tracing.span(
            "llm.chat", current=False, attributes={"gen_ai.request.model": self._model}
        )
        try:
            with call as span:
                async with contextlib.AsyncExitStack() as stack:
                    body = await self._open(stack, request, progress)
                    texts = self._texts(body, progress, deadline)
                    async with contextlib.aclosing(texts):
                        async for text in texts:
                            yield text
                _trace_usage(span, progress.usage)
        except TimeoutError as error:
            message = progress.waiting.failure(self._timeouts, deadline, loop.time())
            raise ProviderError(message, retryable=True) from error
        except openai.APIStatusError as error:
            raise _status_error(error) from error
        except (openai.APIConnectionError, openai.APITimeoutError, httpx2.TransportError) as error:
            raise _connection_error(error, progress) from error
        if progress.usage is not None:
            count_tokens(progress.usage)
        request.tell(progress)
        if not progress.finished:
            # A proxy or a crashed server can end the body cleanly mid-answer: without the
            # stop chunk or [DONE] the text may be cut anywhere, so it is not an answer.
            raise ProviderError(
                "the LLM's stream ended without finishing the answer (after "
                f"{progress.received} characters, no [DONE])",
                retryable=True,
            )

    async def _open(
        self, stack: contextlib.AsyncExitStack, request: _Request, progress: _Progress
    ) -> AsyncIterator[bytes]:
        """Sends the request and, once its response has started (within the first-token
        wait), returns its body; `stack` closes the response.

        Through the client's own `post` (its auth, headers and status errors), not
        `chat.completions.create`: that one walks the whole request through its typed
        transform first, a cost per answer that buys nothing for these plain messages."""
        generation = request.generation
        body: dict[str, Any] = {
            "model": self._model,
            "messages": request.messages,
            "max_tokens": request.max_tokens,
            "stream": True,
            # The token counts come in a last chunk (no choices): rag_llm_tokens_total.
            # A server that knows no such option ignores it.
            "stream_options": {"include_usage": True},
        }
        if generation.temperature is not None:
            body["temperature"] = generation.temperature
        if generation.stop:
            body["stop"] = generation.stop
        async with progress.waiting.bound():
            response = await self._client.post(
                "/chat/completions",
                cast_to=httpx2.Response,
                body=body,
                options={"security": {"bearer_auth": True}},
                stream=True,
            )
        stack.push_async_callback(response.aclose)
        progress.responded = True
        _check_content_type(response.headers)
        return response.aiter_bytes()

    async def _texts(
        self, body: AsyncIterator[bytes], progress: _Progress, deadline: float
    ) -> AsyncGenerator[str, None]:
        """The answer's text as the body's lines bring it, each read bounded by what
        `progress` is waiting for."""
        loop = asyncio.get_running_loop()
        chunks = body.__aiter__()
        pending = b""
        while True:
            async with progress.waiting.bound():
                data = await anext(chunks, None)
            if data is None:
                break
            *lines, pending = (pending + data).split(b"\n")
            for line in lines:
                if text := progress.take(line):
                    yield text
                    # The idle clock starts once the consumer is done with the text.
                    idle_until = min(loop.time() + self._timeouts.idle, deadline)
                    progress.waiting = _Wait(idle_until, "idle")
        # Read to the end even after [DONE]: the connection goes back to the pool.
        # A last line without its newline: take it if whole (a body cut mid-line is
        # an unfinished answer, not a malformed one).
        with contextlib.suppress(ProviderError):
            if text := progress.take(pending):
                yield text

    async def aclose(self) -> None:
        await self._client.close()


@dataclass(frozen=True, slots=True)
class _Request:
    """One answer's request: its messages, its options (token limit, temperature, stop) and
    where to report how it ended."""

    messages: Any  # the SDK's typed message params, built as plain dicts
    generation: Generation
    max_tokens: int
    report: GenerationReport | None

    def tell(self, progress: _Progress) -> None:
        if self.report is None:
            return
        if progress.usage is not None:
            self.report.usage = Usage.from_chat(progress.usage)
        if progress.finish_reason == "length":
            self.report.incomplete = "max_output_tokens"


@dataclass(frozen=True, slots=True)
class _Wait:
    """What a call is waiting for (its first token, or the next after `idle`) and until when."""

    until: float
    what: str

    def bound(self) -> asyncio.Timeout:
        return asyncio.timeout_at(self.until)

    def failure(self, timeouts: StreamTimeouts, deadline: float, now: float) -> str:
        if self.until >= deadline and now >= deadline - 0.01:
            return f"the LLM did not send the whole answer within {timeouts.total:g} s"
        if self.what == "first":
            return f"the LLM did not send its first token within {timeouts.first_token:g} s"
        return f"the LLM did not send more within {timeouts.idle:g} s (idle timeout)"


@dataclass(slots=True)
class _Progress:
    """How far one try has got: what it is waiting for, whether the response has started (a
    later failure broke the stream), the characters of answer text received, and whether the
    stream has said the answer is finished."""

    waiting: _Wait
    responded: bool = False
    received: int = 0
    finished: bool = False
    finish_reason: str | None = None  # "length": the token limit cut the answer
    usage: dict[str, Any] | None = None  # the token counts, if the server sent them

    def take(self, line: bytes) -> str | None:
        """The text of one stream line, counted."""
        text, end, usage = _parse(line)
        self.finished = self.finished or bool(end)
        if isinstance(end, str):
            self.finish_reason = end
        self.usage = usage or self.usage
        if text:
            self.received += len(text)
        return text


def _parse(line: bytes) -> tuple[str | None, bool | str, dict[str, Any] | None]:
    """The delta text of one line of a chat-completions SSE stream (None if it has none),
    whether the line says the answer is finished ([DONE], or a choice's finish_reason, given
    as such), and the token usage it reports, if any."""
    if not line.startswith(b"data:"):
        return None, False, None  # blank separators, comments and other fields carry no text
    data = line[5:].strip()
    if data == b"[DONE]":
        return None, True, None
    try:
        chunk = orjson.loads(data)
    except orjson.JSONDecodeError as error:
        # A server that garbles its stream will likely garble it again: fail, do not retry.
        raise ProviderError(
            f"the LLM sent a malformed stream line (not JSON): {data[:80]!r}", retryable=False
        ) from error
    if not isinstance(chunk, dict):
        raise ProviderError(
            f"the LLM sent a malformed stream line (not an object): {data[:80]!r}",
            retryable=False,
        )
    if "error" in chunk:  # e.g. vLLM, when generation fails after the stream has started
        raise ProviderError(
            f"the LLM reported an error mid-stream: {chunk['error']}", retryable=True
        )
    usage = chunk.get("usage")
    usage = usage if isinstance(usage, dict) else None
    choices = chunk.get("choices")
    if not choices or not isinstance(choices, list) or not isinstance(choices[0], dict):
        return None, False, usage  # e.g. the usage chunk
    choice = choices[0]
    delta = choice.get("delta")
    content = delta.get("content") if isinstance(delta, dict) else None
    text = content if isinstance(content, str) else None
    finish = choice.get("finish_reason")
    return text, (finish if isinstance(finish, str) else bool(finish)), usage


def _trace_usage(span: Any, usage: dict[str, Any] | None) -> None:
    if span is not None and usage:
        for name, key in (("input", "prompt_tokens"), ("output", "completion_tokens")):
            if isinstance(usage.get(key), int):
                span.set_attribute(f"gen_ai.usage.{name}_tokens", usage[key])


def _check_content_type(headers: Mapping[str, str]) -> None:
    """A 200 that is not an event stream (an HTML page, a JSON body) is not an answer."""
    content_type = headers.get("content-type", "")
    if content_type and "event-stream" not in content_type:
        raise ProviderError(
            f"the LLM answered with {content_type.split(';')[0]}, not an event stream "
            "(is RAG_LLM_BASE_URL an OpenAI-compatible API, ending in /v1?)",
            retryable=False,
        )


def _connection_error(error: Exception, progress: _Progress) -> ProviderError:
    cause = str(error) or type(error).__name__
    if progress.responded:
        message = f"the LLM's stream broke off after {progress.received} characters: {cause}"
    else:
        message = f"the LLM could not be reached: {cause}"
    return ProviderError(message, retryable=True)


def _status_error(error: openai.APIStatusError) -> ProviderError:
    status = error.status_code
    body = error.body
    detail = body.get("message") if isinstance(body, dict) else None
    if not isinstance(detail, str) or not detail:
        detail = error.message
    return status_error(
        "the LLM", status, f"{detail}{_HINTS.get(status, '')}", error.response.headers
    )
