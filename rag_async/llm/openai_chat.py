"""Any OpenAI-compatible chat-completions server (OpenAI, vLLM, Ollama, llama.cpp server).

The SDK does what it is good at: configuration, auth, the request and its errors. The stream
itself is read from the SDK's raw streaming response as bytes and parsed line by line with
orjson: the typed chunk objects cost about three times the CPU per token (docs/benchmarks.md).

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

from ..errors import ProviderError
from ..retry import backoff, status_error
from ..sources import Source
from .prompt import build_messages

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

    `retries` defaults to the client's `max_retries`; the client itself is used with the SDK's
    retries off (see the module's docstring).
    """

    def __init__(
        self,
        client: openai.AsyncOpenAI,
        model: str,
        *,
        max_tokens: int,
        timeouts: StreamTimeouts | None = None,
        retries: int | None = None,
    ) -> None:
        self._retries = client.max_retries if retries is None else retries
        self._client = client.with_options(max_retries=0)
        self._model = model
        self._max_tokens = max_tokens
        self._timeouts = timeouts or StreamTimeouts()
        self.name = f"openai-compatible:{model}"

    async def stream(self, question: str, sources: Sequence[Source]) -> AsyncIterator[str]:
        messages = build_messages(question, sources)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeouts.total
        retry = 0
        while True:
            yielded = False
            try:
                async with contextlib.aclosing(self._one_try(messages, deadline)) as pieces:
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

    async def _one_try(self, messages: Any, deadline: float) -> AsyncGenerator[str, None]:
        """One request: its first token within `first_token`, each next one within `idle`,
        all before `deadline`.

        Each wait is bounded on its own rather than by one timer around the loop: a timer held
        across `yield` would fire in the consumer's code (say, while it appends an event to a
        slow Redis) and cancel the job instead of failing this call.
        """
        timeouts = self._timeouts
        loop = asyncio.get_running_loop()
        started = loop.time()
        waiting = _Wait(min(started + timeouts.first_token, deadline), "first")
        responded = False  # the response has started (a later failure broke the stream)
        received = 0  # characters of answer text
        finished = False
        try:
            async with contextlib.AsyncExitStack() as stack:
                async with waiting.bound():
                    response = await stack.enter_async_context(
                        self._client.chat.completions.with_streaming_response.create(
                            model=self._model,
                            messages=messages,
                            max_tokens=self._max_tokens,
                            stream=True,
                        )
                    )
                responded = True
                _check_content_type(response.headers)
                chunks = response.iter_bytes().__aiter__()
                pending = b""
                while True:
                    async with waiting.bound():
                        data = await anext(chunks, None)
                    if data is None:
                        break
                    *lines, pending = (pending + data).split(b"\n")
                    for line in lines:
                        text, end = _parse(line)
                        finished = finished or end
                        if text:
                            received += len(text)
                            yield text
                            # The idle clock starts once the consumer is done with the text.
                            idle_until = min(loop.time() + timeouts.idle, deadline)
                            waiting = _Wait(idle_until, "idle")
                # Read to the end even after [DONE]: the connection goes back to the pool.
                # A last line without its newline: take it if whole (a body cut mid-line is
                # an unfinished answer, not a malformed one).
                with contextlib.suppress(ProviderError):
                    text, end = _parse(pending)
                    finished = finished or end
                    if text:
                        received += len(text)
                        yield text
        except TimeoutError as error:
            raise ProviderError(
                waiting.failure(timeouts, deadline, loop.time()), retryable=True
            ) from error
        except openai.APIStatusError as error:
            raise _status_error(error) from error
        except (openai.APIConnectionError, openai.APITimeoutError, httpx2.TransportError) as error:
            cause = str(error) or type(error).__name__
            if responded:
                message = f"the LLM's stream broke off after {received} characters: {cause}"
            else:
                message = f"the LLM could not be reached: {cause}"
            raise ProviderError(message, retryable=True) from error
        if not finished:
            # A proxy or a crashed server can end the body cleanly mid-answer: without the
            # stop chunk or [DONE] the text may be cut anywhere, so it is not an answer.
            raise ProviderError(
                f"the LLM's stream ended without finishing the answer (after {received} "
                "characters, no [DONE])",
                retryable=True,
            )

    async def aclose(self) -> None:
        await self._client.close()


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


def _parse(line: bytes) -> tuple[str | None, bool]:
    """The delta text of one line of a chat-completions SSE stream (None if it has none), and
    whether the line says the answer is finished ([DONE], or a choice's finish_reason)."""
    if not line.startswith(b"data:"):
        return None, False  # blank separators, comments and other fields carry no text
    data = line[5:].strip()
    if data == b"[DONE]":
        return None, True
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
    choices = chunk.get("choices")
    if not choices or not isinstance(choices, list) or not isinstance(choices[0], dict):
        return None, False  # e.g. the usage chunk
    choice = choices[0]
    delta = choice.get("delta")
    content = delta.get("content") if isinstance(delta, dict) else None
    return (content if isinstance(content, str) else None), bool(choice.get("finish_reason"))


def _check_content_type(headers: Mapping[str, str]) -> None:
    """A 200 that is not an event stream (an HTML page, a JSON body) is not an answer."""
    content_type = headers.get("content-type", "")
    if content_type and "event-stream" not in content_type:
        raise ProviderError(
            f"the LLM answered with {content_type.split(';')[0]}, not an event stream "
            "(is RAG_LLM_BASE_URL an OpenAI-compatible API, ending in /v1?)",
            retryable=False,
        )


def _status_error(error: openai.APIStatusError) -> ProviderError:
    status = error.status_code
    body = error.body
    detail = body.get("message") if isinstance(body, dict) else None
    if not isinstance(detail, str) or not detail:
        detail = error.message
    return status_error(
        "the LLM", status, f"{detail}{_HINTS.get(status, '')}", error.response.headers
    )
