"""`parse(filename, content)`: pick the parser by the file's extension, check what comes out."""

from __future__ import annotations

import re
from pathlib import PurePosixPath

from rag_async.domain.errors import BadRequest, TooLarge
from rag_async.providers.parsing.limits import ParseLimits, TooMuchText
from rag_async.providers.parsing.parsed import ParsedDocument

# Extension -> format. What is not here is refused before any byte is parsed.
FORMATS: dict[str, str] = {
    ".txt": "text",
    ".text": "text",
    ".rst": "text",
    ".md": "markdown",
    ".markdown": "markdown",
    ".html": "html",
    ".htm": "html",
    ".xhtml": "html",
    ".pdf": "pdf",
}

_ATX_TITLE = re.compile(r"^ {0,3}#{1,6}[ \t]+(.+?)[ \t#]*$", re.MULTILINE)


class UnsupportedFormat(BadRequest):
    status_code = 415
    code = "unsupported_format"


def format_of(filename: str) -> str:
    """The format a file name stands for; `UnsupportedFormat` when none."""
    suffix = PurePosixPath(filename.replace("\\", "/")).suffix.lower()
    try:
        return FORMATS[suffix]
    except KeyError:
        known = ", ".join(sorted(FORMATS))
        raise UnsupportedFormat(
            f"{filename}: unsupported file type {suffix or '(no extension)'}; supported: {known}"
        ) from None


def check_upload(filename: str, content: bytes, *, max_bytes: int | None = None) -> str:
    """The file's format, if it may be parsed at all: a `RagError` naming the file when it is
    of an unsupported type, larger than `max_bytes`, or empty. What the API can tell at once."""
    kind = format_of(filename)
    if max_bytes is not None and len(content) > max_bytes:
        raise TooLarge(
            f"{filename}: the file is {len(content)} bytes; the limit is {max_bytes}",
            code="document_too_large",
        )
    if not content.strip():
        raise BadRequest(f"{filename}: the file is empty", code="empty_document")
    return kind


def parse(
    filename: str,
    content: bytes,
    *,
    max_bytes: int | None = None,
    limits: ParseLimits = ParseLimits(),
) -> ParsedDocument:
    """Parse one file. Raises a `RagError` that names the file when it is of an unsupported
    type, empty, corrupt, larger than `max_bytes`, or beyond one of `limits` (or nested
    deeper than `MAX_HTML_DEPTH`). CPU-bound, and unbounded in time and memory on a hostile
    file: a service runs it in a separate process (`parsing.isolated.ParserPool`)."""
    kind = check_upload(filename, content, max_bytes=max_bytes)
    # Imported here so that naming a format (the API, the CLI) does not load pypdf and selectolax.
    if kind == "pdf":
        from rag_async.providers.parsing.pdf import parse_pdf

        parsed = parse_pdf(filename, content, limits)
    elif kind == "html":
        from rag_async.providers.parsing.html import parse_html

        parsed = parse_html(filename, content)
    else:
        text = decode_text(filename, content)
        parsed = ParsedDocument(title=markdown_title(text), text=text, format=kind)
    if limits.max_chars is not None and len(parsed.text) > limits.max_chars:
        raise TooMuchText.of(filename, limits.max_chars)
    if not parsed.text.strip():
        raise BadRequest(f"{filename}: no text found in the file", code="empty_document")
    return parsed


def decode_text(filename: str, content: bytes) -> str:
    """UTF-8 (a BOM allowed); anything else is refused rather than guessed at."""
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise BadRequest(
            f"{filename}: not UTF-8 text (byte {error.start})", code="corrupt_document"
        ) from None
    if "\x00" in text:
        raise BadRequest(f"{filename}: binary data, not text", code="corrupt_document")
    return text


def markdown_title(text: str) -> str | None:
    match = _ATX_TITLE.search(text)
    return match.group(1).strip() if match else None
