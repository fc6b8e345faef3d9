"""Dense embedders: one small protocol, and an OpenAI-compatible implementation.

Without an embedder, retrieval is lexical only (see `lexical`); with one, it is hybrid. With
no embeddings model configured, the worker uses the offline one (`static_embedder`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import openai

from rag_async.domain.errors import ProviderError
from rag_async.providers.retry import status_error

EMBED_BATCH_SIZE = 64


class Embedder(Protocol):
    """Turns texts into dense vectors, one per text, in order, all of the same length."""

    name: str

    async def embed(self, texts: Sequence[str]) -> list[list[float]]: ...


class OpenAIEmbedder:
    """Any OpenAI-compatible `/v1/embeddings` (OpenAI, vLLM, Ollama, llama.cpp server, ...).

    The client carries the base URL, key, timeout and connection pool; it is created once per
    process and passed in. Inputs are sent in batches because servers cap the inputs per call.
    """

    def __init__(self, client: openai.AsyncOpenAI, model: str) -> None:
        self._client = client
        self._model = model
        self.name = model

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        vectors: list[list[float]] = []
        for start in range(0, len(texts), EMBED_BATCH_SIZE):
            vectors.extend(await self._embed_batch(texts[start : start + EMBED_BATCH_SIZE]))
        return vectors

    async def _embed_batch(self, batch: Sequence[str]) -> list[list[float]]:
        try:
            response = await self._client.embeddings.create(
                model=self._model, input=list(batch), encoding_format="float"
            )
        except (openai.APITimeoutError, openai.APIConnectionError) as exc:
            raise ProviderError(f"embedder {self._model}: {exc}", retryable=True) from exc
        except openai.APIStatusError as exc:
            raise status_error(
                f"the embedder {self._model}", exc.status_code, exc.message, exc.response.headers
            ) from exc
        except openai.OpenAIError as exc:
            raise ProviderError(f"embedder {self._model}: {exc}", retryable=False) from exc

        # The API allows the data out of order; `index` says where each vector belongs.
        data = sorted(response.data, key=lambda item: item.index)
        if len(data) != len(batch):
            raise ProviderError(
                f"embedder {self._model} returned {len(data)} vectors for {len(batch)} inputs",
                retryable=False,
            )
        return [list(item.embedding) for item in data]
