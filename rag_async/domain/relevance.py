"""A source's relevance: its score on one scale from 0 to 1, what /v1 reports as `score` and
what OpenAI's `ranking_options.score_threshold` (0..1) compares. The one home of the rule.

A hybrid search's score is Qdrant's fused reciprocal rank, bounded by the score of a chunk that
both lists rank first (`Fusion.best`): relevance is the score over that bound, so it means the
same in every search. A lexical search's BM25 score has no bound (it grows with the query's
terms and their rarity): relevance is the score over the best score of the search's results,
so its best result is 1 and a threshold keeps what comes close to it. Either way the order of
the sources is unchanged (the scale is monotonic) and the native score stays as it was.
"""

from __future__ import annotations

from collections.abc import Sequence

from rag_async.domain.sources import Source, renumbered


def with_relevance(sources: Sequence[Source], best_possible: float | None) -> list[Source]:
    """`sources` with their `relevance`: each score over `best_possible` (a hybrid search's
    bound), or over the best score among them (None: lexical search)."""
    scores = [source.score for source in sources]
    scale = best_possible if best_possible is not None else max(scores, default=0.0)
    if scale <= 0:
        return [source.model_copy(update={"relevance": 0.0}) for source in sources]
    return [
        source.model_copy(update={"relevance": min(1.0, max(0.0, source.score / scale))})
        for source in sources
    ]


def at_least(sources: Sequence[Source], threshold: float | None) -> list[Source]:
    """The sources whose relevance reaches `threshold` (all when None), numbered 1..n again."""
    if threshold is None:
        return list(sources)
    kept = [source for source in sources if (source.relevance or 0.0) >= threshold]
    return renumbered(kept)
