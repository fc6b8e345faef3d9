from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Protocol

from ..sources import Source


class LLM(Protocol):
    """Something that answers a question from numbered sources, as a stream of text pieces."""

    name: str

    def stream(self, question: str, sources: Sequence[Source]) -> AsyncIterator[str]: ...

    async def aclose(self) -> None: ...
