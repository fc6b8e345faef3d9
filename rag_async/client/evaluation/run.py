"""Asking a question file's questions of POST /search, a few at a time, and what came of
each: its rank (scoring.py), the documents found instead, or the API's error."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from rag_async.client.api import ApiError, RagClient
from rag_async.client.evaluation.questions import EvalQuestion
from rag_async.client.evaluation.scoring import mrr_at, rank_of, ranked_documents, recall_at
from rag_async.domain.sources import Source

# Statuses worth another try, after a pause: a key's rate or stream limit, a queue shedding
# load, an API restarting. Anything else (a collection refused, say) is the question's error.
_AGAIN = frozenset({429, 502, 503, 504})
_TRIES = 6
# A miss is a question whose document is not among the first this many (or not found).
MISS_BEYOND = 5
# The documents a miss shows as what came instead.
SHOWN_INSTEAD = 5


@dataclass(frozen=True, slots=True)
class Asked:
    """One question's outcome: the rank of its document, the documents found (labelled), or
    the error that kept it from being searched."""

    question: EvalQuestion
    rank: int | None
    found: tuple[str, ...] = ()
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Evaluation:
    top_k: int
    asked: list[Asked] = field(default_factory=list)

    @property
    def ranks(self) -> list[int | None]:
        return [asked.rank for asked in self.asked]

    @property
    def ks(self) -> list[int]:
        """The k of each recall@k: 1, 5, 10 and the top-k, those the passages can hold."""
        return sorted(k for k in {1, 5, 10, self.top_k} if k <= self.top_k)

    def recall(self) -> dict[int, float]:
        return {k: recall_at(self.ranks, k) for k in self.ks}

    def mrr(self) -> float:
        return mrr_at(self.ranks)

    @property
    def misses(self) -> list[Asked]:
        return [a for a in self.asked if a.rank is None or a.rank > MISS_BEYOND]

    @property
    def errors(self) -> list[Asked]:
        return [asked for asked in self.asked if asked.error is not None]


def label(source: Source) -> str:
    """How a found document is named in a report: as a question file would name it."""
    return source.source or source.title or source.document_id


async def evaluate(
    client: RagClient,
    questions: Sequence[EvalQuestion],
    *,
    top_k: int,
    collection: str | None,
    concurrency: int,
    on_done: Callable[[], None] = lambda: None,
) -> Evaluation:
    """Search every question (at most `concurrency` at once), in the file's order; a line's
    own collection over `collection`."""
    limit = asyncio.Semaphore(concurrency)

    async def one(question: EvalQuestion) -> Asked:
        async with limit:
            asked = await _ask(client, question, top_k, question.collection or collection)
        on_done()
        return asked

    asked = await asyncio.gather(*(one(question) for question in questions))
    return Evaluation(top_k, list(asked))


async def _ask(
    client: RagClient, question: EvalQuestion, top_k: int, collection: str | None
) -> Asked:
    try:
        sources = await _search(client, question.text, top_k, collection)
    except ApiError as error:
        return Asked(question, None, error=error.message)
    documents = ranked_documents(sources)
    found = tuple(label(source) for source in documents[:SHOWN_INSTEAD])
    return Asked(question, rank_of(question.expected, sources), found)


async def _search(
    client: RagClient, query: str, top_k: int, collection: str | None
) -> list[Source]:
    """The passages found, waiting for a search the API answered 202 to; a refusal worth
    another try (a key's limits, say) is tried again after a growing pause."""
    tries = 0
    while True:
        tries += 1
        try:
            body = await client.search(query, collection=collection, top_k=top_k)
            if "results" in body:
                results = body["results"]
            else:  # still queued when the API's wait was up
                results = await client.searched(body["job_id"])
            return [Source.model_validate(result) for result in results]
        except ApiError as error:
            if error.status not in _AGAIN or tries == _TRIES:
                raise
            await asyncio.sleep(0.25 * 2**tries)
