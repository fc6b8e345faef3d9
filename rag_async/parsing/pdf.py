"""PDF, with pypdf: the text layer of each page, and where each page starts.

A scanned PDF has no text layer; it is refused as empty rather than indexed as nothing.
"""

from __future__ import annotations

import io

from pypdf import PdfReader
from pypdf.errors import PyPdfError

from rag_async.errors import BadRequest
from rag_async.parsing.parsed import ParsedDocument, escape_markup


def parse_pdf(filename: str, content: bytes) -> ParsedDocument:
    try:
        reader = PdfReader(io.BytesIO(content))
        if reader.is_encrypted and not reader.decrypt(""):
            raise BadRequest(f"{filename}: the PDF is encrypted", code="encrypted_document")
        texts = [escape_markup(page.extract_text() or "").strip() for page in reader.pages]
        title = reader.metadata.title if reader.metadata else None
    except BadRequest:
        raise
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
