"""Scoring retrieval: where the document that answers a question ranks among the documents a
search returned, and recall@k and MRR over many questions. The one home of these rules, for
`rag-async eval` and benchmarks/eval_retrieval.py alike.

A search returns passages; their documents are ranked in the order their first passage
appears (a document ranks where its best passage does), so that a long page's neighbouring
chunks do not push the next document down. A question's rank is that of the first document
its `expected` names; none if no returned document is named.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from rag_async.domain.sources import Source

# MRR is counted over the first 10 documents (MRR@10); a rank beyond counts 0.
MRR_DEPTH = 10


def names_of(source: Source) -> set[str]:
    """What a passage's document may be named by in a question file: its source (the file
    name it was ingested under, or the file's last path part), its document id (also
    without the `<key name>:` an API key's documents carry) and its title (any case)."""
    names = {source.document_id, source.document_id.partition(":")[2], source.title.casefold()}
    if source.source:
        names |= {source.source, source.source.rsplit("/", 1)[-1]}
    return names - {""}


def names_match(expected: Iterable[str], source: Source) -> bool:
    """Whether `source`'s document is one that `expected` names."""
    names = names_of(source)
    return any(name in names or name.casefold() in names for name in expected)


def ranked_documents(sources: Sequence[Source]) -> list[Source]:
    """The first passage of each document, in rank order."""
    firsts: dict[str, Source] = {}
    for source in sources:
        firsts.setdefault(source.document_id, source)
    return list(firsts.values())


def rank_of(expected: Iterable[str], sources: Sequence[Source]) -> int | None:
    """The 1-based rank of the first document `expected` names among those of `sources`;
    None if none of them is named."""
    wanted = list(expected)
    for rank, source in enumerate(ranked_documents(sources), start=1):
        if names_match(wanted, source):
            return rank
    return None


def recall_at(ranks: Sequence[int | None], k: int) -> float:
    """The share of questions whose rank is within `k`."""
    return sum(1 for r in ranks if r is not None and r <= k) / len(ranks) if ranks else 0.0


def mrr_at(ranks: Sequence[int | None], k: int = MRR_DEPTH) -> float:
    """The mean of 1/rank over the questions, a rank beyond `k` (or none) counting 0."""
    return sum(1 / r for r in ranks if r is not None and r <= k) / len(ranks) if ranks else 0.0
