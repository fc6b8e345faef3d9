"""A Qdrant server's failures, as the real qdrant-client meets them, become provider errors
that say whether another try may help (the job's retries and the "qdrant" breaker rely on it)."""

from __future__ import annotations

import pytest
from qdrant_client import AsyncQdrantClient

from rag_async.domain.errors import ProviderError
from rag_async.local.valkey import free_port
from rag_async.providers.retrieval.qdrant_calls import qdrant_call
from tests.support.status_server import answering


@pytest.mark.parametrize(
    ("status", "retryable"),
    [
        (503, True),
        (429, True),
        (408, True),  # the same rule as the LLM's and the embedder's (rag_async/retry.py)
        (409, True),
        (400, False),
        (404, False),
    ],
)
async def test_an_error_status_says_whether_to_retry(status: int, retryable: bool) -> None:
    async with answering(status) as url:
        client = AsyncQdrantClient(url=url, timeout=5, check_compatibility=False)
        with pytest.raises(ProviderError) as raised:
            await qdrant_call(client.count("chunks"))
        await client.close()
    assert raised.value.retryable is retryable
    assert f"HTTP {status}" in raised.value.message
    assert raised.value.retry_after is None


@pytest.mark.parametrize(
    ("status", "retry_after", "kept"),
    [
        (503, "7", 7.0),
        # qdrant-client raises its own exceptions for a 429 with a Retry-After, and another
        # when that is not whole seconds: both are still a retryable provider error.
        (429, "7", 7.0),
        (429, "1.5", None),
    ],
)
async def test_a_retry_after_is_kept_for_the_jobs_backoff(
    status: int, retry_after: str, kept: float | None
) -> None:
    async with answering(status, {"Retry-After": retry_after}) as url:
        client = AsyncQdrantClient(url=url, timeout=5, check_compatibility=False)
        with pytest.raises(ProviderError) as raised:
            await qdrant_call(client.count("chunks"))
        await client.close()
    assert raised.value.retryable and raised.value.retry_after == kept
    assert f"HTTP {status}" in raised.value.message


async def test_an_unreachable_server_is_worth_retrying() -> None:
    client = AsyncQdrantClient(
        url=f"http://127.0.0.1:{free_port()}", timeout=5, check_compatibility=False
    )
    with pytest.raises(ProviderError) as raised:
        await qdrant_call(client.count("chunks"))
    await client.close()
    assert raised.value.retryable
    assert "could not be reached" in raised.value.message
