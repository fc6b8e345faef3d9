"""The /v1 routes under a key's limits, spoken to by the official `openai` SDK: a request refused
for its key's open streams leaves no job behind, and an error another try cannot change tells
the SDK not to retry it. Against the real app, worker, Valkey and the test LLM server."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import openai
import pytest
from redis.asyncio import Redis

from rag_async.config import Settings
from rag_async.local.valkey import EmbeddedValkey
from rag_async.metrics.process import REGISTRY
from rag_async.store.keys import Keys
from tests.conftest import Stack, keyed_settings, running_stack
from tests.test_openai_compat import completed

ALICE = "alice-secret-0123456789"
STREAMS = 2  # the key's stream slots
ASKED = 6  # requests sent at once: more than the slots


def sdk(stack: Stack, *, max_retries: int) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        base_url=f"{stack.base_url}/v1", api_key=ALICE, max_retries=max_retries
    )


async def ask(client: openai.AsyncOpenAI, way: int) -> str | openai.APIStatusError:
    """One question the way number `way` says (a streamed chat completion, a streamed
    response, or a response waited for whole): its answer, or the error it was refused with."""
    question = f"question {way}: how long do I brew green tea?"
    try:
        if way % 3 == 0:
            chunks = await client.chat.completions.create(
                model="any", messages=[{"role": "user", "content": question}], stream=True
            )
            return "".join([c.choices[0].delta.content or "" async for c in chunks])
        if way % 3 == 1:
            events = await client.responses.create(model="any", input=question, stream=True)
            return "".join(
                [e.delta async for e in events if e.type == "response.output_text.delta"]
            )
        return (await client.responses.create(model="any", input=question)).output_text
    except openai.APIStatusError as refused:
        return refused


async def settled(settings: Settings, owner: str) -> None:
    """Returns once the owner has no queued or running job left."""
    unfinished = Keys(settings.key_prefix).unfinished_jobs(owner)
    async with Redis.from_url(settings.redis_url or "") as redis:
        for _ in range(600):
            if not await redis.zcard(unfinished):
                return
            await asyncio.sleep(0.05)
    raise AssertionError(f"{owner}'s jobs did not end")


async def test_a_v1_request_refused_for_its_streams_leaves_no_job_behind(
    valkey: EmbeddedValkey, tmp_path: Path, llm: Any
) -> None:
    settings = keyed_settings(
        valkey, tmp_path, llm, users={"alice": ALICE}, admins={}, max_streams_per_key=STREAMS
    )
    llm.config.ttft = 1.0  # every answer outlives the requests' arrival
    async with running_stack(settings) as stack, sdk(stack, max_retries=0) as alice:
        calls_before = llm.stats.chat_requests
        outcomes = await asyncio.gather(*(ask(alice, way) for way in range(ASKED)))
        answers = [outcome for outcome in outcomes if isinstance(outcome, str)]
        refusals = [outcome for outcome in outcomes if not isinstance(outcome, str)]
        assert len(answers) >= STREAMS and all(answers), outcomes
        assert refusals, outcomes
        for refused in refusals:
            assert isinstance(refused, openai.RateLimitError), refused
            assert refused.code == "too_many_streams", refused
            assert "x-should-retry" not in refused.response.headers  # may pass: the SDK's call
        await settled(settings, "alice")
        # Every call the LLM saw was for an answer someone received.
        assert llm.stats.chat_requests - calls_before == len(answers)


def requests_seen(method: str, route: str) -> float:
    """The requests the API (in this process) has answered on `route`, any status."""
    return sum(
        sample.value
        for metric in REGISTRY.collect()
        if metric.name == "rag_http_request_duration_seconds"
        for sample in metric.samples
        if sample.name.endswith("_count")
        and sample.labels.get("method") == method
        and sample.labels.get("route") == route
    )


async def test_a_final_error_is_not_retried_by_the_sdk(
    valkey: EmbeddedValkey, tmp_path: Path, llm: Any
) -> None:
    settings = keyed_settings(valkey, tmp_path, llm, users={"alice": ALICE}, admins={})
    cancel_route = "/v1/responses/{response_id}/cancel"
    async with running_stack(settings) as stack, sdk(stack, max_retries=2) as alice:
        created = await alice.responses.create(model="any", input="tea?", background=True)
        assert (await completed(alice, created.id)).status == "completed"
        before = requests_seen("POST", cancel_route)
        with pytest.raises(openai.ConflictError) as ended:
            await alice.responses.cancel(created.id)
        assert ended.value.code == "response_ended"
        assert ended.value.response.headers["x-should-retry"] == "false"
        assert requests_seen("POST", cancel_route) - before == 1  # asked once, not three times
        # Any other final error says so too (a refusal that may pass leaves it to the SDK).
        with pytest.raises(openai.NotFoundError) as missing:
            await alice.responses.retrieve("resp_" + "0" * 32)
        assert missing.value.response.headers["x-should-retry"] == "false"
