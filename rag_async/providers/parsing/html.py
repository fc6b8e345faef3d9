"""HTML, with selectolax (the Lexbor engine): the page's content without its navigation.

Boilerplate goes first (navigation, headers, footers, sidebars, scripts, forms); then the
main content (`<main>`, `<article>`, `[role=main]`, or the body) is walked in document order
into Markdown-shaped text: `<h1>`..`<h6>` become `#` lines, block elements paragraphs,
`<pre>` a fenced block, so that the chunker keeps headings and code whole.

Two structural rules go beyond the tags' names (the first is on by default):

- **Link density.** Navigation that no selector names (a table of contents, a site index, a
  "see the pages below" list) is text that is mostly link text: the signal of jusText
  (Pomikálek, 2011) and boilerpipe (Kohlschütter et al., 2010). A block more than half of
  whose characters are inside `<a href>` is dropped with everything in it. Those tools use
  stricter cut-offs (0.2, 0.33) together with other features on news pages; documentation
  links its identifiers inline (every `str`, every `os.walk()`), so a block is dropped only
  when link text is the majority, and a link that is all inline code does not count in a
  block with text of its own: it names a thing in a sentence, not a page to go to. A block
  holding a heading (a section) is judged by its parts, as are a list's items and a table's
  cells by their list or table; a page that is all navigation keeps its headings.
- **Definition terms** (off by default: `definition_sections=True`). A `<dt>` with an `id`
  is a link target of its own: an API signature (`os.path.join(path, *paths)`), a glossary
  term, a command-line option. It then becomes a heading one level below the section it is
  in, so chunks of its `<dd>` carry its name in their heading path. Definition terms without
  an id (field lists: "Parameters:") stay text. On the Python documentation this made many
  more, smaller chunks and did not retrieve better (docs/benchmarks.md), so it is not the
  default.
"""

from __future__ import annotations

import re

from selectolax.lexbor import LexborHTMLParser, LexborNode

from rag_async.domain.errors import BadRequest
from rag_async.providers.parsing.limits import MAX_HTML_DEPTH, TooDeep
from rag_async.providers.parsing.parsed import ParsedDocument, escape_markup

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
_HEADING_SELECTOR = ", ".join(_HEADINGS)
_JUDGED_WITH_PARENT = frozenset("li tr td th tbody thead tfoot caption".split())
_BLOCKS = frozenset(
    "address blockquote body caption dd details dialog div dl dt fieldset figcaption figure "
    "li main ol p section summary table tbody thead tfoot tr ul article hr br".split()
)
# "Mostly link text": see the module's docstring.
MAX_LINK_DENSITY = 0.5
_NOT_WORD_CHARACTERS = re.compile(r"\W+")
_CHARSET = re.compile(rb"""<meta[^>]+charset=["']?([A-Za-z0-9_-]+)""", re.IGNORECASE)


def parse_html(
    filename: str,
    content: bytes,
    *,
    max_link_density: float | None = MAX_LINK_DENSITY,
    definition_sections: bool = False,
) -> ParsedDocument:
    """The page's main content as Markdown-shaped text. The keywords switch the structural
    rules (see the module's docstring) on and off, for comparing with and without them."""
    tree = LexborHTMLParser(_decode(content))
    title_node = tree.css_first("title")
    title = " ".join(title_node.text().split()) if title_node is not None else ""
    for node in tree.css(BOILERPLATE):
        node.decompose()
    candidates = [tree.css_first(selector) for selector in _MAIN]
    root = next((node for node in candidates if node is not None), tree.root)
    if root is None:
        raise BadRequest(f"{filename}: not an HTML document", code="corrupt_document")
    writer = _Writer(max_link_density, definition_sections)
    try:
        writer.walk(root)
    except (_Nested, RecursionError):
        raise TooDeep(
            f"{filename}: HTML nested deeper than {MAX_HTML_DEPTH} elements (the limit)"
        ) from None
    text = "\n\n".join(writer.blocks)
    h1_node = tree.css_first("h1")
    h1 = " ".join(h1_node.text().split()) if h1_node is not None else ""
    # "Page — Site name" (Sphinx, most CMSs): the page's own heading is its title; the site's
    # name would be repeated in every citation and every indexed chunk.
    if h1 and (not title or title.startswith(h1)):
        title = h1
    return ParsedDocument(title=title or None, text=text, format="html")


def _decode(content: bytes) -> str:
    match = _CHARSET.search(content[:2048])
    encoding = match.group(1).decode() if match else "utf-8"
    try:
        return content.decode(encoding, errors="replace")
    except LookupError:  # a charset Python does not know
        return content.decode("utf-8", errors="replace")


def _letters(text: str) -> int:
    return len(_NOT_WORD_CHARACTERS.sub("", text))


def link_density(node: LexborNode) -> float:
    """The share of a node's text (letters and digits) that is inside navigation links.

    A link whose text is all inline code (`os.walk()`) names a thing in a sentence rather than
    a page to go to, and does not count, provided that the node has text of its own outside
    links: a list of nothing but links, code or not, is an index.
    """
    total = _letters(node.text(deep=True))
    if not total:
        return 0.0
    linked = code_linked = 0
    for link in node.css("a[href]"):
        length = _letters(link.text(deep=True))
        linked += length
        if sum(_letters(code.text(deep=True)) for code in link.css("code, tt")) >= length:
            code_linked += length
    if linked < total:
        linked -= code_linked
    return min(1.0, linked / total)


class _Nested(Exception):
    """The page nests deeper than MAX_HTML_DEPTH."""


class _Writer:
    """Collects blocks of text in document order."""

    def __init__(self, max_link_density: float | None, definition_sections: bool) -> None:
        self.blocks: list[str] = []
        self._inline: list[str] = []
        self._max_link_density = max_link_density
        self._definition_sections = definition_sections
        # The open headings, as the chunker will read them: (level, text).
        self._path: list[tuple[int, str]] = []
        # The level a definition term's heading sits below (the enclosing section's).
        self._context = 0
        # A heading to repeat before the next text: the section a definition list ended in,
        # so that text after the list is not filed under its last term.
        self._reopen: tuple[int, str] | None = None
        # How deep the walk is: it recurses once per level of nesting.
        self._depth = 0

    def heading(self, level: int, text: str) -> None:
        self._reopen = None
        while self._path and self._path[-1][0] >= level:
            self._path.pop()
        self._path.append((level, text))
        self.blocks.append(f"{'#' * level} {text}")

    def text(self, block: str) -> None:
        if self._reopen is not None:
            self.heading(*self._reopen)
        self.blocks.append(block)

    def flush(self) -> None:
        paragraph = " ".join("".join(self._inline).split())
        self._inline.clear()
        if paragraph:
            self.text(escape_markup(paragraph))

    def walk(self, node: LexborNode) -> None:
        if self._depth >= MAX_HTML_DEPTH:
            raise _Nested
        self._depth += 1
        self._walk(node)
        self._depth -= 1

    def _walk(self, node: LexborNode) -> None:
        for child in node.iter(include_text=True):
            tag = child.tag
            if tag == "-text":
                self._inline.append(child.text_content or "")
            elif tag in _HEADINGS:
                self.flush()
                heading = " ".join(child.text().split())
                if heading:
                    self.heading(_HEADINGS[tag], heading)
                    self._context = _HEADINGS[tag]
            elif tag == "pre":
                self.flush()
                code = child.text(deep=True).strip("\n")
                if code.strip():
                    self.text(f"```\n{code.replace('```', '` ` `')}\n```")
            elif tag in _BLOCKS:
                self.flush()
                if self._is_navigation(child):
                    continue
                if tag == "dt" and self._definition_sections and child.attributes.get("id"):
                    term = " ".join(child.text().split())
                    if term:
                        self.heading(min(6, self._context + 1), term)
                        continue
                if tag == "dd" and self._definition_sections:
                    self._walk_definition(child)
                elif tag == "dl" and self._definition_sections:
                    self._walk_definition_list(child)
                else:
                    self.walk(child)
                self.flush()
            elif tag not in ("-comment", "head"):
                self.walk(child)

    def _is_navigation(self, node: LexborNode) -> bool:
        # Headings are the page's structure, not navigation: a block holding one (a section)
        # is judged by its parts. A table or a list is judged whole, not cell by cell (a cell
        # naming a function, in a table of them, is content). A definition term with an id
        # is a link target, not a link.
        if (
            self._max_link_density is None
            or node.tag in _JUDGED_WITH_PARENT
            or (node.tag == "dt" and node.attributes.get("id"))
            or node.css_first(_HEADING_SELECTOR) is not None
        ):
            return False
        return link_density(node) > self._max_link_density

    def _walk_definition(self, node: LexborNode) -> None:
        """A `<dd>`: nested terms sit below the term it defines."""
        context = self._context
        if self._path and self._path[-1][0] > context:
            self._context = self._path[-1][0]
        self.walk(node)
        self.flush()
        self._context = context

    def _walk_definition_list(self, node: LexborNode) -> None:
        self.walk(node)
        self.flush()
        # Terms of this list opened headings below the enclosing section: text after the list
        # belongs to that section again.
        if self._path and self._path[-1][0] > self._context:
            inside = [entry for entry in self._path if entry[0] <= self._context]
            self._reopen = inside[-1] if inside else None
