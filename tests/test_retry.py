"""One retry rule and one backoff (rag_async/retry.py).

The rule is checked where it matters: the LLM and the embedder through the real openai SDK
against the OpenAI-compatible test server told to answer a status, Qdrant through the real
qdrant-client against a server that answers it. All three must agree, status by status.
"""

from __future__ import annotations

import email.utils
import time
from typing import Any

import openai
import pytest
from qdrant_client import AsyncQdrantClient

from rag_async.domain.errors import ProviderError
from rag_async.providers.llm import OpenAIChat
from rag_async.providers.retrieval.embedders import OpenAIEmbedder
from rag_async.providers.retrieval.qdrant_calls import qdrant_call
from rag_async.providers.retry import RETRYABLE_STATUSES, backoff, retry_after
from tests.support.status_server import answering

# Worth another try: timed out, conflict, rate limited, any server error. Nothing else.
TABLE = [
    (400, False),
    (401, False),
    (403, False),
    (404, False),
    (408, True),
    (409, True),
    (413, False),
    (422, False),
    (429, True),
    (500, True),
    (501, True),
    (502, True),
    (503, True),
    (504, True),
    (529, True),  # a nonstandard "overloaded", as some LLM APIs send
]


async def _llm_error(base_url: str, headers: dict[str, str]) -> ProviderError:
    async with openai.AsyncOpenAI(
        base_url=base_url, api_key="test-key", max_retries=0, default_headers=headers
    ) as client:
        chat = OpenAIChat(client, "test-model", max_tokens=16)
        with pytest.raises(ProviderError) as raised:
            async for _ in chat.stream("tea?", []):
                pass
    return raised.value


async def _embedder_error(base_url: str, headers: dict[str, str]) -> ProviderError:
    async with openai.AsyncOpenAI(
        base_url=base_url, api_key="test-key", max_retries=0, default_headers=headers
    ) as client:
        with pytest.raises(ProviderError) as raised:
            await OpenAIEmbedder(client, "test-embedding").embed(["tea"])
    return raised.value


async def _qdrant_error(status: int) -> ProviderError:
    async with answering(status, {"Retry-After": "2"}) as url:
        client = AsyncQdrantClient(url=url, timeout=5, check_compatibility=False)
        with pytest.raises(ProviderError) as raised:
            await qdrant_call(client.count("chunks"))
        await client.close()
    return raised.value


@pytest.mark.parametrize(("status", "retryable"), TABLE)
async def test_every_provider_judges_a_status_alike(llm: Any, status: int, retryable: bool) -> None:
    assert (status in RETRYABLE_STATUSES) is retryable
    fault = {"x-test-fault": str(status), "x-test-retry-after": "2"}
    errors = {
        "llm": await _llm_error(llm.base_url, fault),
        "embedder": await _embedder_error(llm.base_url, fault),
        "qdrant": await _qdrant_error(status),
    }
    for provider, error in errors.items():
        assert error.retryable is retryable, (provider, error.message)
        assert f"HTTP {status}" in error.message, (provider, error.message)
        assert error.retry_after == 2.0, (provider, error.retry_after)


# Retry-After, as servers send it.


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ({"retry-after": "3"}, 3.0),
        ({"retry-after": "0.5"}, 0.5),
        ({"retry-after-ms": "1500", "retry-after": "9"}, 1.5),  # OpenAI's, more precise
        ({"retry-after": "-4"}, 0.0),
        ({"retry-after": "soon"}, None),
        ({"retry-after": "inf"}, None),  # not a wait to honour, and no number arq accepts
        ({"retry-after": "nan"}, None),
        ({}, None),
    ],
)
def test_retry_after_is_read_in_seconds(headers: dict[str, str], seconds: float | None) -> None:
    assert retry_after(headers) == seconds


def test_retry_after_as_an_http_date() -> None:
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    seconds = retry_after({"retry-after": when})
    assert seconds is not None and 28.0 <= seconds <= 30.0
    past = email.utils.formatdate(time.time() - 30, usegmt=True)
    assert retry_after({"retry-after": past}) == 0.0


# The backoff: bounded, jittered, capped, and never sooner than the server asked.

SAMPLES = 2000


@pytest.mark.parametrize(("first", "cap"), [(2.0, 60.0), (0.5, 8.0)])
def test_backoff_doubles_within_jittered_bounds_up_to_the_cap(first: float, cap: float) -> None:
    for failures in range(1, 12):
        step = min(cap, first * 2 ** (failures - 1))
        pauses = [backoff(failures, first=first, cap=cap) for _ in range(SAMPLES)]
        assert all(step / 2 <= pause <= step for pause in pauses), (failures, step)
        # Jittered over the whole half-step, not bunched (all near one value).
        assert min(pauses) < step * 0.55 and max(pauses) > step * 0.95
    assert max(backoff(10_000, first=first, cap=cap) for _ in range(SAMPLES)) <= cap


def test_backoff_defaults_are_a_jobs_retries() -> None:
    assert all(1.0 <= backoff(1) <= 2.0 for _ in range(SAMPLES))
    assert all(2.0 <= backoff(2) <= 4.0 for _ in range(SAMPLES))
    assert all(30.0 <= backoff(9) <= 60.0 for _ in range(SAMPLES))


def test_backoff_never_comes_before_retry_after() -> None:
    for failures in range(1, 10):
        for asked in (0.0, 0.3, 1.7, 5.0, 45.0):
            pauses = [backoff(failures, asked, first=0.5, cap=8.0) for _ in range(200)]
            assert all(pause >= asked for pause in pauses)
    # Beyond the cap, the server's word wins; below the jitter, the jitter does.
    assert backoff(1, 90.0) == 90.0
    assert all(1.0 <= backoff(1, 0.2) <= 2.0 for _ in range(SAMPLES))
    assert all(1.0 <= backoff(1, None) <= 2.0 for _ in range(SAMPLES))
