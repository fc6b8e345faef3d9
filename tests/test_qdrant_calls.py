"""A Qdrant server's failures, as the real qdrant-client meets them, become provider errors
that say whether another try may help (the job's retries and the "qdrant" breaker rely on it)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from qdrant_client import AsyncQdrantClient

from rag_async.embedded_valkey import free_port
from rag_async.errors import ProviderError
from rag_async.jobs.qdrant_calls import qdrant_call


async def _answering(status: str) -> AsyncIterator[str]:
    """A server that answers every request with `status` and an empty JSON body."""

    async def reply(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(
            f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\n"
            "content-length: 2\r\nconnection: close\r\n\r\n{}".encode()
        )
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(reply, "127.0.0.1", 0)
    async with server:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"


@pytest.mark.parametrize(
    ("status", "retryable"),
    [
        ("503 Service Unavailable", True),
        ("429 Too Many Requests", True),
        ("400 Bad Request", False),
    ],
)
async def test_an_error_status_says_whether_to_retry(status: str, retryable: bool) -> None:
    async for url in _answering(status):
        client = AsyncQdrantClient(url=url, timeout=5, check_compatibility=False)
        with pytest.raises(ProviderError) as raised:
            await qdrant_call(client.count("chunks"))
        await client.close()
    assert raised.value.retryable is retryable
    assert status.split()[0] in raised.value.message


async def test_an_unreachable_server_is_worth_retrying() -> None:
    client = AsyncQdrantClient(
        url=f"http://127.0.0.1:{free_port()}", timeout=5, check_compatibility=False
    )
    with pytest.raises(ProviderError) as raised:
        await qdrant_call(client.count("chunks"))
    await client.close()
    assert raised.value.retryable
    assert "could not be reached" in raised.value.message
