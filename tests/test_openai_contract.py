"""What OpenAI clients rely on beyond the core flows, spoken to by the official `openai` SDK:
earlier answers referred to by `item_reference`, citations in streams, `usage`, the request's
parameters honoured, echoed or refused with a 400 naming them, an exact resume, and the
routes to delete a response and list its input. Against the real app, worker, Valkey and the
test LLM server (or the offline answerer)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from pydantic import BaseModel

from rag_async.local.valkey import EmbeddedValkey
from tests.conftest import SAMPLE_DOCUMENT, Stack, keyed_settings, make_settings, running_stack
from tests.support.documents import add_document
from tests.support.openai_server import expected_answer
from tests.test_openai_compat import QUESTION, TEA_URL, completed, ingest_from_the_web, sdk


@pytest.fixture
async def client(stack: Stack) -> Any:
    async with sdk(stack) as client:
        yield client


async def test_item_reference_brings_the_earlier_answer_into_turn_two(
    stack: Stack, client: openai.AsyncOpenAI, llm: Any
) -> None:
    first = await client.responses.create(input=QUESTION)
    assert first.output[0].id.startswith("msg_")
    second = await client.responses.create(
        input=[
            {"role": "user", "content": QUESTION},
            {"type": "item_reference", "id": first.output[0].id},
            {"role": "user", "content": "And black tea?"},
        ]
    )
    assert second.status == "completed"
    sent = llm.stats.last_chat_request["messages"]
    assert {"role": "assistant", "content": first.output_text} in sent
    assert sent[-1]["content"].endswith("Question: And black tea?")
    with pytest.raises(openai.NotFoundError):
        await client.responses.create(
            input=[
                {"type": "item_reference", "id": "msg_" + "0" * 32},
                {"role": "user", "content": "more?"},
            ]
        )


async def test_streamed_citations_and_an_exact_resume(
    stack: Stack, client: openai.AsyncOpenAI
) -> None:
    await ingest_from_the_web(stack)
    events = [event async for event in await client.responses.create(input=QUESTION, stream=True)]
    added = [e for e in events if e.type == "response.output_text.annotation.added"]
    assert len(added) == 1, [e.type for e in events]
    note = added[0]
    cited = note.annotation
    assert cited.type == "url_citation" and cited.url == TEA_URL  # type: ignore[union-attr]
    assert (note.output_index, note.content_index, note.annotation_index) == (0, 0, 0)
    assert note.item_id == events[-1].response.output[0].id
    text = events[-1].response.output_text
    assert text[cited.start_index : cited.end_index] == "[1]"  # type: ignore[union-attr]
    # The SDK's stream helper, which checks the events' order and identities, is content.
    async with client.responses.stream(model="any", input=QUESTION) as helper:
        async for _ in helper:
            pass
        final = await helper.get_final_response()
    assert final.output[0].content[0].annotations[0].url == TEA_URL  # type: ignore[union-attr]
    # A resume from any point sends exactly what the original stream sent after it.
    response_id = events[0].response.id
    for cut in range(len(events) - 1):
        after = events[cut].sequence_number
        resumed = [
            e.model_dump()
            async for e in await client.responses.retrieve(
                response_id, stream=True, starting_after=after
            )
        ]
        assert resumed == [e.model_dump() for e in events[cut + 1 :]], cut


async def test_chat_completions_cite_uploaded_documents(
    stack: Stack, client: openai.AsyncOpenAI
) -> None:
    accepted = await add_document(stack.client, SAMPLE_DOCUMENT, title="Tea")
    assert [e.type async for e in stack.client.follow(accepted["job_id"])][-1] == "done"
    messages: Any = [{"role": "user", "content": QUESTION}]
    whole = await client.chat.completions.create(model="any", messages=messages)
    cited = whole.choices[0].message.annotations
    assert cited and cited[0].type == "url_citation"
    document = f"{stack.base_url}/documents/{accepted['document_id']}"
    assert cited[0].url_citation.url == document and cited[0].url_citation.title == "Tea"
    chunks = [
        c async for c in await client.chat.completions.create(
            model="any", messages=messages, stream=True, stream_options={"include_usage": True}
        )
    ]  # fmt: skip
    finish = next(c for c in chunks if c.choices and c.choices[0].finish_reason)
    assert (finish.choices[0].delta.model_extra or {})["annotations"][0]["url_citation"][
        "url"
    ] == document
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 12


async def test_usage_is_the_llms(stack: Stack, client: openai.AsyncOpenAI) -> None:
    response = await client.responses.create(input=QUESTION)
    usage = response.usage
    assert usage is not None and usage.output_tokens == 12 and usage.input_tokens > 0
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens
    assert (await client.responses.retrieve(response.id)).usage == usage
    events = [e async for e in await client.responses.create(input=QUESTION, stream=True)]
    assert events[-1].type == "response.completed"
    assert events[-1].response.usage is not None
    assert events[-1].response.usage.output_tokens == 12
    chat = await client.chat.completions.create(
        model="any", messages=[{"role": "user", "content": QUESTION}]
    )
    assert chat.usage is not None and chat.usage.completion_tokens == 12


async def test_parameters_that_map_are_honoured_and_echoed(
    stack: Stack, client: openai.AsyncOpenAI, llm: Any
) -> None:
    cut = await client.responses.create(
        input=QUESTION,
        instructions="Answer in French.",
        max_output_tokens=5,
        temperature=0.3,
        metadata={"ticket": "T-42"},
    )
    assert cut.status == "incomplete" and cut.incomplete_details is not None
    assert cut.incomplete_details.reason == "max_output_tokens"
    assert cut.output_text == expected_answer(5)
    sent = llm.stats.last_chat_request
    assert sent["messages"][1] == {"role": "system", "content": "Answer in French."}
    assert (sent["max_tokens"], sent["temperature"]) == (5, 0.3)
    again = await client.responses.retrieve(cut.id)
    for echoed in (cut, again):
        assert echoed.metadata == {"ticket": "T-42"} and echoed.instructions == "Answer in French."
        assert (echoed.max_output_tokens, echoed.temperature, echoed.store) == (5, 0.3, True)
        assert echoed.text is not None and echoed.text.format.type == "text"
    stream = await client.responses.create(input=QUESTION, max_output_tokens=5, stream=True)
    streamed = [e async for e in stream]
    assert streamed[-1].type == "response.incomplete"
    assert streamed[-1].response.incomplete_details.reason == "max_output_tokens"  # type: ignore[union-attr]
    follow = await client.responses.create(input="and?", previous_response_id=cut.id)
    assert follow.previous_response_id == cut.id and follow.background is False
    chat = await client.chat.completions.create(
        model="any",
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": QUESTION},
        ],
        max_completion_tokens=3,
        stop=["END"],
    )
    assert chat.choices[0].finish_reason == "length"
    assert chat.choices[0].message.content == expected_answer(3)
    sent = llm.stats.last_chat_request
    assert (sent["stop"], sent["messages"][1]["content"]) == (["END"], "Be brief.")


async def test_store_false_and_background(stack: Stack, client: openai.AsyncOpenAI) -> None:
    unstored = await client.responses.create(input=QUESTION, store=False)
    assert unstored.status == "completed" and unstored.store is False
    with pytest.raises(openai.NotFoundError):
        await client.responses.retrieve(unstored.id)
    with pytest.raises(openai.BadRequestError) as refused:
        await client.responses.create(input=QUESTION, background=True, store=False)
    assert refused.value.param == "store"
    created = await client.responses.create(input=QUESTION, background=True)
    assert created.background is True
    assert (await completed(client, created.id)).background is True
    stream = await client.responses.retrieve(created.id, stream=True)
    first = [e async for e in stream][0]  # noqa: RUF015 - the stream is read to its end
    assert first.type == "response.created" and first.response.background is True


class Verdict(BaseModel):
    answer: str


async def test_what_cannot_be_honoured_is_refused_naming_it(
    stack: Stack, client: openai.AsyncOpenAI
) -> None:
    with pytest.raises(openai.BadRequestError) as structured:
        await client.responses.parse(input=QUESTION, text_format=Verdict)
    assert structured.value.param == "text.format"
    assert structured.value.code == "unsupported_format"
    with pytest.raises(openai.BadRequestError) as chat_structured:
        await client.chat.completions.parse(
            model="any", messages=[{"role": "user", "content": QUESTION}], response_format=Verdict
        )
    assert chat_structured.value.param == "response_format"
    function = {"type": "function", "name": "f", "parameters": {"type": "object"}}
    with pytest.raises(openai.BadRequestError) as tools:
        await client.responses.create(input=QUESTION, tools=[function])  # type: ignore[list-item]
    assert (tools.value.param, tools.value.code) == ("tools[0]", "unsupported_tool")
    with pytest.raises(openai.BadRequestError) as choices:
        await client.chat.completions.create(
            model="any", messages=[{"role": "user", "content": QUESTION}], n=2
        )
    assert choices.value.param == "n"
    image = {"type": "input_image", "image_url": "https://example.com/a.png", "detail": "auto"}
    with pytest.raises(openai.BadRequestError) as images:
        await client.responses.create(input=[{"role": "user", "content": [image]}])  # type: ignore[list-item]
    assert images.value.param == "input[0].content"
    with pytest.raises(openai.UnprocessableEntityError):
        await client.responses.create(input=QUESTION, metadata={f"k{i}": "v" for i in range(17)})
    # Harmless ones are accepted: nothing a client relies on changes.
    ignored = await client.responses.create(
        input=QUESTION,
        reasoning={"effort": "low"},
        truncation="disabled",
        include=["message.output_text.logprobs"],
        tool_choice="auto",
    )
    assert ignored.status == "completed" and ignored.truncation == "disabled"


async def test_offline_answerer_counts_tokens_and_honours_the_limit(
    valkey: EmbeddedValkey, tmp_path: Path
) -> None:
    async with running_stack(make_settings(valkey, tmp_path)) as stack, sdk(stack) as client:
        accepted = await add_document(stack.client, SAMPLE_DOCUMENT, title="Tea")
        assert [e.type async for e in stack.client.follow(accepted["job_id"])][-1] == "done"
        whole = await client.responses.create(input=QUESTION)
        assert whole.status == "completed" and whole.usage is not None
        assert (
            whole.usage.output_tokens > 5 and whole.usage.input_tokens > whole.usage.output_tokens
        )
        cut = await client.responses.create(input=QUESTION, max_output_tokens=5)
        assert cut.status == "incomplete" and cut.usage is not None
        assert cut.usage.output_tokens <= 5 and whole.output_text.startswith(cut.output_text)


ALICE, BOB = "alice-secret-0123456789", "bob-secret-0123456789"


async def test_delete_and_input_items_under_the_same_keys(
    valkey: EmbeddedValkey, tmp_path: Path, llm: Any
) -> None:
    settings = keyed_settings(valkey, tmp_path, llm, users={"alice": ALICE, "bob": BOB}, admins={})
    async with running_stack(settings) as stack, sdk(stack, ALICE) as alice, sdk(stack, BOB) as bob:
        turns: Any = [
            {"role": "user", "content": "Green tea?"},
            {"role": "assistant", "content": "Eighty degrees."},
            {"role": "user", "content": QUESTION},
        ]
        response = await alice.responses.create(input=turns)
        items = [item async for item in alice.responses.input_items.list(response.id)]
        assert [(i.role, i.content[0].text) for i in items] == [  # type: ignore[union-attr]
            ("user", QUESTION),
            ("assistant", "Eighty degrees."),
            ("user", "Green tea?"),
        ]
        reference: Any = [
            {"type": "item_reference", "id": response.output[0].id},
            {"role": "user", "content": "more?"},
        ]
        for refused in (
            bob.responses.input_items.list(response.id),
            bob.responses.delete(response.id),
            bob.responses.create(input=reference),
        ):
            with pytest.raises(openai.NotFoundError):
                await refused
        await alice.responses.delete(response.id)
        with pytest.raises(openai.NotFoundError):
            await alice.responses.retrieve(response.id)
        async with httpx.AsyncClient(base_url=stack.base_url) as http:
            job = response.id.removeprefix("resp_")
            native = await http.get(f"/jobs/{job}", headers={"Authorization": f"Bearer {ALICE}"})
            assert native.status_code == 404


async def test_conversations_api_over_the_services_conversations(
    valkey: EmbeddedValkey, tmp_path: Path, llm: Any
) -> None:
    settings = keyed_settings(valkey, tmp_path, llm, users={"alice": ALICE, "bob": BOB}, admins={})
    async with running_stack(settings) as stack, sdk(stack, ALICE) as alice, sdk(stack, BOB) as bob:
        seeded: Any = [
            {"type": "message", "role": "user", "content": "Green tea?"},
            {"type": "message", "role": "assistant", "content": "Eighty degrees."},
        ]
        conversation = await alice.conversations.create(metadata={"topic": "tea"}, items=seeded)
        assert conversation.id.startswith("conv_") and conversation.metadata == {"topic": "tea"}
        response = await alice.responses.create(input=QUESTION, conversation=conversation.id)
        sent = llm.stats.last_chat_request["messages"]
        assert {"role": "assistant", "content": "Eighty degrees."} in sent
        items = [i async for i in alice.conversations.items.list(conversation.id, order="asc")]
        assert [i.role for i in items] == ["user", "assistant", "user", "assistant"]  # type: ignore[union-attr]
        assert items[-1].id == response.output[0].id
        item = await alice.conversations.items.retrieve(
            items[-1].id, conversation_id=conversation.id
        )
        assert item.content[0].text == response.output_text  # type: ignore[union-attr]
        updated = await alice.conversations.update(conversation.id, metadata={"topic": "green"})
        assert updated.metadata == {"topic": "green"}
        for refused in (
            bob.conversations.retrieve(conversation.id),
            bob.conversations.items.list(conversation.id),
            bob.conversations.delete(conversation.id),
            bob.responses.create(input="more?", conversation=conversation.id),
        ):
            with pytest.raises(openai.NotFoundError):
                await refused
        with pytest.raises(openai.BadRequestError) as unpaired:
            await alice.conversations.items.create(
                conversation.id, items=[{"type": "message", "role": "user", "content": "lone"}]
            )
        assert unpaired.value.param == "items"
        await alice.conversations.items.delete(items[0].id, conversation_id=conversation.id)
        left = [i async for i in alice.conversations.items.list(conversation.id)]
        assert len(left) == 2
        deleted = await alice.conversations.delete(conversation.id)
        assert deleted.deleted is True
        with pytest.raises(openai.NotFoundError):
            await alice.conversations.retrieve(conversation.id)
