"""Turn an uploaded file into text the chunker understands: one `parse()` for every format.

Every parser returns Markdown-shaped text: headings as `#` lines (so the chunker keeps heading
paths), paragraphs separated by blank lines, code fenced. PDFs also say where each page
starts, so a citation can name its page. Parsing is CPU work, and a hostile file can make it
endless or huge: the worker runs it in separate processes under time and memory limits
(`isolated.ParserPool`), with the page, text and nesting limits of `limits.py`.
"""

from rag_async.providers.parsing.document import (
    FORMATS,
    UnsupportedFormat,
    check_upload,
    format_of,
    parse,
)
from rag_async.providers.parsing.limits import ParseLimits
from rag_async.providers.parsing.parsed import ParsedDocument

__all__ = [
    "FORMATS",
    "ParseLimits",
    "ParsedDocument",
    "UnsupportedFormat",
    "check_upload",
    "format_of",
    "parse",
]
