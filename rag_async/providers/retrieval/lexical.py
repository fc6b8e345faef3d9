"""Offline lexical retrieval: BM25 as sparse vectors, with the IDF half computed by Qdrant.

A document (chunk) becomes a sparse vector of saturated, length-normalised term frequencies,
and a query a sparse vector of its distinct terms with weight 1. The collection's sparse
vector is configured with `Modifier.IDF`, so Qdrant multiplies each query term by its inverse
document frequency over the live collection, and the dot product is the BM25 score. Nothing
here needs a model or a network.
"""

from __future__ import annotations

import re
import zlib
from collections import Counter
from collections.abc import Callable
from functools import lru_cache

from qdrant_client import models

from rag_async.providers.retrieval.stemming import english_stem

# A token is a number with its decimal points ("3.11", "0.1": versions and decimals mean
# nothing cut apart) or a run of word characters: a word or a code identifier, underscores
# included, so that "lru_cache" can be matched whole as well as by its parts.
_TOKEN = re.compile(r"\d+(?:\.\d+)+|\w+")
# Where an identifier's parts meet: "ThreadPool" -> "Thread|Pool", "HTTPServer" -> "HTTP|Server".
_CAMEL_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")

# A small English stop list: enough to keep "how do I ... in Python?" from matching every
# chunk on "how" and "do", small enough not to drop words that carry meaning in technical text.
STOPWORDS: frozenset[str] = frozenset(
    """
    a about above after again against all am an and any are as at be because been before being
    below between both but by can could did do does doing down during each few for from further
    had has have having he her here hers herself him himself his how i if in into is it its
    itself just me more most my myself no nor not now of off on once only or other our ours
    ourselves out over own same she should so some such than that the their theirs them
    themselves then there these they this those through to too under until up very was we were
    what when where which while who whom why will with would you your yours yourself yourselves
    s t don doesn isn aren wasn weren won can't let also may might must shall us get got
    """.split()
)


class LexicalEncoder:
    """The tokenizer and the BM25 term weights, as Qdrant sparse vectors.

    `k1` and `b` are the usual BM25 constants (Robertson and Zaragoza's defaults). Qdrant knows
    nothing of document lengths, so length normalisation uses a fixed `avg_len`: the mean
    number of terms of a chunk of the default 200 tokens, title and headings included (63 on
    the bundled demo corpus).
    """

    name = "lexical-bm25 (offline)"
    # Bumped when the tokenizer or the stemmer change: vectors of another version do not match.
    version = 3
    avg_len = 64.0

    def __init__(
        self,
        *,
        k1: float = 1.2,
        b: float = 0.75,
        stemmer: Callable[[str], str] = english_stem,
    ) -> None:
        self.k1 = k1
        self.b = b
        self.stemmer = stemmer

    @property
    def signature(self) -> str:
        """Everything a document's vectors depend on, besides its text."""
        stemmer = getattr(self.stemmer, "__name__", repr(self.stemmer))
        return f"bm25 v{self.version} k1={self.k1} b={self.b} avg_len={self.avg_len} {stemmer}"

    def terms(self, text: str) -> list[str]:
        """The text's terms: lowercased, stopwords dropped, stemmed. A code identifier
        gives its parts and itself ("ThreadPoolExecutor": "thread", "pool", "executor",
        "threadpoolexecutor"), so that prose about a thread pool finds it, and the exact name
        still ranks the chunks that use it first."""
        terms: list[str] = []
        for token in _TOKEN.findall(text):
            terms.extend(_token_terms(token, self.stemmer))
        return terms

    def document(self, text: str) -> models.SparseVector:
        terms = self.terms(text)
        norm = self.k1 * (1.0 - self.b + self.b * len(terms) / self.avg_len)
        frequencies: Counter[int] = Counter(term_id(term) for term in terms)
        weights = {index: tf * (self.k1 + 1.0) / (tf + norm) for index, tf in frequencies.items()}
        return _sparse(weights)

    def query(self, text: str) -> models.SparseVector:
        return _sparse(dict.fromkeys((term_id(term) for term in self.terms(text)), 1.0))


@lru_cache(maxsize=65536)
def _token_terms(token: str, stemmer: Callable[[str], str]) -> tuple[str, ...]:
    parts = [
        part.lower() for piece in token.split("_") if piece for part in _CAMEL_BOUNDARY.split(piece)
    ]
    # Only words are stemmed: "utf8" or "sha256" are names.
    terms = [
        stemmer(part) if part.isalpha() else part
        for part in parts
        if len(part) > 1 and part not in STOPWORDS
    ]
    if len(parts) > 1:
        # The identifier whole, unstemmed: a name, not an English word.
        whole = token.strip("_").lower()
        if len(whole) > 1:
            terms.append(whole)
    return tuple(terms)


def term_id(term: str) -> int:
    """A term's sparse index. CRC-32 is stable across processes and Python versions (the
    built-in `hash()` is salted per process) and fills Qdrant's uint32 index space."""
    return zlib.crc32(term.encode("utf-8"))


def _sparse(weights: dict[int, float]) -> models.SparseVector:
    # Sorted indices: Qdrant's local mode expects them for its sparse dot product.
    indices = sorted(weights)
    return models.SparseVector(indices=indices, values=[weights[i] for i in indices])
