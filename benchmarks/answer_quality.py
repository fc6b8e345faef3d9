"""Answer quality of the offline extractive answerer: does what it quotes answer the question?

Two corpora, each indexed the way a worker does it (chunk -> encode -> upsert into embedded
Qdrant in a temporary folder, through the library's functions rather than HTTP): the bundled
demo corpus (six pages of the Python tutorial) and the Python 3.11 documentation as Debian's
`python3.11-doc` installs it (530 HTML pages under /usr/share/doc/python3.11/html). Each
question of `answer_questions.jsonl` is searched (`RAG_TOP_K` sources, 4) and answered by
`ExtractiveAnswerer`; the questions were written, with their key terms, before the answerer
was changed and measured against them.

- A question with key terms (`expect`: any of them will do) counts as answered when the
  sentences the answer quotes contain one: as a word for a word ("try", not "entry"), as
  written for anything else ("int(", "[:]"). Case is ignored.
- A question with none (`expect: null`, nothing in the corpus answers it: "What is the
  capital of France?") counts as answered when the answer quotes nothing.

    python benchmarks/answer_quality.py                   # both corpora (~3 min, mostly indexing)
    python benchmarks/answer_quality.py --corpus demo     # the demo corpus only (seconds)
    python benchmarks/answer_quality.py --show            # and every answer, the misses marked
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import re
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from eval_retrieval import DOCS, load_corpus  # noqa: E402

from rag_async.config import Settings  # noqa: E402
from rag_async.domain.sources import Source  # noqa: E402
from rag_async.local.demo_corpus import demo_documents  # noqa: E402
from rag_async.providers.llm import ExtractiveAnswerer  # noqa: E402
from rag_async.providers.retrieval import LexicalEncoder, Retriever, open_store  # noqa: E402
from rag_async.providers.retrieval.static_embedder import load_default  # noqa: E402

QUESTIONS = Path(__file__).with_name("answer_questions.jsonl")
CORPORA = ("demo", "python-docs")
# What an answer that quotes the documents starts with; anything else quotes nothing.
QUOTING = "From the documents:"
_CITATION = re.compile(r"\s*\[\d+(?:, \d+)*\]")


@dataclass(frozen=True)
class Question:
    corpus: str
    text: str
    expect: tuple[str, ...] | None


@dataclass(frozen=True)
class Outcome:
    question: Question
    answer: str
    quoted: str
    good: bool


def load_questions(path: Path) -> list[Question]:
    questions = []
    for line in path.read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            expect = tuple(row["expect"]) if row["expect"] is not None else None
            questions.append(Question(row["corpus"], row["question"], expect))
    return questions


def contains(text: str, term: str) -> bool:
    """`term` in `text`, ignoring case; a word only as a whole word."""
    left = r"(?<!\w)" if re.match(r"\w", term) else ""
    right = r"(?!\w)" if re.search(r"\w$", term) else ""
    return re.search(left + re.escape(term) + right, text, re.IGNORECASE) is not None


def quoted_part(answer: str) -> str:
    """The sentences an answer quotes, without their citation marks; "" when it quotes none.
    A note may come first ("No passage mentions "price". From the documents: ...")."""
    if not answer.startswith(QUOTING) and f". {QUOTING} " not in answer:
        return ""
    return _CITATION.sub("", answer[answer.index(QUOTING) + len(QUOTING) :]).strip()


def judge(question: Question, answer: str) -> Outcome:
    quoted = quoted_part(answer)
    if question.expect is None:
        good = not quoted
    else:
        good = any(contains(quoted, term) for term in question.expect)
    return Outcome(question, answer, quoted, good)


def documents_of(corpus: str, docs: Path) -> list[tuple[str, str, str]]:
    """`(document id, title, text)` of each document of a corpus."""
    if corpus == "demo":
        return [(source, title, text) for title, source, text in demo_documents()]
    return [
        (path, document.title or path, document.text)
        for path, document in load_corpus(docs).items()
    ]


def answer_of(
    answerer: ExtractiveAnswerer,
    question: str,
    sources: Sequence[Source],
    collection: str,
    count: int,
) -> str:
    """The answer, told the collection searched and its size where the answerer takes them
    (the one before this benchmark did not)."""
    if "documents" in inspect.signature(answerer.answer).parameters:
        return answerer.answer(question, sources, collection=collection, documents=count)
    return answerer.answer(question, sources)


async def run_corpus(
    corpus: str, questions: Sequence[Question], docs: Path
) -> tuple[list[Outcome], int, float]:
    documents = documents_of(corpus, docs)
    with tempfile.TemporaryDirectory(prefix="rag-answers-") as tmp:
        settings = Settings(_env_file=None, data_dir=Path(tmp))
        store = await open_store(settings)
        try:
            lexical = LexicalEncoder()
            # As a worker retrieves: hybrid with the offline dense model unless
            # RAG_OFFLINE_EMBEDDER=off (or its package is missing).
            embedder = load_default() if settings.offline_embedder == "static" else None
            retriever = await Retriever.open(store, settings, lexical=lexical, embedder=embedder)
            started = time.perf_counter()
            for document_id, title, text in documents:
                await retriever.index(document_id, title, document_id, text)
            index_seconds = time.perf_counter() - started
            answerer = ExtractiveAnswerer(lexical.terms)
            outcomes = []
            for question in questions:
                sources = await retriever.search(question.text, settings.top_k)
                answer = answer_of(
                    answerer, question.text, sources, settings.default_collection, len(documents)
                )
                outcomes.append(judge(question, answer))
        finally:
            await store.close()
    return outcomes, len(documents), index_seconds


def share(outcomes: Sequence[Outcome]) -> str:
    good = sum(outcome.good for outcome in outcomes)
    return f"{good}/{len(outcomes)}" if outcomes else "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", choices=CORPORA, nargs="*", default=list(CORPORA))
    parser.add_argument("--docs", type=Path, default=DOCS, help="the HTML documentation root")
    parser.add_argument("--questions", type=Path, default=QUESTIONS)
    parser.add_argument("--show", action="store_true", help="print every answer")
    args = parser.parse_args()
    if "python-docs" in args.corpus and not args.docs.is_dir():
        raise SystemExit(f"{args.docs}: not found (Debian: apt-get install python3.11-doc)")
    questions = load_questions(args.questions)
    print(
        f"{'corpus':<12} {'documents':>9} {'index s':>8} {'with key term':>14} "
        f"{'declined':>9} {'all':>7}"
    )
    total: list[Outcome] = []
    for corpus in args.corpus:
        asked = [question for question in questions if question.corpus == corpus]
        outcomes, count, seconds = asyncio.run(run_corpus(corpus, asked, args.docs))
        total += outcomes
        answerable = [o for o in outcomes if o.question.expect is not None]
        unanswerable = [o for o in outcomes if o.question.expect is None]
        print(
            f"{corpus:<12} {count:>9} {seconds:>8.1f} {share(answerable):>14} "
            f"{share(unanswerable):>9} {share(outcomes):>7}",
            flush=True,
        )
        if args.show:
            for outcome in outcomes:
                mark = "ok  " if outcome.good else "MISS"
                expect = " | ".join(outcome.question.expect or ("(nothing)",))
                print(f"  {mark} {outcome.question.text}  [want: {expect}]")
                print(f"       {outcome.answer}")
    if len(args.corpus) > 1:
        answerable = [o for o in total if o.question.expect is not None]
        unanswerable = [o for o in total if o.question.expect is None]
        print(
            f"{'both':<12} {'':>9} {'':>8} {share(answerable):>14} {share(unanswerable):>9} "
            f"{share(total):>7}"
        )


if __name__ == "__main__":
    main()
