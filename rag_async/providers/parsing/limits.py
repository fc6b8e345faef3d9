"""What a hostile document is stopped by: the limits of one parse, and the errors that say
which one a document blew.

A few kilobytes can expand into thousands of pages (a PDF page tree that names the same node
again and again), nest deeper than a recursive walk survives (30,000 `<div>`s), or simply take
minutes. Each limit fails the document's job with its own code and no retry: the same bytes
blow the same limit every time.
"""

from __future__ import annotations

from dataclasses import dataclass

from rag_async.domain.errors import BadRequest

# Beyond this nesting an HTML page is refused rather than walked. Real pages nest a few dozen
# elements; the walk recurses once per level (two frames in a definition list), so this stays
# well inside Python's default recursion limit of 1000.
MAX_HTML_DEPTH = 256


@dataclass(frozen=True, slots=True)
class ParseLimits:
    """The limits `parse()` itself checks (None: no limit). Time and memory are the isolated
    parse process's (parsing/isolated.py)."""

    max_pages: int | None = None
    max_chars: int | None = None


class DocumentLimit(BadRequest):
    """A document beyond one of the limits. The same bytes fail the same way: never retried."""

    retryable = False


class TooManyPages(DocumentLimit):
    code = "too_many_pages"


class TooDeep(DocumentLimit):
    code = "too_deep"


class TooMuchText(DocumentLimit):
    code = "too_much_text"

    @classmethod
    def of(cls, filename: str, limit: int) -> TooMuchText:
        return cls(f"{filename}: more than {limit} characters of text (RAG_MAX_DOCUMENT_CHARS)")


class TooManyChunks(DocumentLimit):
    code = "too_many_chunks"


class ParseTimeout(DocumentLimit):
    """Parsing took longer than RAG_PARSE_TIMEOUT (wall clock, or CPU time)."""

    code = "parse_timeout"


class ParseMemory(DocumentLimit):
    """Parsing needed more memory than RAG_PARSE_MEMORY_MB."""

    code = "parse_memory"


class ParseCrashed(DocumentLimit):
    """The parse process died on the document (a crash in a parser's C code, or an allocation
    that failed where Python could not raise MemoryError)."""

    code = "parse_crashed"
