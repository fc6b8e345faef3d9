"""Split a document into overlapping, structure-aware chunks.

Markdown structure decides first (ATX headings, blank-line paragraphs, fenced code blocks kept
whole), size second: paragraphs are packed into chunks of at most `max_tokens` tokens and
`max_chars` characters, and a paragraph too long for one chunk is cut at sentence ends. A word
longer than a chunk (a hostile file can be one 5 MB word) is cut into pieces that fit, so no
text makes a chunk larger than `max_chars`. A chunk's text is always the exact slice
`text[start:end]` of the original, so a citation can point back into the document.

The chunks come from a generator that reads the text as it goes, and `chunk_document` stops at
the chunk past `max_chunks`: a hostile text costs the chunks it is allowed, not the chunks it
would make. Documents are chunked in the parse process (parsing/child.py), under its memory
and time limits, never in the worker.

Tokens are counted offline, without a model's vocabulary (none can be downloaded here, and
the embedder may be any model): a token is a run of letters and digits or one punctuation
mark (`count_tokens`). That tracks subword tokenizers far better than whitespace words, which
undercount code badly. Subword (BPE) tokenizers cut a rare long word into pieces too, so a
model may see more tokens than counted here; the default `chunk_tokens` (200) leaves room for
that under common embedding models' 512. The figures on the Python documentation are in
docs/benchmarks.md ("What `chunk_tokens` counts").
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

from rag_async.providers.parsing.limits import TooManyChunks

HEADING_SEPARATOR = " › "
# Characters of one heading's title kept in a chunk's heading path: the path is stored with
# every chunk of its section, so a one-line "heading" of megabytes must not be.
MAX_HEADING_CHARS = 200
# The absolute cap on a chunk's characters, whatever its tokens (RAG_CHUNK_MAX_CHARS).
DEFAULT_MAX_CHARS = 4000

_WORD = re.compile(r"\S+")
_TOKEN = re.compile(r"\w+|[^\w\s]")
_ATX_HEADING = re.compile(r" {0,3}(#{1,6})(?:[ \t]+(.*))?")
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
# One line as str.splitlines(keepends=True) cuts it, read lazily.
_BREAKS = "\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029"
_LINE = re.compile(f"[^{_BREAKS}]*(?:\r\n|[{_BREAKS}])?")
_CLOSERS = "\"')]"  # closing quotes or brackets after a sentence's end

# One word (or piece of a word) as `(start, end, tokens)`.
_Word = tuple[int, int, int]


@dataclass(frozen=True, slots=True)
class Chunk:
    """One piece of a document, as indexed and cited; `page` in a paged format (PDF)."""

    index: int
    text: str
    start: int
    end: int
    heading: str | None
    page: int | None = None


@dataclass(frozen=True, slots=True)
class Chunking:
    """How a document is cut (`chunk_document`): the size of a chunk in tokens and
    characters, the tokens consecutive chunks share, and the most chunks one document may
    make (None: no limit)."""

    max_tokens: int
    overlap: int
    max_chars: int = DEFAULT_MAX_CHARS
    max_chunks: int | None = None


@dataclass(frozen=True, slots=True)
class _Unit:
    """A run of words never split further: a heading line, a paragraph that fits in a
    chunk, or a sentence (or a slice of one) of a longer paragraph."""

    words: list[_Word]
    size: int  # in tokens
    heading: str | None
    is_heading: bool


def count_tokens(text: str) -> int:
    """Runs of letters and digits plus punctuation marks: the offline token count."""
    if text.isalnum():  # most words of prose: one run (what \w matches, but for "_")
        return 1
    return len(_TOKEN.findall(text))


def chunk_document(
    text: str,
    page_starts: Sequence[int],
    chunking: Chunking,
    *,
    name: str,
    count: Callable[[str], int] = count_tokens,
) -> list[Chunk]:
    """The chunks of a document, each page chunked on its own (so that a chunk's page is
    exact). `TooManyChunks` as soon as the chunk past `chunking.max_chunks` is cut: the rest
    of the text is never read. `name` is the document as the error names it."""
    chunks: list[Chunk] = []
    for chunk in iter_document_chunks(text, page_starts, chunking, count):
        if chunking.max_chunks is not None and len(chunks) >= chunking.max_chunks:
            raise TooManyChunks(
                f"{name}: more than {chunking.max_chunks} chunks; the limit is "
                f"{chunking.max_chunks} per document (RAG_MAX_CHUNKS)"
            )
        chunks.append(chunk)
    return chunks


def iter_document_chunks(
    text: str,
    page_starts: Sequence[int],
    chunking: Chunking,
    count: Callable[[str], int] = count_tokens,
) -> Iterator[Chunk]:
    """`iter_chunks` over the whole text, or page by page: numbered through, with offsets
    into `text`."""

    def chunks_of(part: str) -> Iterator[Chunk]:
        return iter_chunks(
            part,
            max_tokens=chunking.max_tokens,
            overlap=chunking.overlap,
            max_chars=chunking.max_chars,
            count=count,
        )

    if not page_starts:
        yield from chunks_of(text)
        return
    index = 0
    bounds = [*page_starts, len(text)]
    for page, (start, end) in enumerate(itertools.pairwise(bounds), start=1):
        for chunk in chunks_of(text[start:end]):
            yield Chunk(
                index, chunk.text, start + chunk.start, start + chunk.end, chunk.heading, page
            )
            index += 1


def chunk_text(
    text: str,
    *,
    max_tokens: int,
    overlap: int,
    max_chars: int = DEFAULT_MAX_CHARS,
    count: Callable[[str], int] = count_tokens,
) -> list[Chunk]:
    """Every chunk of `iter_chunks`, as a list."""
    return list(
        iter_chunks(text, max_tokens=max_tokens, overlap=overlap, max_chars=max_chars, count=count)
    )


def iter_chunks(
    text: str,
    *,
    max_tokens: int,
    overlap: int,
    max_chars: int = DEFAULT_MAX_CHARS,
    count: Callable[[str], int] = count_tokens,
) -> Iterator[Chunk]:
    """Chunks of at most `max_tokens` tokens (`count_tokens`) and `max_chars` characters,
    cut between words, in document order, each cut as the text is read.

    Consecutive chunks of the same section share up to `overlap` tokens (capped at half a chunk
    so that every chunk brings new text); chunks never straddle a heading. A heading with no
    text of its own before the next heading is kept with the text that follows it. A single
    word longer than a chunk (a long URL, a file without spaces) is cut into pieces of a
    chunk's size. `count` sizes one whitespace-separated word: a model's own tokenizer, where
    one is at hand, fits here.
    """
    if max_tokens < 1:
        raise ValueError("max_tokens must be at least 1")
    if max_chars < 1:
        raise ValueError("max_chars must be at least 1")
    if overlap < 0:
        raise ValueError("overlap must not be negative")
    overlap = min(overlap, max_tokens // 2)
    size = _Size(max_tokens, max_chars, count)
    spans = _pack(_units(text, size), size, overlap)
    for i, (words, heading) in enumerate(spans):
        start, end = words[0][0], words[-1][1]
        yield Chunk(index=i, text=text[start:end], start=start, end=end, heading=heading)


@dataclass(frozen=True, slots=True)
class _Size:
    max_tokens: int
    max_chars: int
    count: Callable[[str], int]

    def fits(self, words: list[_Word], tokens: int, word: _Word) -> bool:
        """Whether `word` joins the run `words` of `tokens` tokens within one chunk."""
        if not words:
            return True
        return tokens + word[2] <= self.max_tokens and word[1] - words[0][0] <= self.max_chars


def _pack(
    units: Iterable[_Unit], size: _Size, overlap: int
) -> Iterator[tuple[list[_Word], str | None]]:
    """Greedy packing of units into chunks, as `(words, heading)`."""
    words: list[_Word] = []  # the open chunk's
    tokens = 0
    heading: str | None = None
    has_body = False
    for unit in units:
        if words and unit.is_heading and has_body:
            yield words, heading  # a new section: no overlap across it
            words, tokens = [], 0
        if not words:
            has_body = False
        elif (
            tokens + unit.size > size.max_tokens or unit.words[-1][1] - words[0][0] > size.max_chars
        ):
            yield words, heading
            words = _overlap(words, unit, size, overlap)
            tokens = sum(word[2] for word in words)
        words.extend(unit.words)  # a list yielded is never extended: it is replaced first
        tokens += unit.size
        heading = unit.heading
        has_body = has_body or not unit.is_heading
    if words:
        yield words, heading


def _overlap(words: list[_Word], unit: _Unit, size: _Size, overlap: int) -> list[_Word]:
    """The last whole words of the closed chunk that the next one repeats: those that fit in
    `overlap` tokens and leave room for `unit`, never the closed chunk's first word."""
    budget = max(0, min(overlap, size.max_tokens - unit.size))
    end = unit.words[-1][1]
    taken = 0
    first = len(words)
    while first > 1:
        start, _, tokens = words[first - 1]
        if taken + tokens > budget or end - start > size.max_chars:
            break
        taken += tokens
        first -= 1
    return words[first:]


def _units(text: str, size: _Size) -> Iterator[_Unit]:
    max_tokens, max_chars = size.max_tokens, size.max_chars
    for block_start, block_end, heading, is_heading in _blocks(text):
        words = _words(text, block_start, block_end, size)
        whole: list[_Word] = []
        tokens = 0
        for word in words:
            # Inlined `size.fits`: this runs once a word.
            if whole and (tokens + word[2] > max_tokens or word[1] - whole[0][0] > max_chars):
                # A block longer than a chunk: cut at sentence ends, and a "sentence" longer
                # than a chunk (a code listing, a table) by size.
                rest = itertools.chain(whole, [word], words)
                for run in _sentence_slices(text, rest, size):
                    yield _Unit(run, sum(w[2] for w in run), heading, is_heading)
                break
            whole.append(word)
            tokens += word[2]
        else:
            if whole:
                yield _Unit(whole, tokens, heading, is_heading)


def _sentence_slices(text: str, words: Iterable[_Word], size: _Size) -> Iterator[list[_Word]]:
    """Runs of consecutive words, each the longest that fits in a chunk without crossing a
    sentence's end. Over-splitting (after "e.g.") costs nothing: units are packed back."""
    run: list[_Word] = []
    tokens = 0
    for word in words:
        if not size.fits(run, tokens, word):
            yield run
            run, tokens = [], 0
        run.append(word)
        tokens += word[2]
        if _ends_sentence(text, word):
            yield run
            run, tokens = [], 0
    if run:
        yield run


def _ends_sentence(text: str, word: _Word) -> bool:
    """Terminal punctuation, then optional closing quotes or brackets."""
    return text[word[0] : word[1]].rstrip(_CLOSERS)[-1:] in (".", "!", "?")


def _words(text: str, start: int, end: int, size: _Size) -> Iterator[_Word]:
    """The words of `text[start:end]`, each sized; one too long for a chunk, in pieces."""
    max_tokens, max_chars, count = size.max_tokens, size.max_chars, size.count
    for match in _WORD.finditer(text, start, end):
        first, stop = match.span()
        if stop - first <= max_chars:
            tokens = count(text[first:stop])
            if tokens <= max_tokens:
                yield first, stop, tokens
                continue
        yield from _pieces(text, first, stop, size)


def _pieces(text: str, first: int, stop: int, size: _Size) -> Iterator[_Word]:
    """`text[first:stop]` cut into pieces of at most a chunk's tokens and characters."""
    guess = size.max_chars
    while first < stop:
        length = min(stop - first, size.max_chars, guess)
        tokens = size.count(text[first : first + length])
        while tokens > size.max_tokens and length > 1:
            # Shrink in proportion to the excess (at least by one character): a run of
            # punctuation, a token per character, gets there in one step.
            length = max(1, min(length - 1, length * size.max_tokens // tokens))
            tokens = size.count(text[first : first + length])
        yield first, first + length, tokens
        first += length
        guess = 2 * length  # the next piece is likely alike; it may grow back


def _lines(text: str) -> Iterator[str]:
    """`text.splitlines(keepends=True)`, a line at a time."""
    pos = 0
    while pos < len(text):
        match = _LINE.match(text, pos)
        assert match is not None  # the pattern matches at any position
        pos = match.end()
        yield match.group()


def _heading(line: str) -> tuple[int, str] | None:
    """The level and title of an ATX heading line (title "" for a bare "#"), or None for
    another line."""
    match = _ATX_HEADING.fullmatch(line)
    if match is None:
        return None
    title = (match.group(2) or "").rstrip(" \t")
    # An optional closing sequence: spaces, then only "#"s.
    bare = title.rstrip("#")
    if bare != title and bare[-1:] in (" ", "\t"):
        title = bare.rstrip(" \t")
    return len(match.group(1)), title.strip()[:MAX_HEADING_CHARS]


def _blocks(text: str) -> Iterator[tuple[int, int, str | None, bool]]:
    """Paragraphs, fenced code blocks and heading lines as `(start, end, heading path,
    is_heading)`, in document order."""
    path: list[tuple[int, str]] = []  # the open headings, as (level, title)
    fence: str | None = None
    block_start: int | None = None
    block_end = 0
    pos = 0
    current: str | None = None  # the heading path, as chunks name it

    for line in _lines(text):
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
        # The cheap test first: most lines start with neither mark.
        fence_match = _FENCE.match(line) if stripped[:1] in ("`", "~") else None
        heading = _heading(line.rstrip("\r\n")) if stripped[:1] == "#" else None
        if (fence_match or heading or not stripped) and block_start is not None:
            yield block_start, block_end, current, False
            block_start = None
        if heading:
            level, title = heading
            while path and path[-1][0] >= level:
                path.pop()
            if title:
                path.append((level, title))
            current = HEADING_SEPARATOR.join(title for _, title in path) or None
            yield line_start, line_end, current, True
            continue
        if fence_match:
            fence = fence_match.group(1)
        if stripped:
            if block_start is None:
                block_start = line_start
            block_end = line_end
    if block_start is not None:
        yield block_start, block_end, current, False
