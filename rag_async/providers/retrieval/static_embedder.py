"""The offline dense encoder: static word embeddings shipped inside a pip package.

WordLlama's `l2_supercat` model (MIT) is a table of token vectors (256 dimensions) taken
from a large language model's embedding layer and trained for similarity: a text's vector is
the mean of its tokens' vectors. No transformer runs, so a passage costs about what
tokenising it does and ingestion keeps its pace, yet words that share no letters ("sort" and
"order", "missing file" and "FileNotFoundError") land near each other, which BM25 cannot do.
docs/benchmarks.md has the candidates measured and why this one.

The weights and the tokenizer are files of the `wordllama` package (the `dense` extra): no
download ever happens, and without the package retrieval stays lexical.
"""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import structlog

log = structlog.get_logger(__name__)

MODEL = "l2_supercat"
DIMENSION = 256
# Texts encoded per call into the model: bounds the padded token matrix of one call.
BATCH = 64


def available() -> bool:
    """Whether the package holding the weights is installed."""
    return importlib.util.find_spec("wordllama") is not None


class StaticEmbedder:
    """An `Embedder` over WordLlama's bundled static model. Encoding is numpy and Rust work,
    run in a thread so that the worker's event loop never waits on it."""

    name = f"wordllama-{MODEL}-{DIMENSION} (static, offline)"

    def __init__(self, encode: Callable[[list[str]], Any]) -> None:
        self._encode = encode

    @classmethod
    def load(cls) -> StaticEmbedder:
        """The model from the package's own files. WordLlama looks for its tokenizer in a
        folder its wheel does not have (`tokenizer/`, the wheel ships `tokenizers/`) and
        would then download it: naming the package folder as its cache finds both files
        there, and `disable_download` makes a missing file an error instead of a request."""
        import wordllama

        folder = Path(wordllama.__file__).parent
        model = wordllama.WordLlama.load(
            config=MODEL, dim=DIMENSION, cache_dir=folder, disable_download=True
        )

        def encode(texts: list[str]) -> Any:
            return model.embed(texts, norm=True, batch_size=BATCH)

        return cls(encode)

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        if not texts:
            return []
        matrix = await asyncio.to_thread(self._encode, list(texts))
        vectors: list[list[float]] = matrix.tolist()
        return vectors


def load_default() -> StaticEmbedder | None:
    """The offline embedder, or None (lexical retrieval) when its package is missing."""
    if not available():
        log.info(
            "retrieval.lexical_only",
            reason="the offline dense model is not installed",
            hint="pip install 'rag-async[dense]' for hybrid retrieval",
        )
        return None
    return StaticEmbedder.load()
