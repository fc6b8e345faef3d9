"""The offline extractive answerer over the real demo corpus, indexed by the real retriever in
embedded Qdrant: what it quotes for the README's question, what it says when nothing is
relevant, and the same through the service (API, worker, registry)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from rag_async.config import Settings
from rag_async.domain.sources import Source
from rag_async.local.demo_corpus import DEMO_QUESTION, demo_documents
from rag_async.local.valkey import EmbeddedValkey
from rag_async.providers.llm import ExtractiveAnswerer
from rag_async.providers.llm.extractive import QUOTING
from rag_async.providers.retrieval import LexicalEncoder, Retriever, open_store
from tests.conftest import make_settings, running_stack
from tests.support.documents import add_document

# What pandoc left of Sphinx's markup in the demo corpus: roles' "!" and "~" prefixes,
# explicit titles ("namedtuples <collections.namedtuple>"), bare cross-reference labels, MyST
# roles, doctest's blank-line marker, escaped prompts of block-quoted doctests.
SPHINX_LEFTOVERS = re.compile(
    r"`[!~][^`]*`|`[^`]*<[^`>]+>`|\{ref\}|:[a-z]+:`|<BLANKLINE>|\\>\\>\\>"
    r"|`(?:tut-[a-z]|bltin|typesseq|typesmapping|formatspec|formatstrings|sys-path|installing|"
    r"distributing|old-string)[-a-z]*`"
)


def words(text: str) -> set[str]:
    return set(re.findall(r"\w+", text.lower()))


def quoted(answer: str) -> str:
    assert answer.startswith(QUOTING), answer
    return answer[len(QUOTING) :]


@pytest.fixture(scope="module")
async def demo(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Retriever]:
    """The demo corpus as the service indexes it (default chunking, embedded Qdrant)."""
    settings = Settings(_env_file=None, data_dir=tmp_path_factory.mktemp("demo"))
    store = await open_store(settings)
    try:
        retriever = await Retriever.open(store, settings, lexical=LexicalEncoder())
        for title, source, text in demo_documents():
            await retriever.index(source, title, source, text)
        yield retriever
    finally:
        await store.close()


async def sources_for(retriever: Retriever, question: str) -> list[Source]:
    return await retriever.search(question, Settings(_env_file=None).top_k)


def test_the_demo_corpus_has_no_sphinx_leftovers() -> None:
    for _, source, text in demo_documents():
        found = SPHINX_LEFTOVERS.findall(text)
        assert found == [], (source, found)
    # Cross-references read as the titles the HTML pages show.
    errors = next(text for _, source, text in demo_documents() if source == "tutorial-errors.md")
    assert "Built-in Exceptions lists the built-in exceptions" in errors


async def test_the_readme_question_quotes_try_and_except(demo: Retriever) -> None:
    answerer = ExtractiveAnswerer(LexicalEncoder().terms)
    sources = await sources_for(demo, DEMO_QUESTION)
    answer = answerer.answer(DEMO_QUESTION, sources)
    said = quoted(answer)
    assert {"try", "except"} <= words(said), answer
    # Every quote is cited with a source that was retrieved, and quotes its text.
    cited = {int(n) for n in re.findall(r"\[(\d+)\]", said)}
    assert cited and cited <= {source.n for source in sources}
    first = re.split(r" \[\d+\]", said)[0].strip().lstrip("…")
    assert any(first.split(":")[0][:40] in " ".join(s.text.split()) for s in sources), first


async def test_a_how_do_i_question_gets_the_code_example_it_asks_for(demo: Retriever) -> None:
    answerer = ExtractiveAnswerer(LexicalEncoder().terms)
    question = "How do I read a file line by line?"
    answer = answerer.answer(question, await sources_for(demo, question))
    assert "```\n>>> for line in f:" in answer, answer
    assert "loop over the file object" in answer


async def test_a_what_is_question_gets_the_definition(demo: Retriever) -> None:
    answerer = ExtractiveAnswerer(LexicalEncoder().terms)
    answer = answerer.answer(
        "What is a namespace?", await sources_for(demo, "What is a namespace?")
    )
    assert "A *namespace* is a mapping from names to objects." in answer, answer
    assert "```" not in answer  # code examples go with "how do I" questions only


async def test_a_weak_match_says_nothing_relevant_was_found(demo: Retriever) -> None:
    answerer = ExtractiveAnswerer(LexicalEncoder().terms)
    # Retrieval finds passages that share a word ("world") with the question.
    question = "Who won the football world cup in 1998?"
    sources = await sources_for(demo, question)
    assert sources
    answer = answerer.answer(question, sources, documents=6)
    assert not answer.startswith(QUOTING)
    assert answer.startswith('Nothing relevant to that was found in collection "default" (6 ')
    assert '"football", "world", "cup" and "1998"' in answer
    for source in sources:  # nothing of the unrelated passages is quoted
        assert source.text[:40] not in answer

    # No passage at all: the collection searched is named all the same.
    question = "What is the capital of France?"
    answer = answerer.answer(
        question, await sources_for(demo, question), collection="alice/notes", documents=1
    )
    assert answer == (
        'Nothing relevant to that was found in collection "notes" (1 document): '
        'no passage mentions "capital" or "France".'
    )
    empty = answerer.answer(question, [], collection="default", documents=0)
    assert empty == 'Collection "default" holds no documents yet: there is nothing to quote.'


async def test_the_service_names_the_collection_and_counts_its_documents(
    valkey: EmbeddedValkey, tmp_path: Path
) -> None:
    settings = make_settings(valkey, tmp_path)  # no LLM configured: the extractive answerer
    async with running_stack(settings) as stack:
        chosen = ("tutorial-errors.md", "tutorial-venv.md")
        for title, source, text in [d for d in demo_documents() if d[1] in chosen]:
            for collection in ("python", "other"):
                accepted = await add_document(
                    stack.client, text, title=title, source=source, collection=collection
                )
                events = [event async for event in stack.client.follow(accepted["job_id"])]
                assert events[-1].type == "done", events[-1]
        job = await stack.client.ask("Who won the football world cup in 1998?", collection="python")
        answer = await stack.client.answer(job["job_id"])
        assert answer.final is not None and answer.final.type == "done"
        text: Any = answer.final.data["answer"]
        assert text.startswith('Nothing relevant to that was found in collection "python" (2 ')

        job = await stack.client.ask(DEMO_QUESTION, collection="python")
        answer = await stack.client.answer(job["job_id"])
        assert answer.final is not None
        assert {"try", "except"} <= words(quoted(answer.final.data["answer"]))


# ---- honest answers to a newcomer's own documents, among the demo corpus --------------------

NEWCOMER_DOCUMENTS = {
    "Garden notes": (
        "garden-notes.md",
        "# Garden notes\n\nThe tomatoes went in on the south bed in early May. They need "
        "watering every second day in July.\n\nThe compost heap behind the shed is turned once "
        "a month.\n\nSlugs ate most of the lettuce last year.\n",
    ),
    "Office map": (
        "office-map.md",
        "# Office map\n\nThe office takes the third floor of the building. Reception is by the "
        "lifts.\n\nThe kitchen is at the end of the east corridor.\n\nFire exits are at both "
        "ends of the floor.\n",
    ),
    "Bread recipe": (
        "bread-recipe.md",
        "# Bread recipe\n\nMix 500 g of strong flour, 10 g of salt, 7 g of yeast and 350 ml of "
        "warm water into a soft dough.\n\nKnead it for ten minutes, then leave it to rise for "
        "an hour.\n\nBake it at 220 °C for 30 minutes.\n",
    ),
    "Brewmaster 3000 kettle manual": (
        "brewmaster-3000.md",
        "# Brewmaster 3000 kettle manual\n\nThe Brewmaster 3000 is an electric kettle with a "
        "1.7 litre jug.\n\n## Descaling\n\nDescale the kettle every four weeks in hard water "
        "areas. Fill it half with water and half with white vinegar, bring it to the boil and "
        "leave it overnight. Rinse it twice with clean water.\n\n## Warranty\n\nThe kettle "
        "comes with a two-year warranty. The warranty does not cover damage from descaling "
        "with anything but vinegar.\n",
    ),
}


@pytest.fixture(scope="module")
async def mixed(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Retriever]:
    """The demo corpus and a newcomer's notes in one collection, as `rag-async up` then an
    upload leave it."""
    settings = Settings(_env_file=None, data_dir=tmp_path_factory.mktemp("mixed"))
    store = await open_store(settings)
    try:
        retriever = await Retriever.open(store, settings, lexical=LexicalEncoder())
        for title, source, text in demo_documents():
            await retriever.index(source, title, source, text)
        for title, (source, text) in NEWCOMER_DOCUMENTS.items():
            await retriever.index(source, title, source, text)
        yield retriever
    finally:
        await store.close()


def cited_sources(answer: str, sources: list[Source]) -> set[str | None]:
    cited = {int(n) for found in re.findall(r"\[([\d, ]+)\]", answer) for n in found.split(",")}
    return {source.source for source in sources if source.n in cited}


@pytest.mark.parametrize(
    ("question", "document", "opening"),
    [
        # The web page's suggestions (web/collections.js), and the same asked otherwise.
        ("What is “Garden notes” about?", "garden-notes.md", "The tomatoes went in"),
        ("Give me an overview of Bread recipe.", "bread-recipe.md", "Mix 500 g of strong"),
        ("Give me an overview of “Bread recipe”.", "bread-recipe.md", "Mix 500 g of strong"),
        ("What are the key points of “Office map”?", "office-map.md", "The office takes"),
        ("Summarise the office map", "office-map.md", "The office takes"),
    ],
)
async def test_a_question_about_a_document_by_its_title_quotes_that_document(
    mixed: Retriever, question: str, document: str, opening: str
) -> None:
    answerer = ExtractiveAnswerer(LexicalEncoder().terms)
    sources = await sources_for(mixed, question)
    answer = answerer.answer(question, sources)
    said = quoted(answer)
    assert said.lstrip().startswith(opening), answer
    assert cited_sources(answer, sources) == {document}, answer
    # Its paragraphs' first sentences, not one paragraph's: what the document is about.
    assert len(re.findall(r"\[\d+\]", said)) == 3, answer


async def test_a_title_no_document_bears_is_answered_as_any_question(mixed: Retriever) -> None:
    answerer = ExtractiveAnswerer(LexicalEncoder().terms)
    question = "What is “Sourdough starters” about?"
    answer = answerer.answer(question, await sources_for(mixed, question), documents=10)
    assert answer.startswith("Nothing relevant to that was found"), answer


async def test_a_price_no_passage_mentions_is_said_to_be_missing(mixed: Retriever) -> None:
    answerer = ExtractiveAnswerer(LexicalEncoder().terms)
    question = "What is the price of the Brewmaster 3000?"
    answer = answerer.answer(question, await sources_for(mixed, question))
    assert answer.startswith(f'No passage mentions "price". {QUOTING} '), answer
    # When a passage has the word, nothing is said missing.
    question = "What is the warranty of the Brewmaster 3000?"
    answer = answerer.answer(question, await sources_for(mixed, question))
    assert answer.startswith(QUOTING) and "two-year warranty" in answer, answer


async def test_how_do_i_quotes_the_method_not_only_when(mixed: Retriever) -> None:
    answerer = ExtractiveAnswerer(LexicalEncoder().terms)
    question = "How do I descale the kettle?"
    answer = answerer.answer(question, await sources_for(mixed, question))
    assert (
        "Descale the kettle every four weeks in hard water areas. Fill it half with water and "
        "half with white vinegar, bring it to the boil and leave it overnight. Rinse it twice "
        "with clean water. [" in answer
    ), answer


def passage(n: int, chunk: int, text: str) -> Source:
    return Source(
        n=n, document_id="errors", title="Errors", chunk=chunk, score=1.0, text=text,
        source="errors.md", heading="Errors › Handling",
    )  # fmt: skip


def test_a_sentence_cut_at_a_chunks_start_is_quoted_whole_or_after_a_whole_one() -> None:
    answerer = ExtractiveAnswerer(LexicalEncoder().terms)
    whole = (
        "Exception handlers do not handle only exceptions that occur immediately in the try "
        "clause, but also those raised inside functions."
    )
    before = passage(2, 3, f"A try statement may have more than one except clause. {whole}")
    example = "\n\n    try:\n        f()\n    except OSError:\n        pass\n\nThen go on.\n"
    cut = passage(1, 4, whole[len("Exception ") :] + " For example:" + example)
    question = "How do I handle exceptions?"
    # The chunk before it is a source too: the sentence whole, citing both.
    answer = answerer.answer(question, [cut, before])
    assert f"{QUOTING} {whole} For example: [1, 2]" in answer, answer
    assert answer.count("Exception handlers do not handle") == 1, answer
    # It is not: quoted as cut, after a whole sentence, not to start the answer mid-sentence.
    other = passage(2, 9, "To handle exceptions that a library raises, catch its base class.")
    answer = answerer.answer(question, [cut, other])
    assert answer.startswith(f"{QUOTING} To handle exceptions that a library raises"), answer
    assert "[2] …handlers do not handle only" in answer, answer


async def test_the_readme_answer_starts_with_a_sentence(demo: Retriever) -> None:
    answerer = ExtractiveAnswerer(LexicalEncoder().terms)
    answer = answerer.answer(DEMO_QUESTION, await sources_for(demo, DEMO_QUESTION))
    said = quoted(answer).lstrip()
    assert said[:1].isupper(), answer
    # A "how do I" answer shows the example a quoted sentence introduces, or omits the sentence.
    for introduces in re.findall(r"[^.]*: \[[\d, ]+\]", said):
        after = said[said.index(introduces) + len(introduces) :]
        assert after.startswith("\n\n```"), (introduces, answer)
