"""A retrieved passage as an answer cites it: what retrieval returns, the prompt numbers, the
`sources` event carries and the job record keeps.

A passage is whatever a stored chunk holds, and a chunk may be far larger than the chunker
makes today (a store written by an older version, a word that was never split), so every
copy of it is cut to a bound: what a job keeps, streams and puts in a prompt (`clip_sources`),
and what a job view shows of a record written before the bound (`fit_sources`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from pydantic import BaseModel, ConfigDict, Field, field_validator

from rag_async.domain.text import clean

# What ends a cut passage (besides `truncated`), so a reader of the text alone sees the cut.
CUT_MARK = "…"
# Titles and section paths are labels, a line long; a location (an address) a little more.
LONGEST_LABEL = 500
LONGEST_LOCATION = 2048
# However many sources a record holds, a view shows the passages of this many characters in
# all (each source at most its share), so that one job view stays small.
VIEW_PASSAGE_CHARS = 48_000
# The most sources a view shows: the largest `top_k` a question may use.
VIEW_MAX_SOURCES = 50


class Source(BaseModel):
    """One retrieved chunk, numbered as the answer cites it ([1], [2], ...)."""

    model_config = ConfigDict(frozen=True)

    n: int
    document_id: str
    title: str
    chunk: int
    score: float
    text: str
    source: str | None = None
    heading: str | None = Field(
        default=None, description='Where in the document: "Title › Section › Subsection".'
    )
    page: int | None = Field(default=None, description="The page it starts on (PDF).")
    collection: str | None = None
    attributes: dict[str, bool | int | float | str] | None = Field(
        default=None, description="The document's attributes, which `filters` compare."
    )
    relevance: float | None = Field(
        default=None,
        description="The score on a scale from 0 to 1 (domain/relevance.py): what /v1 "
        "reports as a result's score.",
    )
    truncated: bool = Field(
        default=False,
        description="The passage was longer than the service keeps (RAG_MAX_SOURCE_CHARS): "
        "`text` is its beginning, ending with '…'.",
    )

    def clipped(self, max_chars: int) -> Source:
        """This source with its passage cut to `max_chars` characters (the cut marked) and
        its labels to a line's length; itself when nothing needs cutting."""
        update: dict[str, object] = {}
        if len(self.text) > max_chars:
            update["text"] = _cut(self.text, max_chars)
            update["truncated"] = True
        if len(self.title) > LONGEST_LABEL:
            update["title"] = _cut(self.title, LONGEST_LABEL)
        if self.heading is not None and len(self.heading) > LONGEST_LABEL:
            update["heading"] = _cut(self.heading, LONGEST_LABEL)
        if self.source is not None and len(self.source) > LONGEST_LOCATION:
            update["source"] = _cut(self.source, LONGEST_LOCATION)
        return self.model_copy(update=update) if update else self

    # What a document and its uploader wrote reaches the page, the CLI and other clients:
    # without terminal control characters (domain/text.py).
    _clean = field_validator("title", "text", "source", "heading")(clean)


def renumbered(sources: Iterable[Source]) -> list[Source]:
    """`sources` in their order, numbered 1..n: what is left once some were dropped or
    others merged in, so that an answer's `[n]` keep naming them."""
    return [source.model_copy(update={"n": n}) for n, source in enumerate(sources, start=1)]


def clip_sources(sources: Sequence[Source], max_chars: int) -> list[Source]:
    """Each source cut to `max_chars` characters of passage (`Source.clipped`)."""
    return [source.clipped(max_chars) for source in sources]


def fit_sources(sources: Sequence[Source], max_chars: int) -> list[Source]:
    """The sources a job view shows: at most `VIEW_MAX_SOURCES`, each passage cut to
    `max_chars` and to its share of `VIEW_PASSAGE_CHARS`, whatever the record holds."""
    shown = sources[:VIEW_MAX_SOURCES]
    share = VIEW_PASSAGE_CHARS // max(1, len(shown))
    return clip_sources(shown, min(max_chars, share))


def _cut(text: str, max_chars: int) -> str:
    return text[: max(0, max_chars - len(CUT_MARK))] + CUT_MARK
