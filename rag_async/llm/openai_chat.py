"""Any OpenAI-compatible chat-completions server (OpenAI, vLLM, Ollama, llama.cpp server).

The SDK does what it is good at: configuration, auth, the request and its errors. The stream
itself is read from the SDK's raw streaming response and parsed line by line with orjson:
the typed chunk objects cost about three times the CPU per token (docs/benchmarks.md).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

import openai
import orjson

from ..errors import ProviderError
from ..events import Source
from .prompt import build_messages


class OpenAIChat:
    def __init__(self, client: openai.AsyncOpenAI, model: str, *, max_tokens: int) -> None:
        self._client = client
        self._model = model
        self._max_tokens = max_tokens
        self.name = f"openai-compatible:{model}"

    async def stream(self, question: str, sources: Sequence[Source]) -> AsyncIterator[str]:
        try:
            async with self._client.chat.completions.with_streaming_response.create(
                model=self._model,
                messages=build_messages(question, sources),  # type: ignore[arg-type]
                max_tokens=self._max_tokens,
                stream=True,
            ) as response:
                async for line in response.iter_lines():
                    text = _content_of(line)
                    if text is _END:
                        return
                    if text:
                        yield text
        except openai.APIStatusError as error:
            retryable = error.status_code == 429 or error.status_code >= 500
            raise ProviderError(
                f"the LLM answered HTTP {error.status_code}: {error.message}", retryable=retryable
            ) from error
        except (openai.APIConnectionError, openai.APITimeoutError) as error:
            raise ProviderError(f"the LLM could not be reached: {error}", retryable=True) from error

    async def aclose(self) -> None:
        await self._client.close()


_END = "\x00end"


def _content_of(line: str) -> str | None:
    """The delta text of one SSE line of a chat-completions stream, or `_END` at `[DONE]`."""
    if not line.startswith("data:"):
        return None  # blank separators, comments and other fields carry no text
    data = line[5:].strip()
    if data == "[DONE]":
        return _END
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
