"""English stemming for lexical retrieval: Snowball's English stemmer (Porter2, Porter's own
revision of his 1980 algorithm), from the `snowballstemmer` package that Sphinx also uses.
With PyStemmer installed (a dependency), `snowballstemmer` hands out its C stemmer: the same
stems, about a hundred times faster than the pure-Python one.

It maps the inflected and derived forms of a word to one stem ("connect", "connected",
"connecting", "connection" and "connections" all become "connect"; "compression" meets
"compress", "automatically" meets "automatic"), so that a question and a passage need not use
the same form of a word. Stems are not words ("ponies" -> "poni"): only documents and queries,
both stemmed alike, ever compare them.
"""

from __future__ import annotations

import threading
from functools import lru_cache

import snowballstemmer

# A Snowball stemmer object keeps its word in itself (PyStemmer's C one too, and a cache):
# one at a time, whatever the thread (documents are encoded in worker threads as well as on
# the event loop).
_ENGLISH = snowballstemmer.stemmer("english")
_ONE_AT_A_TIME = threading.Lock()


@lru_cache(maxsize=200_000)  # a corpus repeats its words: a look-up beats even C Snowball
def english_stem(word: str) -> str:
    with _ONE_AT_A_TIME:
        return str(_ENGLISH.stemWord(word))
