"""HTML, with selectolax (the Lexbor engine): the page's content without its navigation.

Boilerplate goes first (navigation, headers, footers, sidebars, scripts, forms); then the
main content (`<main>`, `<article>`, `[role=main]`, or the body) is walked in document order
into Markdown-shaped text: `<h1>`..`<h6>` become `#` lines, block elements paragraphs,
`<pre>` a fenced block, so that the chunker keeps headings and code whole.
"""

from __future__ import annotations

import re

from selectolax.lexbor import LexborHTMLParser, LexborNode

from rag_async.errors import BadRequest
from rag_async.parsing.document import ParsedDocument, escape_markup

BOILERPLATE = ", ".join(
    [
        "script", "style", "noscript", "template", "svg", "iframe", "form", "button",
        "nav", "header", "footer", "aside",
        "[role=navigation]", "[role=banner]", "[role=contentinfo]", "[role=search]",
        "[role=complementary]", "[aria-hidden=true]", "[hidden]",
        # Sphinx, MkDocs and friends: sidebars, "previous | next" bars, permalink marks.
        ".sphinxsidebar", ".related", ".headerlink", ".breadcrumb", ".breadcrumbs",
        ".skip-link", ".toc", "#toc",
    ]
)  # fmt: skip
_MAIN = ("main", "article", "[role=main]", "body")
_HEADINGS = {"h1": 1, "h2": 2, "h3": 3, "h4": 4, "h5": 5, "h6": 6}
_BLOCKS = frozenset(
    "address blockquote body caption dd details dialog div dl dt fieldset figcaption figure "
    "li main ol p section summary table tbody thead tfoot tr ul article hr br".split()
)
_CHARSET = re.compile(rb"""<meta[^>]+charset=["']?([A-Za-z0-9_-]+)""", re.IGNORECASE)


def parse_html(filename: str, content: bytes) -> ParsedDocument:
    tree = LexborHTMLParser(_decode(filename, content))
    title_node = tree.css_first("title")
    title = " ".join(title_node.text().split()) if title_node is not None else ""
    for node in tree.css(BOILERPLATE):
        node.decompose()
    candidates = [tree.css_first(selector) for selector in _MAIN]
    root = next((node for node in candidates if node is not None), tree.root)
    if root is None:
        raise BadRequest(f"{filename}: not an HTML document", code="corrupt_document")
    writer = _Writer()
    writer.walk(root)
    text = "\n\n".join(writer.blocks)
    h1_node = tree.css_first("h1")
    h1 = " ".join(h1_node.text().split()) if h1_node is not None else ""
    # "Page — Site name" (Sphinx, most CMSs): the page's own heading is its title; the site's
    # name would be repeated in every citation and every indexed chunk.
    if h1 and (not title or title.startswith(h1)):
        title = h1
    return ParsedDocument(title=title or None, text=text, format="html")


def _decode(filename: str, content: bytes) -> str:
    match = _CHARSET.search(content[:2048])
    encoding = match.group(1).decode() if match else "utf-8"
    try:
        return content.decode(encoding, errors="replace")
    except LookupError:  # a charset Python does not know
        return content.decode("utf-8", errors="replace")


class _Writer:
    """Collects blocks of text in document order."""

    def __init__(self) -> None:
        self.blocks: list[str] = []
        self._inline: list[str] = []

    def flush(self) -> None:
        paragraph = " ".join("".join(self._inline).split())
        self._inline.clear()
        if paragraph:
            self.blocks.append(escape_markup(paragraph))

    def walk(self, node: LexborNode) -> None:
        for child in node.iter(include_text=True):
            tag = child.tag
            if tag == "-text":
                self._inline.append(child.text_content or "")
            elif tag in _HEADINGS:
                self.flush()
                heading = " ".join(child.text().split())
                if heading:
                    self.blocks.append(f"{'#' * _HEADINGS[tag]} {heading}")
            elif tag == "pre":
                self.flush()
                code = child.text(deep=True).strip("\n")
                if code.strip():
                    self.blocks.append(f"```\n{code.replace('```', '` ` `')}\n```")
            elif tag in _BLOCKS:
                self.flush()
                self.walk(child)
                self.flush()
            elif tag not in ("-comment", "head"):
                self.walk(child)
