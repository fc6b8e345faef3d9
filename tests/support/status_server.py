"""A server that answers every request with one HTTP status, as a failing Qdrant (or a proxy
before it) would: for the provider-error tests of a real qdrant-client."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from http import HTTPStatus


@contextlib.asynccontextmanager
async def answering(status: int, headers: Mapping[str, str] | None = None) -> AsyncIterator[str]:
    """Serve, on a free port, `status` with `headers` and an empty JSON body; yields the URL."""
    extra = "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())

    async def reply(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(
            f"HTTP/1.1 {status} {_phrase(status)}\r\n"
            f"content-type: application/json\r\n{extra}"
            "content-length: 2\r\nconnection: close\r\n\r\n{}".encode()
        )
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(reply, "127.0.0.1", 0)
    async with server:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"  # a nonstandard status (529 "overloaded", say) still has a phrase
