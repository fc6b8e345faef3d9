"""Turn an uploaded file into text the chunker understands: one `parse()` for every format.

Every parser returns Markdown-shaped text: headings as `#` lines (so the chunker keeps heading
paths), paragraphs separated by blank lines, code fenced. PDFs also say where each page
starts, so a citation can name its page. Parsing is CPU work: callers in an event loop run it
in a thread (`asyncio.to_thread`).
"""

from rag_async.parsing.document import (
    FORMATS,
    UnsupportedFormat,
    check_upload,
    format_of,
    parse,
)
from rag_async.parsing.parsed import ParsedDocument

__all__ = [
    "FORMATS",
    "ParsedDocument",
    "UnsupportedFormat",
    "check_upload",
    "format_of",
    "parse",
]
