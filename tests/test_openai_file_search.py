"""OpenAI's hosted file search, self-hosted, spoken to by the official `openai` SDK only: a
vector store searched (`vector_stores.search`: filters, max_num_results, a score threshold on
the 0..1 relevance scale, a list of queries), and the Responses API's `file_search` tool (the
`file_search_call` item with its results, `file_citation` annotations of the matching file
only, the stream's events and an exact resume, other keys' stores not found, bad tools 400).
Against the real app, worker, Valkey and the test LLM server, which cites [1]."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import openai
import pytest

from rag_async.config import Settings
from rag_async.domain.relevance import at_least, with_relevance
from rag_async.local.valkey import EmbeddedValkey
from rag_async.providers.retrieval import Retriever, open_store
from rag_async.providers.retrieval.static_embedder import StaticEmbedder
from tests.conftest import Stack, keyed_settings, running_stack

ALICE, BOB = "alice-secret-0123456789", "bob-secret-0123456789ab"
GREEN = "# Green tea\n\nBrew green tea at 80 degrees for two minutes. Green tea steeps gently."
BLACK = "# Black tea\n\nBrew black tea at 95 degrees for four minutes. Black tea steeps long."
QUESTION = "How do I brew tea, and for how many minutes?"


def sdk(stack: Stack, key: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{stack.base_url}/v1", api_key=key, max_retries=0)


@pytest.fixture
async def keyed(valkey: EmbeddedValkey, tmp_path: Path, llm: Any) -> AsyncIterator[Stack]:
    settings = keyed_settings(valkey, tmp_path, llm, users={"alice": ALICE, "bob": BOB}, admins={})
    async with running_stack(settings) as stack:
        yield stack


@pytest.fixture
async def alice(keyed: Stack) -> AsyncIterator[openai.AsyncOpenAI]:
    async with sdk(keyed, ALICE) as client:
        yield client


async def tea_store(client: openai.AsyncOpenAI) -> tuple[str, str, str]:
    """A vector store of two files with different attributes: its id, green's, black's."""
    store = await client.vector_stores.create(name="Teas")
    ids = []
    for name, text, colour in (("green.md", GREEN, "green"), ("black.md", BLACK, "black")):
        attached = await client.vector_stores.files.upload_and_poll(
            vector_store_id=store.id,
            file=(name, io.BytesIO(text.encode())),
            attributes={"colour": colour, "year": 2024 if colour == "green" else 2020},
        )
        assert attached.status == "completed", attached.last_error
        ids.append(attached.id)
    return store.id, ids[0], ids[1]


async def test_a_vector_store_is_searched_in_openais_shape(alice: openai.AsyncOpenAI) -> None:
    store, green, black = await tea_store(alice)
    page = await alice.vector_stores.search(store, query="brew tea minutes")
    assert page.search_query == ["brew tea minutes"]
    assert {r.file_id for r in page.data} == {green, black}
    assert {r.filename for r in page.data} == {"green.md", "black.md"}
    scores = [r.score for r in page.data]
    assert scores == sorted(scores, reverse=True) and all(0 <= s <= 1 for s in scores)
    assert scores[0] == 1.0  # lexical retrieval: relative to the best (domain/relevance.py)
    first = page.data[0]
    assert first.content[0].type == "text" and "Brew" in first.content[0].text
    assert first.attributes == {
        "colour": "green" if first.file_id == green else "black",
        "year": 2024 if first.file_id == green else 2020,
    }

    only = await alice.vector_stores.search(
        store, query="brew tea", filters={"type": "eq", "key": "colour", "value": "black"}
    )
    assert [r.file_id for r in only.data] == [black]
    newer = await alice.vector_stores.search(
        store, query="brew tea", filters={"type": "gte", "key": "year", "value": 2021}
    )
    assert [r.file_id for r in newer.data] == [green]
    one = await alice.vector_stores.search(store, query="brew tea", max_num_results=1)
    assert len(one.data) == 1
    # The threshold is on the same scale as the scores reported.
    strict = await alice.vector_stores.search(
        store, query="green degrees gently", ranking_options={"score_threshold": 0.99}
    )
    assert strict.data and all(r.score >= 0.99 for r in strict.data)
    assert len(strict.data) < len(page.data)
    both = await alice.vector_stores.search(store, query=["green gently", "black long"])
    assert both.search_query == ["green gently", "black long"]
    assert {r.file_id for r in both.data} == {green, black}
    nothing = await alice.vector_stores.search(store, query="coffee")
    assert nothing.data == []


async def test_file_search_answers_from_the_matching_file_and_cites_it(
    keyed: Stack, alice: openai.AsyncOpenAI
) -> None:
    store, green, black = await tea_store(alice)
    tool: Any = {
        "type": "file_search",
        "vector_store_ids": [store],
        "filters": {"type": "eq", "key": "colour", "value": "black"},
    }
    response = await alice.responses.create(
        input=QUESTION, tools=[tool], include=["file_search_call.results"]
    )
    assert response.status == "completed"
    call, message = response.output
    assert call.type == "file_search_call" and call.status == "completed"
    assert call.id.startswith("fs_") and call.queries == [QUESTION]
    assert call.results and {r.file_id for r in call.results} == {black}
    assert call.results[0].filename == "black.md" and "Black tea" in (call.results[0].text or "")
    assert call.results[0].attributes == {"colour": "black", "year": 2020}
    assert 0 < (call.results[0].score or 0) <= 1
    assert message.type == "message"
    annotations = message.content[0].annotations  # type: ignore[union-attr]
    assert annotations and {a.type for a in annotations} == {"file_citation"}
    assert {a.file_id for a in annotations} == {black}  # type: ignore[union-attr]
    assert green not in response.model_dump_json()  # not searched, so never cited
    assert annotations[0].filename == "black.md"  # type: ignore[union-attr]
    assert response.output_text[annotations[0].index :].startswith("[1]")  # type: ignore[union-attr]
    assert response.tools[0].type == "file_search" and response.tool_choice == "auto"
    # Read again, it is the same; without `include`, no results.
    again = await alice.responses.retrieve(response.id)
    assert again.output[0].model_dump() == call.model_dump()
    bare = await alice.responses.create(input=QUESTION, tools=[tool])
    assert bare.output[0].type == "file_search_call" and bare.output[0].results is None
    # Named by tool_choice too; "none" leaves the tool unused.
    named = await alice.responses.create(
        input=QUESTION, tools=[tool], tool_choice={"type": "file_search"}
    )
    assert named.output[0].type == "file_search_call"
    unused = await alice.responses.create(input=QUESTION, tools=[tool], tool_choice="none")
    assert [item.type for item in unused.output] == ["message"]


async def test_file_search_streams_openais_events_and_resumes_exactly(
    keyed: Stack, alice: openai.AsyncOpenAI
) -> None:
    store, green, _ = await tea_store(alice)
    tool: Any = {
        "type": "file_search",
        "vector_store_ids": [store],
        "filters": {"type": "eq", "key": "colour", "value": "green"},
        "max_num_results": 3,
    }
    stream = await alice.responses.create(
        input=QUESTION, tools=[tool], include=["file_search_call.results"], stream=True
    )
    events = [event async for event in stream]
    kinds = [e.type for e in events]
    searched = [
        "response.output_item.added",
        "response.file_search_call.in_progress",
        "response.file_search_call.searching",
        "response.file_search_call.completed",
        "response.output_item.done",
        "response.output_item.added",
    ]
    start = kinds.index("response.output_item.added")
    assert kinds[start : start + len(searched)] == searched
    assert events[start].item.type == "file_search_call"  # type: ignore[union-attr]
    done_call = events[start + 4].item  # type: ignore[union-attr]
    assert {r.file_id for r in done_call.results} == {green}
    added = [e for e in events if e.type == "response.output_text.annotation.added"]
    assert added and {e.annotation.file_id for e in added} == {green}  # type: ignore[union-attr,index]
    assert {e.output_index for e in added} == {1}  # type: ignore[union-attr]
    final = events[-1].response  # type: ignore[union-attr]
    assert final.output[0].type == "file_search_call" and final.output[1].type == "message"
    # The SDK's stream helper, which checks the events' order and identities, is content.
    async with alice.responses.stream(model="any", input=QUESTION, tools=[tool]) as helper:
        async for _ in helper:
            pass
        helped = await helper.get_final_response()
    assert helped.output[1].content[0].annotations[0].file_id == green  # type: ignore[union-attr]
    for cut in range(0, len(events) - 1, 3):
        after = events[cut].sequence_number
        resumed = [
            e.model_dump()
            async for e in await alice.responses.retrieve(
                final.id, stream=True, starting_after=after
            )
        ]
        assert resumed == [e.model_dump() for e in events[cut + 1 :]], cut


async def test_another_keys_store_is_not_found_and_bad_tools_are_400s(
    keyed: Stack, alice: openai.AsyncOpenAI
) -> None:
    async with sdk(keyed, BOB) as bob:
        his = await bob.vector_stores.create(name="bob's")
        with pytest.raises(openai.NotFoundError):
            await bob.vector_stores.search("vs_" + "0" * 24, query="tea")
    with pytest.raises(openai.NotFoundError) as theirs:
        await alice.responses.create(
            input=QUESTION, tools=[{"type": "file_search", "vector_store_ids": [his.id]}]
        )
    assert theirs.value.code == "vector_store_not_found"
    with pytest.raises(openai.NotFoundError):
        await alice.vector_stores.search(his.id, query="tea")
    mine = await alice.vector_stores.create(name="mine")
    bad: list[Any] = [
        {"type": "file_search", "vector_store_ids": []},
        {"type": "file_search"},
        {"type": "file_search", "vector_store_ids": [mine.id], "max_num_results": 51},
        {"type": "file_search", "vector_store_ids": [mine.id], "filters": {"type": "eq"}},
        {
            "type": "file_search",
            "vector_store_ids": [mine.id],
            "ranking_options": {"score_threshold": 2},
        },
        {"type": "file_search", "vector_store_ids": [mine.id], "surprise": 1},
    ]
    for tool in bad:
        with pytest.raises(openai.BadRequestError) as refused:
            await alice.responses.create(input=QUESTION, tools=[tool])
        assert refused.value.param and refused.value.param.startswith("tools[0]"), tool
    with pytest.raises(openai.BadRequestError):
        await alice.chat.completions.create(
            model="any",
            messages=[{"role": "user", "content": QUESTION}],
            tools=[{"type": "file_search", "vector_store_ids": [mine.id]}],  # type: ignore[list-item]
        )
    with pytest.raises(openai.UnprocessableEntityError):
        await alice.vector_stores.search(
            mine.id,
            query="tea",
            filters={"type": "eq", "key": "colour"},  # type: ignore[typeddict-item]
        )


@pytest.mark.parametrize(("lexical_weight", "dense_weight"), [(1.0, 1.0), (3.0, 1.0)])
async def test_hybrid_relevance_is_the_score_over_the_best_fused_score(
    tmp_path: Path, lexical_weight: float, dense_weight: float
) -> None:
    """A chunk ranked first by both lists scores the fusion's best: relevance 1; the others
    less, in the same order, whatever the weights."""
    settings = Settings(
        _env_file=None,
        data_dir=tmp_path,
        qdrant_url=None,
        rrf_lexical_weight=lexical_weight,
        rrf_dense_weight=dense_weight,
    )
    store = await open_store(settings)
    try:
        retriever = await Retriever.open(store, settings, embedder=StaticEmbedder.load())
        for document_id, title, text in (("green", "Green tea", GREEN), ("black", "Black", BLACK)):
            await retriever.index(document_id, title, None, text)
        await retriever.index("car", "Car", None, "Change the engine oil every year.")
        found = await retriever.search("black tea brew degrees four minutes", 3)
        assert found[0].document_id == "black"
        assert found[0].score == pytest.approx(retriever.best_score)
        scaled = with_relevance(found, retriever.best_score)
        assert scaled[0].relevance == pytest.approx(1.0)
        relevances = [source.relevance or 0.0 for source in scaled]
        assert relevances == sorted(relevances, reverse=True) and relevances[-1] < 1
        assert [s.n for s in at_least(scaled, 0.999)] == [1]
    finally:
        await store.close()


async def test_file_search_over_two_stores_merges_their_sources(alice: openai.AsyncOpenAI) -> None:
    first, green, _ = await tea_store(alice)
    other = await alice.vector_stores.create(name="Herbal")
    mint = await alice.vector_stores.files.upload_and_poll(
        vector_store_id=other.id,
        file=("mint.md", io.BytesIO(b"# Mint tea\n\nBrew mint tea for five minutes.")),
        attributes={"colour": "green"},
    )
    tool: Any = {
        "type": "file_search",
        "vector_store_ids": [first, other.id],
        "filters": {"type": "eq", "key": "colour", "value": "green"},
    }
    response = await alice.responses.create(
        input=QUESTION, tools=[tool], include=["file_search_call.results"]
    )
    results = response.output[0].results  # type: ignore[union-attr]
    assert results and {r.file_id for r in results} == {green, mint.id}
    scores = [r.score for r in results]
    assert scores == sorted(scores, reverse=True)


async def test_chat_completions_cite_a_vector_stores_files(
    keyed: Stack, alice: openai.AsyncOpenAI
) -> None:
    store, _, black = await tea_store(alice)
    whole = await alice.chat.completions.create(
        model="any",
        messages=[{"role": "user", "content": "How long does black tea brew?"}],
        extra_body={"collection": store},
    )
    cited = whole.choices[0].message.annotations
    assert cited and cited[0].type == "url_citation"
    assert cited[0].url_citation.url.endswith(f"/v1/files/{black}/content")
    assert cited[0].url_citation.title == "black.md"
    content = await alice.files.content(black)  # the address cited reads the file
    assert content.read() == BLACK.encode()
