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
from functools import lru_cache

from qdrant_client import models

_TOKEN = re.compile(r"[^\W_]+")  # letters and digits; "__init__" and "snake_case" split apart
_MIN_STEM = 3

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

    `k1` and `b` are the usual BM25 constants. Qdrant knows nothing of document lengths, so
    length normalisation uses a fixed `avg_len`: about the number of terms left in a chunk of
    the default 120 words once stopwords are gone.
    """

    name = "lexical-bm25 (offline)"

    def __init__(self, *, k1: float = 1.2, b: float = 0.75, avg_len: float = 64.0) -> None:
        self.k1 = k1
        self.b = b
        self.avg_len = avg_len

    def terms(self, text: str) -> list[str]:
        """The text's terms in order: lowercased, stopwords dropped, lightly stemmed."""
        return [
            stem(token)
            for token in _TOKEN.findall(text.lower())
            if len(token) > 1 and token not in STOPWORDS
        ]

    def document(self, text: str) -> models.SparseVector:
        terms = self.terms(text)
        norm = self.k1 * (1.0 - self.b + self.b * len(terms) / self.avg_len)
        frequencies: Counter[int] = Counter(term_id(term) for term in terms)
        weights = {index: tf * (self.k1 + 1.0) / (tf + norm) for index, tf in frequencies.items()}
        return _sparse(weights)

    def query(self, text: str) -> models.SparseVector:
        return _sparse(dict.fromkeys((term_id(term) for term in self.terms(text)), 1.0))


def term_id(term: str) -> int:
    """A term's sparse index. CRC-32 is stable across processes and Python versions (the
    built-in `hash()` is salted per process) and fills Qdrant's uint32 index space."""
    return zlib.crc32(term.encode("utf-8"))


@lru_cache(maxsize=65536)
def stem(word: str) -> str:
    """A light suffix stripper, so that "handle", "handles", "handled" and "handling" meet.

    Deliberately cruder than Porter: it only has to map the inflections of a word to one
    string, and documents and queries both go through it.
    """
    if len(word) <= _MIN_STEM or not word.isalpha():
        return word
    if word.endswith("ies") and len(word) > _MIN_STEM + 2:
        return word[:-3] + "y"  # "dictionaries" -> "dictionary"
    if word.endswith(("sses", "xes", "ches", "shes", "zes")):
        word = word[:-2]  # "classes" -> "class", "matches" -> "match"
    elif word.endswith("s") and not word.endswith(("ss", "us", "is")):
        word = word[:-1]
    for suffix in ("ing", "ed"):
        if word.endswith(suffix) and len(word) - len(suffix) >= _MIN_STEM:
            word = word[: -len(suffix)]
            if len(word) > _MIN_STEM and word[-1] == word[-2] and word[-1] not in "aeiouls":
                word = word[:-1]  # "running" -> "run", "stopped" -> "stop"
            break
    if word.endswith("e") and len(word) > _MIN_STEM:
        word = word[:-1]  # "handle" -> "handl", to meet "handling"
    return word


def _sparse(weights: dict[int, float]) -> models.SparseVector:
    # Sorted indices: Qdrant's local mode expects them for its sparse dot product.
    indices = sorted(weights)
    return models.SparseVector(indices=indices, values=[weights[i] for i in indices])
