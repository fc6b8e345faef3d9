"""Split a document into overlapping, structure-aware chunks.

Markdown structure decides first (ATX headings, blank-line paragraphs, fenced code blocks kept
whole), size second: paragraphs are packed into chunks of at most `max_tokens` tokens, and a
paragraph too long for one chunk is cut at sentence ends. A chunk's text is always the exact
slice `text[start:end]` of the original, so a citation can point back into the document.

Tokens are counted offline, without a model's vocabulary (none can be downloaded here, and
the embedder may be any model): a token is a run of letters and digits or one punctuation
mark (`count_tokens`). That tracks subword tokenizers far better than whitespace words, which
undercount code badly. Subword (BPE) tokenizers cut a rare long word into pieces too, so a
model may see more tokens than counted here; the default `chunk_tokens` (200) leaves room for
that under common embedding models' 512. The figures on the Python documentation are in
docs/benchmarks.md ("What `chunk_tokens` counts").
"""

from __future__ import annotations

import re
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterator
from dataclasses import dataclass

HEADING_SEPARATOR = " › "

_WORD = re.compile(r"\S+")
_TOKEN = re.compile(r"\w+|[^\w\s]")
_ATX_HEADING = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
# A word ending a sentence: terminal punctuation, then optional closing quotes or brackets.
_SENTENCE_END = re.compile(r"[.!?][\"')\]]*$")


@dataclass(frozen=True, slots=True)
class Chunk:
    """One piece of a document, as indexed and cited."""

    index: int
    text: str
    start: int
    end: int
    heading: str | None


@dataclass(frozen=True, slots=True)
class _Unit:
    """A run of words `[first, stop)` that is never split further: a heading line, a paragraph
    that fits in a chunk, or a sentence (or a hard slice of one) of a longer paragraph."""

    first: int
    stop: int
    size: int  # in tokens
    heading: str | None
    is_heading: bool


def count_tokens(text: str) -> int:
    """Runs of letters and digits plus punctuation marks: the offline token count."""
    return len(_TOKEN.findall(text))


def chunk_text(
    text: str, *, max_tokens: int, overlap: int, count: Callable[[str], int] = count_tokens
) -> list[Chunk]:
    """Chunks of at most `max_tokens` tokens (`count_tokens`), cut between words.

    Consecutive chunks of the same section share up to `overlap` tokens (capped at half a chunk
    so that every chunk brings new text); chunks never straddle a heading. A heading with no
    text of its own before the next heading is kept with the text that follows it. A single
    word longer than `max_tokens` (a long URL) is a chunk of its own, whole. `count` sizes
    one whitespace-separated word: a model's own tokenizer, where one is at hand, fits here.
    """
    if max_tokens < 1:
        raise ValueError("max_tokens must be at least 1")
    if overlap < 0:
        raise ValueError("overlap must not be negative")
    overlap = min(overlap, max_tokens // 2)

    words = [(m.start(), m.end()) for m in _WORD.finditer(text)]
    if not words:
        return []
    starts = [start for start, _ in words]
    # cumulative[i]: the tokens in words[:i], so any run of words is sized by a subtraction.
    cumulative = [0]
    for start, end in words:
        cumulative.append(cumulative[-1] + count(text[start:end]))
    units = _units(text, words, starts, cumulative, max_tokens)

    spans = _pack(units, cumulative, max_tokens, overlap)
    return [
        Chunk(
            index=i,
            text=text[words[a][0] : words[b - 1][1]],
            start=words[a][0],
            end=words[b - 1][1],
            heading=heading,
        )
        for i, (a, b, heading) in enumerate(spans)
    ]


def _pack(
    units: list[_Unit], cumulative: list[int], max_tokens: int, overlap: int
) -> list[tuple[int, int, str | None]]:
    """Greedy packing of units into `(first word, stop word, heading)` chunk spans."""
    spans: list[tuple[int, int, str | None]] = []
    first = stop = -1  # the open chunk's word span; first < 0 when none is open
    heading: str | None = None
    has_body = False
    for unit in units:
        if first >= 0 and unit.is_heading and has_body:
            spans.append((first, stop, heading))  # a new section: no overlap across it
            first = -1
        if first < 0:
            first, has_body = unit.first, False
        elif cumulative[stop] - cumulative[first] + unit.size > max_tokens:
            spans.append((first, stop, heading))
            # Overlap with the previous chunk: the last whole words that fit in `overlap`
            # tokens and leave room for the unit, starting after the previous chunk's start.
            budget = max(0, min(overlap, max_tokens - unit.size))
            first = bisect_left(cumulative, cumulative[stop] - budget, first + 1, stop)
        stop, heading = unit.stop, unit.heading
        has_body = has_body or not unit.is_heading
    if first >= 0:
        spans.append((first, stop, heading))
    return spans


def _units(
    text: str,
    words: list[tuple[int, int]],
    starts: list[int],
    cumulative: list[int],
    max_tokens: int,
) -> list[_Unit]:
    units: list[_Unit] = []
    for block_start, block_end, heading, is_heading in _blocks(text):
        first = bisect_left(starts, block_start)
        stop = bisect_left(starts, block_end)
        if first >= stop:
            continue
        if cumulative[stop] - cumulative[first] <= max_tokens:
            units.append(
                _Unit(first, stop, cumulative[stop] - cumulative[first], heading, is_heading)
            )
            continue
        for sentence_first, sentence_stop in _sentences(text, words, first, stop):
            # A "sentence" longer than a chunk (a code listing, a table) is cut by size.
            for a, b in _slices(cumulative, sentence_first, sentence_stop, max_tokens):
                units.append(_Unit(a, b, cumulative[b] - cumulative[a], heading, is_heading))
    return units


def _slices(
    cumulative: list[int], first: int, stop: int, max_tokens: int
) -> Iterator[tuple[int, int]]:
    """Consecutive word runs of `[first, stop)`, each the longest that fits in `max_tokens`
    (but at least one word)."""
    while first < stop:
        end = bisect_right(cumulative, cumulative[first] + max_tokens, first + 1, stop + 1) - 1
        end = max(end, first + 1)
        yield first, end
        first = end


def _sentences(
    text: str, words: list[tuple[int, int]], first: int, stop: int
) -> Iterator[tuple[int, int]]:
    # Over-splitting (after "e.g.") costs nothing: units are packed back together.
    begin = first
    for i in range(first, stop):
        start, end = words[i]
        if _SENTENCE_END.search(text, start, end):
            yield begin, i + 1
            begin = i + 1
    if begin < stop:
        yield begin, stop


def _blocks(text: str) -> Iterator[tuple[int, int, str | None, bool]]:
    """Paragraphs, fenced code blocks and heading lines as `(start, end, heading path,
    is_heading)`, in document order."""
    path: list[tuple[int, str]] = []  # the open headings, as (level, title)
    fence: str | None = None
    block_start: int | None = None
    block_end = 0
    pos = 0

    def heading_path() -> str | None:
        return HEADING_SEPARATOR.join(title for _, title in path) or None

    for line in text.splitlines(keepends=True):
        line_start, pos = pos, pos + len(line)
        line_end = line_start + len(line.rstrip())
        stripped = line.strip()
        if fence is not None:
            # Inside a fenced block a "# comment" is code, not a heading, and blank lines do
            # not end the block.
            if stripped:
                block_end = line_end
            if stripped.startswith(fence) and not stripped.strip(fence[0]):
                fence = None
            continue
        fence_match = _FENCE.match(line)
        heading_match = None if fence_match else _ATX_HEADING.match(line.rstrip("\r\n"))
        if (fence_match or heading_match or not stripped) and block_start is not None:
            yield block_start, block_end, heading_path(), False
            block_start = None
        if heading_match:
            level = len(heading_match.group(1))
            title = (heading_match.group(2) or "").strip()
            while path and path[-1][0] >= level:
                path.pop()
            if title:
                path.append((level, title))
            yield line_start, line_end, heading_path(), True
            continue
        if fence_match:
            fence = fence_match.group(1)
        if stripped:
            if block_start is None:
                block_start = line_start
            block_end = line_end
    if block_start is not None:
        yield block_start, block_end, heading_path(), False
