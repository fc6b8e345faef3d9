"""The offline answerer: no model, it quotes the sentences of the sources that best match the
question and cites them. It says what it is, so nobody mistakes it for a generated answer."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable, Sequence

from ..sources import Source

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9`\"'(])")
_PIECE = re.compile(r"\S+\s*")
_BLOCK = re.compile(r"\n\s*\n")
_CODE_STARTS = (">>>", "...", "```", "$ ", "|")
_LONGEST_QUOTE = 400
_MOST_SENTENCES = 3


class ExtractiveAnswerer:
    name = "extractive (offline: quotes the best-matching sentences)"

    def __init__(self, terms: Callable[[str], list[str]]) -> None:
        self._terms = terms

    async def stream(self, question: str, sources: Sequence[Source]) -> AsyncIterator[str]:
        # Word-sized pieces, like a model's tokens, so clients exercise the same code path.
        for piece in _PIECE.findall(self.answer(question, sources)):
            yield piece

    def answer(self, question: str, sources: Sequence[Source]) -> str:
        wanted = set(self._terms(question))
        scored: list[tuple[float, int, str, int]] = []
        seen: set[str] = set()  # overlapping chunks repeat sentences: quote each once
        for rank, source in enumerate(sources):
            for sentence in _sentences(source.text):
                key = sentence[:60].lower()
                if key in seen or not sentence[0].isupper():
                    continue  # a repeat, or a fragment cut at a chunk's start
                seen.add(key)
                overlap = len(wanted.intersection(self._terms(sentence)))
                if overlap:
                    # Prefer matches from higher-ranked sources when overlap ties.
                    scored.append((overlap - rank * 0.01, -len(scored), sentence, source.n))
        if not scored:
            return "I could not find anything about that in the documents."
        best = sorted(scored, reverse=True)[:_MOST_SENTENCES]
        best.sort(key=lambda item: -item[1])  # back into reading order
        quoted = " ".join(f"{sentence} [{n}]" for _, _, sentence, n in best)
        return f"From the documents: {quoted}"

    async def aclose(self) -> None:
        return None


def _sentences(text: str) -> list[str]:
    """Prose sentences of a chunk: code blocks and over-long runs are no good as quotes."""
    sentences = []
    for block in _BLOCK.split(text):
        if block.lstrip().startswith(_CODE_STARTS) or block.startswith("    "):
            continue
        flat = " ".join(block.split())
        sentences += [s for s in _SENTENCE_END.split(flat) if 20 < len(s) <= _LONGEST_QUOTE]
    return sentences
