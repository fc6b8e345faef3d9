"""Retrieval quality of the offline default, over a corpus nobody here wrote.

The Python 3.11 documentation as Debian's `python3.11-doc` installs it (530 HTML pages under
/usr/share/doc/python3.11/html) is ingested the way a worker does it (parse -> chunk -> encode
-> upsert into embedded Qdrant, in a temporary folder), then each question of
`retrieval_questions.jsonl` is searched. A question names the page(s) that answer it; the
score is at page level: the chunks returned are folded into pages in rank order, and

- recall@5: the share of questions with an answering page among the first 5 pages,
- MRR@10: the mean of 1/rank of the first answering page (0 beyond rank 10),
- answer@4: the share of questions with an answering page among the first `top_k` (4)
  chunks, the sources an answer is written from (what a per-document cap can change: it does
  not change the order in which pages first appear).

Pages are ranked and scored as `rag-async eval` does it (rag_async/client/evaluation/scoring.py).

Each variant is a way of chunking and scoring; running several side by side shows what each
change did on the same corpus and questions. The questions were written from the pages
before any change was measured against them.

    python benchmarks/eval_retrieval.py                       # every variant, side by side
    python benchmarks/eval_retrieval.py --variants before default
    python benchmarks/eval_retrieval.py --misses default      # the questions it gets wrong
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from harness import percentile  # noqa: E402

from rag_async.client.evaluation.scoring import mrr_at, rank_of, ranked_documents, recall_at  # noqa: E402
from rag_async.config import Settings  # noqa: E402
from rag_async.providers.parsing import ParsedDocument  # noqa: E402
from rag_async.providers.parsing.html import parse_html  # noqa: E402
from rag_async.providers.retrieval import (  # noqa: E402
    Chunk,
    Embedder,
    LexicalEncoder,
    Retriever,
    chunk_text,
    open_store,
)
from rag_async.providers.retrieval.lexical import STOPWORDS  # noqa: E402
from rag_async.providers.retrieval.retriever import PER_DOCUMENT, ProgressCallback  # noqa: E402
from rag_async.providers.retrieval.static_embedder import StaticEmbedder  # noqa: E402
from rag_async.providers.retrieval.store import DEFAULT_COLLECTION  # noqa: E402

DOCS = Path("/usr/share/doc/python3.11/html")
QUESTIONS = Path(__file__).with_name("retrieval_questions.jsonl")
# Chunks fetched per question: enough to fill 10 distinct pages in practice.
DEPTH = 50
# The sources an answer gets (Settings.top_k's default).
TOP_K = 4


@dataclass(frozen=True)
class Question:
    text: str
    pages: tuple[str, ...]  # any of them answers it
    evidence: str  # a phrase of the first page, to check the data against the corpus


# --- the variants: "before" is the offline default as it was when this evaluation was
# written; each next one adds one change, and "default" is the library as it is now.

_OLD_TOKEN = re.compile(r"[^\W_]+")


def old_stem(word: str) -> str:
    """The light suffix stripper the lexical encoder had before the English stemmer: plurals,
    -ing, -ed and a final -e only."""
    if len(word) <= 3 or not word.isalpha():
        return word
    if word.endswith("ies") and len(word) > 5:
        return word[:-3] + "y"
    if word.endswith(("sses", "xes", "ches", "shes", "zes")):
        word = word[:-2]
    elif word.endswith("s") and not word.endswith(("ss", "us", "is")):
        word = word[:-1]
    for suffix in ("ing", "ed"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            word = word[: -len(suffix)]
            if len(word) > 3 and word[-1] == word[-2] and word[-1] not in "aeiouls":
                word = word[:-1]
            break
    if word.endswith("e") and len(word) > 3:
        word = word[:-1]
    return word


class OldTokens(LexicalEncoder):
    """Letters-and-digits tokens: "lru_cache" and "ThreadPoolExecutor" split at underscores
    only, "3.11" and "0.1" cut into digits and dropped as one-character terms."""

    def __init__(self) -> None:
        super().__init__(stemmer=old_stem)

    def terms(self, text: str) -> list[str]:
        return [
            old_stem(token)
            for token in _OLD_TOKEN.findall(text.lower())
            if len(token) > 1 and token not in STOPWORDS
        ]


class OldStem(LexicalEncoder):
    def __init__(self) -> None:
        super().__init__(stemmer=old_stem)


def _one_per_word(word: str) -> int:
    return 1


class WordChunks(Retriever):
    """Chunks sized in whitespace words."""

    async def index(
        self,
        document_id: str,
        title: str,
        source: str | None,
        text: str,
        on_progress: ProgressCallback | None = None,
        *,
        collection: str = DEFAULT_COLLECTION,
        page_starts: Sequence[int] = (),
        version: str = "",
    ) -> int:
        assert not page_starts, "HTML only"
        size = self.chunking
        chunks = chunk_text(
            text,
            max_tokens=size.max_tokens,
            overlap=size.overlap,
            max_chars=size.max_chars,
            count=_one_per_word,
        )
        return await self.index_chunks(
            document_id, title, source, chunks, on_progress, collection=collection, version=version
        )


class WordChunksHeadingOnly(WordChunks):
    """...and a chunk indexed with its heading path, or the title when it has none."""

    def _contexts(self, title: str, chunks: Sequence[Chunk]) -> list[str]:
        return [f"{chunk.heading or title}\n\n{chunk.text}" for chunk in chunks]


# How each page is parsed: the HTML parser's structural rules on or off.
ParseOptions = tuple[tuple[str, object], ...]
OLD_PARSE: ParseOptions = (("max_link_density", None),)
NEW_PARSE: ParseOptions = ()
DT_PARSE: ParseOptions = (("definition_sections", True),)


@dataclass(frozen=True)
class Variant:
    """One way to parse, chunk and score."""

    description: str
    encoder: Callable[[], LexicalEncoder] = LexicalEncoder
    retriever: type[Retriever] = Retriever
    settings: dict[str, object] = field(default_factory=dict)
    parse: ParseOptions = NEW_PARSE
    per_document: int | None = PER_DOCUMENT
    embedder: Callable[[], Embedder] | None = None


_WORDS = {"chunk_tokens": 120, "chunk_overlap": 24}
VARIANTS: dict[str, Variant] = {
    "before": Variant(
        "120-word chunks under their heading path; letters-and-digits tokens, light stemmer",
        OldTokens,
        WordChunksHeadingOnly,
        _WORDS,
        OLD_PARSE,
        None,
    ),
    "+identifiers": Variant(
        "+ identifiers also split at camelCase and kept whole; numbers like 3.11 kept",
        OldStem,
        WordChunksHeadingOnly,
        _WORDS,
        OLD_PARSE,
        None,
    ),
    "+porter": Variant(
        "+ an English stemmer (Snowball's Porter2)",
        LexicalEncoder,
        WordChunksHeadingOnly,
        _WORDS,
        OLD_PARSE,
        None,
    ),
    "+title": Variant(
        "+ chunks indexed under title › heading path (Sphinx's site suffix off the title)",
        LexicalEncoder,
        WordChunks,
        _WORDS,
        OLD_PARSE,
        None,
    ),
    "+200tokens": Variant(
        "+ chunks of 200 tokens (words and punctuation marks), overlap 40",
        parse=OLD_PARSE,
        per_document=None,
    ),
    "+links": Variant(
        "+ HTML blocks that are mostly link text dropped as navigation",
        per_document=None,
    ),
    "lexical": Variant(
        f"+ at most {PER_DOCUMENT} chunks of a page ahead of other pages': lexical only "
        "(RAG_OFFLINE_EMBEDDER=off)"
    ),
    "default": Variant(
        "+ hybrid: BM25 and the static dense model (WordLlama) fused by RRF: the default now",
        embedder=StaticEmbedder.load,
    ),
    "dense-half": Variant(
        "the default with the dense ranking weighted 0.5 (RAG_RRF_DENSE_WEIGHT=0.5)",
        settings={"rrf_dense_weight": 0.5},
        embedder=StaticEmbedder.load,
    ),
    "local-mode": Variant(
        "the lexical default on qdrant-client's local mode (the embedded store before Edge)",
        settings={"store": "local"},
    ),
    "+dt": Variant(
        "the lexical default + a <dt> with an id (an API signature, a glossary term) starts "
        "a section",
        parse=DT_PARSE,
    ),
    "cap=1": Variant(
        "the lexical default with at most 1 chunk of a page ahead of other pages'", per_document=1
    ),
    "k1=0.9,b=0.4": Variant(
        "the lexical default with Anserini's passage-retrieval BM25 constants instead of "
        "1.2 / 0.75",
        partial(LexicalEncoder, k1=0.9, b=0.4),
    ),
}


def load_questions(path: Path) -> list[Question]:
    questions = []
    for line in path.read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            questions.append(Question(row["question"], tuple(row["pages"]), row["evidence"]))
    return questions


def load_corpus(root: Path, options: ParseOptions = NEW_PARSE) -> dict[str, ParsedDocument]:
    """Every HTML page under `root`, parsed, by its path relative to `root`."""
    return {
        page.relative_to(root).as_posix(): parse_html(page.name, page.read_bytes(), **dict(options))  # type: ignore[arg-type]
        for page in sorted(root.rglob("*.html"))
    }


def evidence_lost(questions: Sequence[Question], corpus: dict[str, ParsedDocument]) -> int:
    """Questions whose evidence phrase a parser dropped from the answering page."""
    return sum(
        question.evidence.lower() not in corpus[question.pages[0]].text.lower()
        for question in questions
    )


def check_questions(questions: Sequence[Question], corpus: dict[str, ParsedDocument]) -> None:
    for question in questions:
        missing = [page for page in question.pages if page not in corpus]
        if missing:
            raise SystemExit(f"{question.text!r}: no page {missing} in the corpus")
        if question.evidence.lower() not in corpus[question.pages[0]].text.lower():
            raise SystemExit(f"{question.text!r}: {question.evidence!r} not in {question.pages[0]}")


@dataclass
class Result:
    variant: str
    chunks: int
    index_seconds: float
    search_seconds: list[float]
    ranks: list[int | None]  # page rank of the first answering page, per question
    in_sources: list[bool]  # an answering page among the first TOP_K chunks

    def recall(self, k: int) -> float:
        return recall_at(self.ranks, k)

    def answered(self) -> float:
        return sum(self.in_sources) / len(self.in_sources)

    def mrr(self, k: int) -> float:
        return mrr_at(self.ranks, k)


async def evaluate(
    name: str, variant: Variant, corpus: dict[str, ParsedDocument], questions: Sequence[Question]
) -> tuple[Result, list[list[str]]]:
    with tempfile.TemporaryDirectory(prefix="rag-eval-") as tmp:
        settings = Settings(_env_file=None, data_dir=Path(tmp), **variant.settings)  # type: ignore[arg-type]
        store = await open_store(settings)
        try:
            retriever = await variant.retriever.open(
                store,
                settings,
                lexical=variant.encoder(),
                embedder=variant.embedder() if variant.embedder else None,
                per_document=variant.per_document,
            )
            started = time.perf_counter()
            chunks = 0
            for path, document in corpus.items():
                chunks += await retriever.index(
                    path,
                    document.title or path,
                    path,
                    document.text,
                    page_starts=document.page_starts,
                )
            index_seconds = time.perf_counter() - started
            ranks: list[int | None] = []
            in_sources: list[bool] = []
            rankings: list[list[str]] = []
            search_seconds = []
            for question in questions:
                started = time.perf_counter()
                sources = await retriever.search(question.text, DEPTH)
                search_seconds.append(time.perf_counter() - started)
                in_sources.append(rank_of(question.pages, sources[:TOP_K]) is not None)
                rankings.append([source.document_id for source in ranked_documents(sources)])
                ranks.append(rank_of(question.pages, sources))
        finally:
            await store.close()
    return Result(name, chunks, index_seconds, search_seconds, ranks, in_sources), rankings


def _paired(base: Result | None, result: Result) -> str:
    """How many questions `result` ranks higher and lower than `base` (within MRR@10): with
    100 questions, a few points of recall are a few questions, so say which moved."""
    if base is None:
        return ""

    def score(rank: int | None) -> float:
        return 1 / rank if rank is not None and rank <= 10 else 0.0

    pairs = [(score(a), score(b)) for a, b in zip(base.ranks, result.ranks, strict=True)]
    return f"{sum(b > a for a, b in pairs)}/{sum(b < a for a, b in pairs)}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=Path, default=DOCS, help="the HTML documentation root")
    parser.add_argument("--questions", type=Path, default=QUESTIONS)
    parser.add_argument("--variants", nargs="*", choices=sorted(VARIANTS), default=list(VARIANTS))
    parser.add_argument(
        "--misses",
        metavar="VARIANT",
        nargs="*",
        default=[],
        help="list the questions VARIANT ranks below 5",
    )
    args = parser.parse_args()
    if not args.docs.is_dir():
        raise SystemExit(f"{args.docs}: not found (Debian: apt-get install python3.11-doc)")
    questions = load_questions(args.questions)
    started = time.perf_counter()
    corpora = {OLD_PARSE: load_corpus(args.docs, OLD_PARSE)}
    # The questions are checked against the pages as they were written from.
    check_questions(questions, corpora[OLD_PARSE])
    for options in dict.fromkeys(VARIANTS[name].parse for name in args.variants):
        if options not in corpora:
            corpora[options] = load_corpus(args.docs, options)
    for options, corpus in corpora.items():
        print(
            f"corpus {dict(options) or 'default'}: {len(corpus)} pages, "
            f"{sum(len(d.text) for d in corpus.values()) / 1e6:.2f} M characters of text; "
            f"evidence phrases lost: {evidence_lost(questions, corpus)}"
        )
    print(f"parsed in {time.perf_counter() - started:.1f} s; {len(questions)} questions")
    print(
        f"{'variant':<16} {'recall@5':>9} {'MRR@10':>7} {'recall@1':>9} {'recall@10':>10} "
        f"{'answer@4':>9} {'chunks':>7} {'index s':>8} {'search ms p50/p99':>18}  "
        f"up/down vs {args.variants[0]}, vs the row above"
    )
    first: Result | None = None
    previous: Result | None = None
    for name in args.variants:
        variant = VARIANTS[name]
        corpus = corpora[variant.parse]
        result, rankings = asyncio.run(evaluate(name, variant, corpus, questions))
        search_ms = [percentile(result.search_seconds, q) * 1000 for q in (50, 99)]
        print(
            f"{name:<16} {result.recall(5):>9.2f} {result.mrr(10):>7.3f} {result.recall(1):>9.2f} "
            f"{result.recall(10):>10.2f} {result.answered():>9.2f} {result.chunks:>7} "
            f"{result.index_seconds:>8.1f} "
            f"{search_ms[0]:>10.2f} {search_ms[1]:>7.2f}  "
            f"{_paired(first, result):>7} {_paired(previous, result):>7}",
            flush=True,
        )
        first = first or result
        previous = result
        if name in args.misses:
            for question, rank, pages in zip(questions, result.ranks, rankings, strict=True):
                if rank is None or rank > 5:
                    print(f"    rank {rank}: {question.text}  -> want {question.pages[0]}")
                    print(f"        got {', '.join(pages[:5])}")
    for name in args.variants:
        print(f"  {name}: {VARIANTS[name].description}")


if __name__ == "__main__":
    main()
