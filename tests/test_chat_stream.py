"""POST /chat asked for `text/event-stream`: the job's event stream on the same request, with
the same story, limits and resume as `GET /jobs/{id}/events`. Against the real app, worker,
Valkey and test LLM."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import orjson
from httpx_sse import aconnect_sse
from redis.asyncio import Redis

from rag_async.client.api import RagClient
from rag_async.config import Settings
from rag_async.local.valkey import EmbeddedValkey
from tests.conftest import Stack, ingest, running_stack
from tests.support.openai_server import expected_answer
from tests.support.tcp_proxy import TcpProxy
from tests.test_auth import ALICE, as_, keyed_settings
from tests.test_quotas import refused

STREAM = {"Accept": "text/event-stream"}


async def _post_and_follow(
    http: httpx.AsyncClient, body: dict[str, Any], **headers: str
) -> tuple[httpx.Response, list[tuple[int, str, Any]]]:
    events = []
    async with aconnect_sse(http, "POST", "/chat", json=body, headers=STREAM | headers) as source:
        async for sse in source.aiter_sse():
            events.append((int(sse.id), sse.event, orjson.loads(sse.data)))
    return source.response, events


async def test_the_post_streams_the_answer_as_the_events_route_does(stack: Stack, llm: Any) -> None:
    await ingest(stack)
    llm.config.tokens, llm.config.tokens_per_second = 30, 100
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=30) as http:
        response, events = await _post_and_follow(http, {"query": "How long do I brew tea?"})
        assert response.status_code == 200
        job_id = response.headers["x-rag-job-id"]
        kinds = [kind for _, kind, _ in events]
        assert [i for i, _, _ in events] == list(range(1, len(events) + 1))
        assert kinds[0] == "status" and kinds[-1] == "done" and "sources" in kinds
        streamed = "".join(data["text"] for _, kind, data in events if kind == "token")
        assert streamed == expected_answer(30) == events[-1][2]["answer"]
        # The same job, readable and replayable as any other.
        async with aconnect_sse(http, "GET", f"/jobs/{job_id}/events") as source:
            replayed = [
                (int(sse.id), sse.event, orjson.loads(sse.data)) async for sse in source.aiter_sse()
            ]
        assert replayed == events
        assert (await http.get(f"/jobs/{job_id}")).json()["status"] == "complete"


async def test_a_client_that_leaves_resumes_where_it_left(stack: Stack, llm: Any) -> None:
    llm.config.tokens, llm.config.tokens_per_second = 30, 50
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=30) as http:
        seen: list[tuple[int, str]] = []
        async with aconnect_sse(http, "POST", "/chat", json={"query": "tea?"}, headers=STREAM) as s:
            job_id = s.response.headers["x-rag-job-id"]
            async for sse in s.aiter_sse():
                seen.append((int(sse.id), sse.event))
                if sse.event == "token":
                    break  # the client goes away mid-answer; the job goes on
        headers = {"Last-Event-ID": str(seen[-1][0])}
        async with aconnect_sse(http, "GET", f"/jobs/{job_id}/events", headers=headers) as s:
            rest = [(int(sse.id), sse.event) async for sse in s.aiter_sse()]
        assert rest[0][0] == seen[-1][0] + 1 and rest[-1][1] == "done"


async def test_the_client_asks_in_one_request_and_resumes_a_cut_stream(
    stack: Stack, llm: Any
) -> None:
    """RagClient.asking (what `rag-async ask` and `chat` use): the POST's own stream, then,
    once the connection is cut mid-answer, the rest from /jobs/{id}/events: every event once."""
    llm.config.tokens, llm.config.tokens_per_second = 30, 50
    host, _, port = stack.base_url.removeprefix("http://").partition(":")
    events = []
    async with (
        TcpProxy(host, int(port)) as proxy,
        RagClient(f"http://{proxy.address}") as client,
        client.asking("How long do I brew tea?") as asked,
    ):
        async for event in asked.events:
            events.append(event)
            if [e.type for e in events].count("token") == 2:
                proxy.drop()
    assert [event.id for event in events] == list(range(1, len(events) + 1))
    assert events[-1].type == "done"
    tokens = "".join(event.data["text"] for event in events if event.type == "token")
    assert tokens == expected_answer(30)
    assert (await stack.client.answer(asked.job_id)).text == tokens


async def test_refusals_are_answered_before_anything_is_queued(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=30) as http:
        empty = await http.post("/chat", json={"query": "  "}, headers=STREAM)
        refused(empty, 422, "empty_query")
        assert empty.headers["content-type"].startswith("application/json")
        unknown = await http.post(
            "/chat", json={"query": "tea?", "conversation_id": "x" * 500}, headers=STREAM
        )
        assert unknown.status_code == 422 and "conversation_id" in unknown.text
        # Without the Accept header, the 202 as before.
        accepted = await http.post("/chat", json={"query": "tea?"})
        assert accepted.status_code == 202 and "job_id" in accepted.json()


async def _job_records(settings: Settings) -> int:
    redis = Redis.from_url(settings.redis_url or "")
    try:
        return len([key async for key in redis.scan_iter(match=f"{settings.key_prefix}job:*")])
    finally:
        await redis.aclose()


async def test_a_streaming_post_counts_against_the_keys_streams(
    valkey: EmbeddedValkey, tmp_path: Path, llm: Any
) -> None:
    llm.config.tokens, llm.config.tokens_per_second = 40, 20  # two seconds of answer
    settings = keyed_settings(valkey, tmp_path, llm, max_streams_per_key=1)
    async with running_stack(settings) as stack, as_(stack, ALICE) as alice:
        async with alice.stream("POST", "/chat", json={"query": "tea?"}, headers=STREAM) as open_:
            assert open_.status_code == 200
            before = await _job_records(settings)
            second = await alice.post("/chat", json={"query": "more tea?"}, headers=STREAM)
            refused(second, 429, "too_many_streams")
            # Refused before it was queued: no job was made for it.
            assert await _job_records(settings) == before
        # The slot came back with the first stream's end.
        async with alice.stream("POST", "/chat", json={"query": "tea?"}, headers=STREAM) as again:
            assert again.status_code == 200
