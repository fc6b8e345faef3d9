"""What every parser returns, what the parse process makes of it (`ChunkedDocument`), and the
helper the parsers share. The parsers and `parse()` that picks one all import this module, and
it imports none of them."""

from __future__ import annotations

import re
from dataclasses import dataclass

from rag_async.providers.parsing.chunking import Chunk

# A line of extracted text that the chunker would read as a heading or a code fence.
_MARKUP_LINE = re.compile(r"^([ \t]*)(#|```|~~~)", re.MULTILINE)


@dataclass(frozen=True, slots=True)
class ParsedDocument:
    """A document as the chunker reads it."""

    title: str | None
    text: str
    format: str
    # PDF: `page_starts[i]` is the offset in `text` where page i + 1 begins.
    page_starts: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class ChunkedDocument:
    """A document as the worker indexes it: parsed and chunked in a parse process."""

    title: str | None
    format: str
    chunks: tuple[Chunk, ...]


def escape_markup(text: str) -> str:
    """Keep extracted text from looking like Markdown to the chunker ("# define" in a PDF
    is not a heading)."""
    return _MARKUP_LINE.sub(r"\1\\\2", text)
