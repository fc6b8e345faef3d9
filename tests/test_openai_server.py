"""The OpenAI test server, exercised through the real ``openai`` SDK as the service uses it."""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import openai
import pytest
from openai import AsyncOpenAI
from openai.types.chat import ChatCompletionMessageParam

from tests.support.openai_server import (
    Fault,
    OpenAIApp,
    ServerConfig,
    expected_answer,
    serve_openai,
)

REPO = Path(__file__).resolve().parents[1]
QUESTION: list[ChatCompletionMessageParam] = [
    {"role": "system", "content": "Answer from the sources. [1] Valkey keeps the queue."},
    {"role": "user", "content": "Where is the queue kept?"},
]


@pytest.fixture
async def server() -> AsyncIterator[OpenAIApp]:
    async with serve_openai(ServerConfig(tokens=12, tokens_per_second=400)) as running:
        yield running


@pytest.fixture
async def client(server: OpenAIApp) -> AsyncIterator[AsyncOpenAI]:
    async with AsyncOpenAI(base_url=server.base_url, api_key="test", max_retries=0) as sdk:
        yield sdk


async def eventually(condition: Callable[[], bool]) -> None:
    """Wait (up to 5 s) for a condition that another task makes true."""
    async with asyncio.timeout(5):
        while not condition():  # noqa: ASYNC110 - the condition lives in the server's stats
            await asyncio.sleep(0.01)


def test_expected_answer_cites_a_source() -> None:
    assert expected_answer(5) == "Based on [1], word3 word4"
    assert expected_answer(2) == "Based on"
    assert expected_answer(0) == ""


async def test_stream_reassembles_the_expected_answer(
    server: OpenAIApp, client: AsyncOpenAI
) -> None:
    stream = await client.chat.completions.create(
        model="m", messages=QUESTION, stream=True, stream_options={"include_usage": True}
    )
    text, finish, usage, roles = [], None, None, []
    async for chunk in stream:
        assert chunk.object == "chat.completion.chunk"
        assert chunk.id.startswith("chatcmpl-")
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            roles += [choice.delta.role] if choice.delta.role else []
            text.append(choice.delta.content or "")
            finish = choice.finish_reason or finish
    assert "".join(text) == expected_answer(12)
    assert (finish, roles) == ("stop", ["assistant"])
    assert usage is not None and usage.completion_tokens == 12
    assert server.stats.streamed_requests == 1
    assert server.stats.last_chat_request is not None
    assert server.stats.last_chat_request["messages"] == QUESTION


async def test_streaming_response_read_line_by_line(client: AsyncOpenAI) -> None:
    async with client.chat.completions.with_streaming_response.create(
        model="m", messages=QUESTION, stream=True, extra_headers={"x-test-tokens": "7"}
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line async for line in response.iter_lines()]
    events = [line.removeprefix("data: ") for line in lines if line]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(event) for event in events[:-1]]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert text == expected_answer(7)
    assert chunks[-1]["choices"][0] == {
        "index": 0,
        "delta": {},
        "logprobs": None,
        "finish_reason": "stop",
    }
    assert "usage" not in chunks[-1]  # only when stream_options.include_usage asks for it


async def test_ttft_and_token_rate_are_honoured(server: OpenAIApp, client: AsyncOpenAI) -> None:
    server.config.ttft = 0.3  # changed live: the running server reads it per request
    start = time.perf_counter()
    stream = await client.chat.completions.create(model="m", messages=QUESTION, stream=True)
    first_token_at = None
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content and first_token_at is None:
            first_token_at = time.perf_counter() - start
    total = time.perf_counter() - start
    assert first_token_at is not None
    assert 0.3 <= first_token_at < 1.5
    # 12 tokens at 400/s: the last one is due 11/400 s after the first
    assert first_token_at + 11 / 400 - 0.01 <= total < 2.5


async def test_header_overrides_beat_the_config(client: AsyncOpenAI) -> None:
    start = time.perf_counter()
    reply = await client.chat.completions.create(
        model="m",
        messages=QUESTION,
        extra_headers={"x-test-ttft": "0.2", "x-test-tokens": "20", "x-test-tps": "0"},
    )
    assert time.perf_counter() - start >= 0.2
    assert reply.choices[0].message.content == expected_answer(20)


async def test_non_streaming_completion(server: OpenAIApp, client: AsyncOpenAI) -> None:
    reply = await client.chat.completions.create(model="gpt-test", messages=QUESTION)
    assert reply.object == "chat.completion"
    assert reply.model == "gpt-test"
    assert reply.choices[0].message.role == "assistant"
    assert reply.choices[0].message.content == expected_answer(12)
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage is not None and reply.usage.completion_tokens == 12
    assert server.stats.chat_requests == 1 and server.stats.streamed_requests == 0


async def test_embeddings_are_deterministic_unit_vectors(
    server: OpenAIApp, client: AsyncOpenAI
) -> None:
    texts = ["the queue lives in Valkey", "Valkey holds the queue", "bananas are yellow"]
    first = await client.embeddings.create(model="e", input=texts)  # SDK asks for base64
    again = await client.embeddings.create(model="e", input=texts, encoding_format="float")
    single = await client.embeddings.create(model="e", input=texts[0])
    assert [d.index for d in first.data] == [0, 1, 2]
    vectors = [d.embedding for d in first.data]
    assert all(len(v) == 64 for v in vectors)
    assert all(math.isclose(math.hypot(*v), 1.0, rel_tol=1e-5) for v in vectors)
    for a, b in zip(vectors, [d.embedding for d in again.data], strict=True):
        assert a == pytest.approx(b, abs=1e-6)  # base64 is float32
    assert single.data[0].embedding == pytest.approx(vectors[0], abs=1e-6)

    def cosine(a: list[float], b: list[float]) -> float:
        return sum(x * y for x, y in zip(a, b, strict=True))

    assert cosine(vectors[0], vectors[1]) > cosine(vectors[0], vectors[2]) + 0.3
    assert server.stats.embedded_inputs == 7


async def test_models_lists_one_model(client: AsyncOpenAI) -> None:
    models = [model.id async for model in client.models.list()]
    assert models == ["test-model"]


async def test_errors_surface_as_sdk_exceptions(server: OpenAIApp, client: AsyncOpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as missing:
        await client.post("/nowhere", cast_to=object, body={})
    assert missing.value.code == "not_found"
    with pytest.raises(openai.BadRequestError) as broken:
        await client.post("/chat/completions", cast_to=object, content=b"{not json")
    assert broken.value.code == "invalid_json"
    assert isinstance(broken.value.body, dict) and broken.value.body["type"]
    with pytest.raises(openai.BadRequestError) as malformed:
        await client.chat.completions.create(
            model="m", messages=QUESTION, extra_headers={"x-test-tokens": "many"}
        )
    assert malformed.value.code == "bad_header"
    with pytest.raises(openai.BadRequestError):
        await client.post("/chat/completions", cast_to=object, body=["not", "an", "object"])


async def test_client_that_leaves_frees_the_server(server: OpenAIApp) -> None:
    async with httpx.AsyncClient(base_url=server.base_url) as http:
        request = http.post(
            "/chat/completions",
            json={"model": "m", "messages": QUESTION, "stream": True},
            headers={"x-test-ttft": "30"},
        )
        task = asyncio.ensure_future(request)
        await eventually(lambda: server.stats.active_streams == 1)
        task.cancel()
    await eventually(lambda: server.stats.active_streams == 0)
    assert (server.stats.active_streams, server.stats.disconnects) == (0, 1)


def test_cli_prints_ready_serves_and_stops_on_sigterm() -> None:
    command = [sys.executable, "-m", "tests.support.openai_server", "--port", "0", "--tokens", "5"]
    with subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, text=True) as process:
        assert process.stdout is not None
        ready = process.stdout.readline().split()
        assert ready[0] == "READY" and ready[1].startswith("http://127.0.0.1:")
        reply = httpx.post(
            f"{ready[1]}/chat/completions", json={"model": "m", "messages": QUESTION}
        )
        assert reply.json()["choices"][0]["message"]["content"] == expected_answer(5)
        stats = httpx.get(ready[1].removesuffix("/v1") + "/_stats").json()
        assert stats["chat_requests"] == 1 and stats["cpu_seconds"] > 0
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0


# Faults: the ways an LLM server (or the network before it) lets a client down.


async def test_429_says_when_to_retry_in_openais_shape(
    server: OpenAIApp, client: AsyncOpenAI
) -> None:
    with pytest.raises(openai.RateLimitError) as limited:
        await client.chat.completions.create(
            model="m",
            messages=QUESTION,
            stream=True,
            extra_headers={"x-test-fault": "429", "x-test-retry-after": "7"},
        )
    assert limited.value.status_code == 429
    assert limited.value.response.headers["retry-after"] == "7"
    assert limited.value.code == "rate_limit_exceeded"
    assert isinstance(limited.value.body, dict) and limited.value.body["type"] == "requests"
    assert server.stats.faults == {"429": 1}
    assert [(c.fault, c.outcome) for c in server.stats.calls] == [("429", "error")]


@pytest.mark.parametrize(
    ("kind", "error", "code"),
    [
        ("500", openai.InternalServerError, None),
        ("400", openai.BadRequestError, "context_length_exceeded"),
        ("401", openai.AuthenticationError, "invalid_api_key"),
    ],
)
async def test_error_faults_raise_the_sdks_exception(
    server: OpenAIApp, client: AsyncOpenAI, kind: str, error: type[Exception], code: str | None
) -> None:
    with pytest.raises(error) as failed:
        await client.chat.completions.create(
            model="m", messages=QUESTION, stream=True, extra_headers={"x-test-fault": kind}
        )
    assert isinstance(failed.value, openai.APIStatusError)
    assert failed.value.status_code == int(kind) and failed.value.code == code
    assert failed.value.message  # a message in OpenAI's shape, that the SDK found
    assert server.stats.faults == {kind: 1} and server.stats.errors == 1


async def test_scripted_faults_fail_the_next_requests_then_it_behaves(
    server: OpenAIApp, client: AsyncOpenAI
) -> None:
    server.fail_next("429", retry_after=0.4)
    server.fail_next("500")
    # The SDK's own retries see both, honour the Retry-After, and then get the answer.
    retrying = client.with_options(max_retries=2)
    started = time.monotonic()
    stream = await retrying.chat.completions.create(model="m", messages=QUESTION, stream=True)
    text = [chunk.choices[0].delta.content or "" async for chunk in stream if chunk.choices]
    assert "".join(text) == expected_answer(12)
    calls = server.stats.calls
    assert [(c.fault, c.outcome) for c in calls] == [
        ("429", "error"),
        ("500", "error"),
        (None, "complete"),
    ]
    assert calls[1].started - calls[0].started >= 0.4  # the SDK waited as it was told
    assert time.monotonic() - started >= 0.4
    assert server.stats.chat_requests == 3 and server.stats.completed_streams == 1
    assert server.stats.faults_served == 2 and server.config.faults == []


async def test_a_fault_for_every_request_and_scripting_from_another_process(
    server: OpenAIApp, client: AsyncOpenAI
) -> None:
    server.config.fault = Fault("500")
    for _ in range(2):
        with pytest.raises(openai.InternalServerError):
            await client.chat.completions.create(model="m", messages=QUESTION)
    async with httpx.AsyncClient(base_url=server.base_url.removesuffix("/v1")) as http:
        scripted = await http.post("/_faults", json={"always": None, "kind": "401", "count": 2})
        assert scripted.json() == {"queued": ["401", "401"], "always": None}
        bad = await http.post("/_faults", json={"kind": "teapot"})
        assert bad.status_code == 400 and "unknown fault" in bad.json()["error"]["message"]
        for _ in range(2):
            with pytest.raises(openai.AuthenticationError):
                await client.chat.completions.create(model="m", messages=QUESTION)
        reply = await client.chat.completions.create(model="m", messages=QUESTION)
        assert reply.choices[0].message.content == expected_answer(12)
        stats = (await http.get("/_stats")).json()
    assert stats["faults"] == {"500": 2, "401": 2} and stats["chat_requests"] == 5
    assert [call["outcome"] for call in stats["calls"]] == ["error"] * 4 + ["complete"]


async def test_hang_sends_headers_and_the_role_then_nothing(
    server: OpenAIApp, client: AsyncOpenAI
) -> None:
    started = time.monotonic()
    stream = await client.chat.completions.create(
        model="m", messages=QUESTION, stream=True, extra_headers={"x-test-fault": "hang"}
    )
    chunks = []
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.6):
            async for chunk in stream:
                chunks.append(chunk)
    assert [c.choices[0].delta.role for c in chunks] == ["assistant"]  # and no content
    assert chunks[0].choices[0].delta.content == ""
    await stream.close()
    await eventually(lambda: server.stats.active_streams == 0)  # the hang ends with the client
    assert server.stats.calls[0].outcome == "disconnected"
    assert time.monotonic() - started < 3


async def test_trickle_paces_tokens_by_the_interval(server: OpenAIApp, client: AsyncOpenAI) -> None:
    stream = await client.chat.completions.create(
        model="m",
        messages=QUESTION,
        stream=True,
        extra_headers={"x-test-fault": "trickle", "x-test-trickle": "0.25", "x-test-tokens": "3"},
    )
    arrivals, text = [], []
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            arrivals.append(time.monotonic())
            text.append(chunk.choices[0].delta.content)
    assert "".join(text) == expected_answer(3)
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    assert len(gaps) == 2 and all(gap >= 0.2 for gap in gaps), gaps


async def _raw_stream(server: OpenAIApp, fault: str, after: int) -> tuple[list[bytes], str]:
    """The lines of one streamed answer read as the service reads them, and how it ended."""
    lines: list[bytes] = []
    async with (
        httpx.AsyncClient(base_url=server.base_url) as http,
        http.stream(
            "POST",
            "/chat/completions",
            json={"model": "m", "messages": QUESTION, "stream": True},
            headers={"x-test-fault": fault, "x-test-fault-after": str(after)},
        ) as response,
    ):
        try:
            async for line in response.aiter_lines():
                lines.append(line.encode())
        except httpx.TransportError as error:
            return lines, type(error).__name__
    return lines, "ended"


def _text_of(lines: list[bytes]) -> str:
    chunks = [json.loads(line[6:]) for line in lines if line.startswith(b"data: {")]
    return "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])


async def test_drop_cuts_the_connection_after_k_tokens(server: OpenAIApp) -> None:
    lines, ended = await _raw_stream(server, "drop", 3)
    assert ended == "RemoteProtocolError"  # the chunked body never ended
    assert _text_of(lines) == expected_answer(3)
    assert b"data: [DONE]" not in lines
    assert server.stats.calls[0].outcome == "dropped" and server.stats.completed_streams == 0


async def test_truncate_ends_cleanly_but_without_done(server: OpenAIApp) -> None:
    lines, ended = await _raw_stream(server, "truncate", 4)
    assert ended == "ended"
    assert _text_of(lines) == expected_answer(4)
    assert b"data: [DONE]" not in lines and b'"finish_reason":"stop"' not in b"".join(lines)
    assert server.stats.calls[0].outcome == "truncated"


async def test_malformed_sends_one_line_that_is_not_json(
    server: OpenAIApp, client: AsyncOpenAI
) -> None:
    lines, ended = await _raw_stream(server, "malformed", 2)
    assert ended == "ended" and lines[-2:] == [b"data: [DONE]", b""]
    data = [line[6:] for line in lines if line.startswith(b"data: {")]
    broken = [i for i, d in enumerate(data) if not _parses(d)]
    assert broken == [3]  # the role chunk, two tokens, then the garbled line
    # The real SDK chokes on it, as it should.
    stream = await client.chat.completions.create(
        model="m", messages=QUESTION, stream=True, extra_headers={"x-test-fault": "malformed"}
    )
    with pytest.raises(json.JSONDecodeError):
        async for _ in stream:
            pass


def _parses(data: bytes) -> bool:
    try:
        json.loads(data)
    except ValueError:
        return False
    return True


async def test_a_bad_fault_header_is_a_400(client: AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as bad:
        await client.chat.completions.create(
            model="m", messages=QUESTION, extra_headers={"x-test-fault": "teapot"}
        )
    assert bad.value.code == "bad_header" and "unknown fault" in bad.value.message
