"""PDF, with pypdf: the text layer of each page, and where each page starts.

A scanned PDF has no text layer; it is refused as empty rather than indexed as nothing.

The page count is known before any text is extracted, and the page tree is walked no further
than the page limit needs: a page tree whose nodes name the same child many times over makes
thousands of pages out of a few kilobytes. pypdf's own limits (decompressed stream sizes,
page tree depth, parsing work) stop the other bombs it knows.
"""

from __future__ import annotations

import io

from pypdf import PdfReader, apply_configuration, get_configuration
from pypdf.errors import LimitReachedError, PyPdfError

from rag_async.domain.errors import BadRequest
from rag_async.providers.parsing.limits import (
    ParseLimits,
    ParseMemory,
    TooDeep,
    TooManyPages,
    TooMuchText,
)
from rag_async.providers.parsing.parsed import ParsedDocument, escape_markup

# Page tree nodes visited per page allowed: a tree of N pages with no node of a single child
# has fewer than N inner nodes; the slack covers the root and chains of one-child nodes.
_TREE_ENTRIES_PER_PAGE = 2
_TREE_ENTRIES_SLACK = 128


def parse_pdf(filename: str, content: bytes, limits: ParseLimits = ParseLimits()) -> ParsedDocument:
    """The text of every page. Raises `TooManyPages`, `TooDeep` (the page tree) or
    `TooMuchText` as soon as the document is known to be beyond `limits`."""
    configuration = get_configuration()
    if limits.max_pages is not None:
        configuration = configuration.with_overwrites(
            page_tree_maximum_entries=_TREE_ENTRIES_PER_PAGE * limits.max_pages
            + _TREE_ENTRIES_SLACK
        )
    try:
        with apply_configuration(configuration):
            reader = PdfReader(io.BytesIO(content))
            if reader.is_encrypted and not reader.decrypt(""):
                raise BadRequest(f"{filename}: the PDF is encrypted", code="encrypted_document")
            texts = _page_texts(filename, reader, limits)
            title = reader.metadata.title if reader.metadata else None
    except BadRequest:
        raise
    except LimitReachedError as error:
        raise _limit_reached(filename, error, limits) from None
    # pypdf reports a damaged file through its own errors and, deeper down, plain ones.
    except (PyPdfError, ValueError, KeyError, TypeError, AttributeError, OSError) as error:
        raise BadRequest(
            f"{filename}: not a readable PDF ({type(error).__name__}: {error})",
            code="corrupt_document",
        ) from None
    if not any(texts):
        raise BadRequest(f"{filename}: the PDF has no text layer (a scan?)", code="empty_document")
    starts: list[int] = []
    parts: list[str] = []
    offset = 0
    for text in texts:
        starts.append(offset)
        parts.append(text)
        offset += len(text) + 2  # the blank line between pages
    return ParsedDocument(
        title=str(title).strip() or None if title else None,
        text="\n\n".join(parts),
        format="pdf",
        page_starts=tuple(starts),
    )


def _page_texts(filename: str, reader: PdfReader, limits: ParseLimits) -> list[str]:
    count = len(reader.pages)  # walks the page tree (within the limits), extracts nothing
    if limits.max_pages is not None and count > limits.max_pages:
        raise _too_many_pages(filename, limits.max_pages, count)
    texts = []
    total = 0
    for page in reader.pages:
        text = escape_markup(page.extract_text() or "").strip()
        total += len(text) + 2  # the blank line between pages
        if limits.max_chars is not None and total > limits.max_chars:
            raise TooMuchText.of(filename, limits.max_chars)
        texts.append(text)
    return texts


def _limit_reached(filename: str, error: LimitReachedError, limits: ParseLimits) -> BadRequest:
    """One of pypdf's limits, as the document's error."""
    message = str(error)
    if "page tree" in message.lower():
        if "depth" in message.lower():
            return TooDeep(f"{filename}: the PDF's page tree is too deep ({message})")
        if limits.max_pages is not None:
            return _too_many_pages(filename, limits.max_pages)
        return TooManyPages(f"{filename}: too many pages ({message})")
    # A decompression bomb, or a stream of endless parsing work: pypdf stops what would
    # otherwise take the parse's memory.
    return ParseMemory(f"{filename}: beyond one of pypdf's limits ({message})")


def _too_many_pages(filename: str, limit: int, count: int | None = None) -> TooManyPages:
    found = f"{count} pages" if count is not None else f"more than {limit} pages"
    return TooManyPages(f"{filename}: {found}; the limit is {limit} (RAG_MAX_PAGES)")
