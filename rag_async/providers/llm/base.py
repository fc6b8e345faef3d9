from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Protocol

from rag_async.domain.generation import Generation, GenerationReport
from rag_async.domain.sources import Source
from rag_async.store.conversations import Turn


class LLM(Protocol):
    """Something that answers a question from numbered sources, as a stream of text pieces."""

    name: str

    def stream(
        self,
        question: str,
        sources: Sequence[Source],
        *,
        collection: str | None = None,
        history: Sequence[Turn] = (),
        generation: Generation | None = None,
        report: GenerationReport | None = None,
    ) -> AsyncIterator[str]:
        """The answer's text in pieces. `collection`: the (stored) name of the collection that
        was searched, for an answerer that says where it found nothing. `history`: the
        conversation's earlier turns. `generation`: the client's wishes (instructions, token
        limit, temperature, stop); `report`, filled in as it ends: the tokens counted, and
        whether the token limit cut the answer."""
        ...

    async def aclose(self) -> None: ...
