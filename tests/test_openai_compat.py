"""The OpenAI wire format, spoken to by the official `openai` SDK: the Responses API in
background and streaming (dropped half-way and resumed with `starting_after`), cancel, chat
completions streamed and not, the model list, errors in OpenAI's shape, and the same keys as
the native API. Against the real app, worker, Valkey and the test LLM server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from rag_async.local.valkey import EmbeddedValkey
from tests.conftest import SAMPLE_DOCUMENT, Stack, keyed_settings, running_stack
from tests.support.documents import add_document
from tests.support.openai_server import expected_answer

QUESTION = "How long do I brew green tea?"
TEA_URL = "https://tea.example.com/brewing"


def sdk(stack: Stack, key: str = "unused") -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{stack.base_url}/v1", api_key=key, max_retries=0)


async def ingest_from_the_web(stack: Stack) -> None:
    """The sample document, with a web address as its source (a `url_citation`)."""
    accepted = await add_document(stack.client, SAMPLE_DOCUMENT, title="Tea", source=TEA_URL)
    events = [event async for event in stack.client.follow(accepted["job_id"])]
    assert events[-1].type == "done"


@pytest.fixture
async def client(stack: Stack) -> AsyncIterator[openai.AsyncOpenAI]:
    async with sdk(stack) as client:
        yield client


async def completed(client: openai.AsyncOpenAI, response_id: str) -> Any:
    for _ in range(500):
        response = await client.responses.retrieve(response_id)
        if response.status not in ("queued", "in_progress"):
            return response
        await asyncio.sleep(0.02)
    raise AssertionError(f"{response_id} did not end")


async def test_background_response_is_polled_to_its_cited_answer(
    stack: Stack, client: openai.AsyncOpenAI
) -> None:
    await ingest_from_the_web(stack)
    created = await client.responses.create(model="any", input=QUESTION, background=True)
    assert created.id.startswith("resp_") and created.status in ("queued", "in_progress")

    response = await completed(client, created.id)
    assert response.status == "completed"
    assert response.output_text == expected_answer(12)
    text = response.output[0].content[0]
    citation = text.annotations[0]
    assert citation.type == "url_citation" and citation.url == TEA_URL
    assert citation.title == "Tea"
    assert text.text[citation.start_index : citation.end_index] == "[1]"
    # The same job, natively: a response is a job with OpenAI's prefix.
    job = await stack.client.job(created.id.removeprefix("resp_"))
    assert job["answer"] == response.output_text


async def test_stream_dropped_half_way_resumes_with_the_rest_exactly_once(
    stack: Stack, client: openai.AsyncOpenAI, llm: Any
) -> None:
    await ingest_from_the_web(stack)
    llm.config.tokens, llm.config.tokens_per_second = 40, 50  # many batches of text
    first: list[Any] = []
    stream = await client.responses.create(input=QUESTION, stream=True)
    async for event in stream:
        first.append(event)
        if sum(e.type == "response.output_text.delta" for e in first) == 2:
            break  # the client drops the connection mid-answer
    await stream.close()
    assert first[0].type == "response.created" and first[0].sequence_number == 0
    response_id = first[0].response.id
    assert first[-1].type == "response.output_text.delta"

    rest = [
        event
        async for event in await client.responses.retrieve(
            response_id, stream=True, starting_after=first[-1].sequence_number
        )
    ]
    everything = first + rest
    numbers = [event.sequence_number for event in everything]
    assert numbers == sorted(set(numbers)), "every event once, in order"
    deltas = "".join(e.delta for e in everything if e.type == "response.output_text.delta")
    assert deltas == expected_answer(40)
    kinds = [event.type for event in rest]
    assert kinds[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert "response.in_progress" in [e.type for e in first]
    done = rest[-1].response
    assert done.status == "completed" and done.output_text == expected_answer(40)
    assert done.output[0].content[0].annotations[0].url == TEA_URL

    # Resuming after the very last event gives nothing more, at once.
    last = numbers[-1]
    tail = [
        e
        async for e in await client.responses.retrieve(
            response_id, stream=True, starting_after=last
        )
    ]
    assert tail == []
    # And from the middle of the end: only what follows.
    after_text_done = rest[-4].sequence_number
    tail = [
        e.type
        async for e in await client.responses.retrieve(
            response_id, stream=True, starting_after=after_text_done
        )
    ]
    assert tail == kinds[-3:]


async def test_cancel_a_running_response(
    stack: Stack, client: openai.AsyncOpenAI, llm: Any
) -> None:
    llm.config.ttft = 20.0  # the answer's first word is far away
    created = await client.responses.create(input="anything about tea?", background=True)
    for _ in range(500):
        if (await client.responses.retrieve(created.id)).status == "in_progress":
            break
        await asyncio.sleep(0.02)
    cancelled = await client.responses.cancel(created.id)
    assert cancelled.status == "cancelled"
    assert (await client.responses.retrieve(created.id)).status == "cancelled"
    events = [e.type async for e in await client.responses.retrieve(created.id, stream=True)]
    assert events[0] == "response.created" and events[-1] == "response.cancelled"
    with pytest.raises(openai.NotFoundError):
        await client.responses.cancel("resp_" + "0" * 32)


async def test_chat_completions_stream_and_whole(stack: Stack, client: openai.AsyncOpenAI) -> None:
    await ingest_from_the_web(stack)
    messages: list[Any] = [{"role": "user", "content": QUESTION}]
    raw = await client.chat.completions.with_raw_response.create(
        model="any", messages=messages, stream=True
    )
    job_id = raw.headers["x-rag-job-id"]
    chunks = [chunk async for chunk in raw.parse()]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices[0].finish_reason == "stop"
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert streamed == expected_answer(12)
    assert all(c.id == f"chatcmpl-{job_id}" for c in chunks)
    # The job behind it, natively: a dropped client could have resumed its events there.
    assert (await stack.client.job(job_id))["answer"] == streamed

    whole = await client.chat.completions.create(model="any", messages=messages)
    assert whole.object == "chat.completion" and whole.choices[0].finish_reason == "stop"
    assert whole.choices[0].message.content == expected_answer(12)
    assert whole.choices[0].message.annotations[0].url_citation.url == TEA_URL


async def test_models_list_the_configured_model(stack: Stack, client: openai.AsyncOpenAI) -> None:
    listed = [model.id async for model in client.models.list()]
    assert listed == [stack.settings.llm_model]
    assert (await client.models.retrieve(stack.settings.llm_model)).id == listed[0]
    with pytest.raises(openai.NotFoundError):
        await client.models.retrieve("no-such-model")


async def test_bad_input_gets_openai_errors_never_a_traceback(
    stack: Stack, client: openai.AsyncOpenAI
) -> None:
    with pytest.raises(openai.UnprocessableEntityError) as empty:
        await client.responses.create(input="   ", background=True)
    assert empty.value.code == "empty_query" and "empty" in empty.value.message
    assert empty.value.type == "invalid_request_error"
    with pytest.raises(openai.UnprocessableEntityError) as too_long:
        await client.responses.create(input="tea " * 2000, background=True)
    assert too_long.value.code == "query_too_long"
    with pytest.raises(openai.UnprocessableEntityError) as last:
        await client.chat.completions.create(
            model="any", messages=[{"role": "assistant", "content": "hello"}]
        )
    assert last.value.code == "no_question"
    with pytest.raises(openai.NotFoundError) as missing:
        await client.responses.retrieve("resp_nothing")
    assert missing.value.type == "not_found_error"

    async with httpx.AsyncClient(base_url=stack.base_url) as http:
        for body in [
            {"input": 42},
            {"input": []},
            {"input": "tea?", "stream": "yes"},
            {"input": [{"role": "user", "content": [{"text": 5}]}]},
            {},
        ]:
            response = await http.post("/v1/responses", json=body)
            assert response.status_code == 422, (body, response.text)
            error = response.json()["error"]
            assert error["type"] == "invalid_request_error" and error["message"], error
        bad_resume = await http.get("/v1/responses/resp_x?stream=true&starting_after=-1")
        assert bad_resume.status_code == 422
        # Fields OpenAI clients send that this service has no use for are ignored.
        ok = await http.post(
            "/v1/responses",
            json={"input": "tea?", "background": True, "temperature": 0.2, "tools": []},
        )
        assert ok.status_code == 200 and ok.json()["status"] in ("queued", "in_progress")


ALICE, BOB = "alice-secret-0123456789", "bob-secret-0123456789"


async def test_same_keys_and_ownership_as_the_native_api(
    valkey: EmbeddedValkey, tmp_path: Path, llm: Any
) -> None:
    settings = keyed_settings(valkey, tmp_path, llm, users={"alice": ALICE, "bob": BOB}, admins={})
    async with running_stack(settings) as stack:
        async with sdk(stack, "wrong") as nobody:
            with pytest.raises(openai.AuthenticationError) as refused:
                await nobody.models.list()
            assert refused.value.type == "authentication_error"
        async with httpx.AsyncClient(base_url=stack.base_url) as http:
            keyless = await http.post("/v1/responses", json={"input": "tea?"})
            assert keyless.status_code == 401 and keyless.json()["error"]["message"]
        async with sdk(stack, ALICE) as alice, sdk(stack, BOB) as bob:
            created = await alice.responses.create(input="tea?", background=True)
            with pytest.raises(openai.NotFoundError):
                await bob.responses.retrieve(created.id)
            with pytest.raises(openai.NotFoundError):
                await bob.responses.cancel(created.id)
            with pytest.raises(openai.NotFoundError):
                await bob.responses.create(input="more?", previous_response_id=created.id)
            assert (await completed(alice, created.id)).status == "completed"
