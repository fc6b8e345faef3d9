"""Any OpenAI-compatible chat-completions server (OpenAI, vLLM, Ollama, llama.cpp server).

The SDK does what it is good at: configuration, auth, the request and its errors. The stream
itself is read from the SDK's raw streaming response as bytes and parsed line by line with
orjson: the typed chunk objects cost about three times the CPU per token (docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import httpx2  # the HTTP client of openai>=3; its transport errors escape mid-stream
import openai
import orjson

from ..errors import ProviderError
from ..events import Source
from .prompt import build_messages


@dataclass(frozen=True, slots=True)
class StreamTimeouts:
    """How long an answer may take in all, wait for its first token, and idle between chunks
    (the connect timeout is the HTTP client's)."""

    total: float = 120.0
    first_token: float = 30.0
    idle: float = 15.0


class OpenAIChat:
    def __init__(
        self,
        client: openai.AsyncOpenAI,
        model: str,
        *,
        max_tokens: int,
        timeouts: StreamTimeouts | None = None,
    ) -> None:
        self._client = client
        self._model = model
        self._max_tokens = max_tokens
        self._timeouts = timeouts or StreamTimeouts()
        self.name = f"openai-compatible:{model}"

    async def stream(self, question: str, sources: Sequence[Source]) -> AsyncIterator[str]:
        timeouts = self._timeouts
        loop = asyncio.get_running_loop()
        started = loop.time()
        waiting_for = f"its first token within {timeouts.first_token:g} s"
        try:
            # One timer, moved as the stream advances: first-token, then idle, never past total.
            async with asyncio.timeout_at(
                started + min(timeouts.first_token, timeouts.total)
            ) as timer:
                async with self._client.chat.completions.with_streaming_response.create(
                    model=self._model,
                    messages=build_messages(question, sources),  # type: ignore[arg-type]
                    max_tokens=self._max_tokens,
                    stream=True,
                ) as response:
                    pending = b""
                    async for data in response.iter_bytes():
                        *lines, pending = (pending + data).split(b"\n")
                        for line in lines:
                            text = _content_of(line)
                            if text:
                                waiting_for = f"more within {timeouts.idle:g} s (idle timeout)"
                                timer.reschedule(
                                    min(loop.time() + timeouts.idle, started + timeouts.total)
                                )
                                yield text
                    # Read to the end even after [DONE]: the connection goes back to the pool.
        except TimeoutError as error:
            if loop.time() - started >= timeouts.total - 0.01:
                waiting_for = f"the whole answer within {timeouts.total:g} s"
            raise ProviderError(f"the LLM did not send {waiting_for}", retryable=True) from error
        except openai.APIStatusError as error:
            retryable = error.status_code == 429 or error.status_code >= 500
            raise ProviderError(
                f"the LLM answered HTTP {error.status_code}: {error.message}",
                retryable=retryable,
                retry_after=_retry_after(error.response.headers.get("retry-after")),
            ) from error
        except (openai.APIConnectionError, openai.APITimeoutError, httpx2.TransportError) as error:
            raise ProviderError(f"the LLM could not be reached: {error}", retryable=True) from error

    async def aclose(self) -> None:
        await self._client.close()


def _content_of(line: bytes) -> str | None:
    """The delta text of one line of a chat-completions SSE stream (None if it has none)."""
    if not line.startswith(b"data:"):
        return None  # blank separators, comments and other fields carry no text
    data = line[5:].strip()
    if data == b"[DONE]":
        return None
    try:
        chunk = orjson.loads(data)
    except orjson.JSONDecodeError as error:
        raise ProviderError(
            f"the LLM sent a malformed stream line: {data[:80]!r}", retryable=True
        ) from error
    if "error" in chunk:
        raise ProviderError(
            f"the LLM reported an error mid-stream: {chunk['error']}", retryable=True
        )
    choices = chunk.get("choices")
    if not choices:
        return None  # e.g. the usage chunk
    content = choices[0].get("delta", {}).get("content")
    return content if isinstance(content, str) else None


def _retry_after(value: str | None) -> float | None:
    """Retry-After in seconds (the delay form; an HTTP date is rare from LLM servers)."""
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None
