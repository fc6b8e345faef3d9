"""Holding connections: stalled and trickling request bodies are cut, one client (one peer
address) cannot hold every connection, a full server answers 503 in the API's error shape and
still answers its probes, and the local user of an instance without keys has a stream limit.

Against the real app under uvicorn with the server options `rag-async api` uses. Clients bind
distinct loopback addresses (Linux routes all of 127/8 to lo), so that the cap per address
separates a flood from an ordinary client as it would separate two hosts.
"""

from __future__ import annotations

import asyncio
import resource
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import orjson

from rag_async.config import Settings
from tests.conftest import running_api

# `{"query": "` : the 11 bytes of body the stalled requests of issue 19 sent.
STALLED_POST = (
    b"POST /chat HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    b'Content-Length: 5000\r\n\r\n{"query": "'
)
Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]


def _address(base_url: str) -> tuple[str, int]:
    url = httpx.URL(base_url)
    return url.host, url.port or 80


async def connect(base_url: str, source: str) -> Connection:
    host, port = _address(base_url)
    return await asyncio.open_connection(host, port, local_addr=(source, 0))


@asynccontextmanager
async def client_from(base_url: str, source: str) -> AsyncIterator[httpx.AsyncClient]:
    """An ordinary HTTP client whose connections come from the address `source`."""
    transport = httpx.AsyncHTTPTransport(local_address=source)
    async with httpx.AsyncClient(base_url=base_url, transport=transport, timeout=10) as http:
        yield http


async def answer_then_close(reader: asyncio.StreamReader) -> bytes:
    """All the server sent before it closed the connection."""
    received = b""
    while chunk := await reader.read(65536):
        received += chunk
    return received


def error_of(answer: bytes) -> tuple[int, str, dict[str, str]]:
    """The status, error code and headers of a raw JSON error answer."""
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    assert headers["content-type"] == "application/json", answer[:300]
    return int(lines[0].split()[1]), orjson.loads(body)["error"]["code"], headers


def enough_descriptors(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(needed, hard), hard))


async def test_a_flood_of_stalled_bodies_is_cut_while_an_ordinary_client_is_served(
    settings: Settings,
) -> None:
    # Issue 19's attack: connections that send a POST's head and 11 of its 5,000 bytes, then
    # nothing. 4 addresses x 260: 200 of each address's are let in (held until the body
    # clock cuts them), the rest refused at once by the cap per client.
    served = settings.model_copy(
        update={"body_idle_timeout": 3.0, "max_connections_per_client": 200}
    )
    sources, per_source = [f"127.0.0.{n}" for n in range(10, 14)], 260
    enough_descriptors(4096)
    async with running_api(served) as base_url, client_from(base_url, "127.0.0.2") as http:

        async def stalled(source: str) -> bytes:
            reader, writer = await connect(base_url, source)
            writer.write(STALLED_POST)
            try:
                return await answer_then_close(reader)
            finally:
                writer.close()

        async def flood() -> list[bytes]:
            async with asyncio.timeout(60):  # every one is cut, in bounded time
                return await asyncio.gather(
                    *(stalled(source) for source in sources for _ in range(per_source))
                )

        flooding = asyncio.create_task(flood())
        statuses: Counter[int] = Counter()
        while not flooding.done():  # the ordinary client, all through the flood
            statuses[(await http.get("/healthz")).status_code] += 1
            statuses[(await http.post("/chat", json={"query": "tea?"})).status_code] += 1
            await asyncio.sleep(0.05)
        answers = await flooding
        assert set(statuses) == {200, 202} and statuses[202] >= 5, statuses
        outcomes = Counter(error_of(answer)[:2] for answer in answers)
        assert set(outcomes) <= {(408, "body_too_slow"), (429, "too_many_connections")}
        assert outcomes[(408, "body_too_slow")] >= 4 * 200, outcomes  # held, then cut
        assert sum(outcomes.values()) == len(sources) * per_source
        assert (await http.get("/healthz")).status_code == 200


async def test_a_trickling_body_and_a_body_past_its_time_are_cut(settings: Settings) -> None:
    served = settings.model_copy(
        update={"body_idle_timeout": 1.0, "body_min_rate": 200, "body_timeout": 4.0}
    )
    async with running_api(served) as base_url:
        # A byte every 0.3 s never pauses a whole second, but falls behind 200 bytes a second.
        reader, writer = await connect(base_url, "127.0.0.1")
        writer.write(STALLED_POST)
        trickle = asyncio.create_task(answer_then_close(reader))
        for _ in range(20):
            if trickle.done():
                break
            writer.write(b"a")
            await asyncio.sleep(0.3)
        async with asyncio.timeout(10):
            status, code, _ = error_of(await trickle)
        assert (status, code) == (408, "body_too_slow")
        writer.close()
        # 300 bytes every 0.5 s keeps the rate, but 5,000 bytes would take 8 s, past 4.
        reader, writer = await connect(base_url, "127.0.0.1")
        writer.write(STALLED_POST)
        steady = asyncio.create_task(answer_then_close(reader))
        for _ in range(30):
            if steady.done():
                break
            writer.write(b"b" * 300)
            await asyncio.sleep(0.5)
        async with asyncio.timeout(10):
            answer = await steady
        assert error_of(answer)[:2] == (408, "body_too_slow")
        assert b"did not arrive within 4 s" in answer
        writer.close()
        # A body that comes in pieces, within the limits (all of it in the first second's
        # grace: the rate counts after it), is read and answered.
        body = b'{"query": "tea?"}'
        reader, writer = await connect(base_url, "127.0.0.1")
        writer.write(STALLED_POST.split(b"Content-Length")[0])
        writer.write(b"Content-Length: %d\r\n\r\n" % len(body))
        for piece in (body[:5], body[5:11], body[11:]):
            await asyncio.sleep(0.25)
            writer.write(piece)
        status_line = await asyncio.wait_for(reader.readline(), 10)
        assert b" 202 " in status_line, status_line
        writer.close()


async def test_a_full_server_answers_503_in_the_error_shape_and_still_its_probes(
    settings: Settings,
) -> None:
    served = settings.model_copy(update={"max_connections": 5, "max_connections_per_client": 0})
    async with running_api(served) as base_url:
        held = []
        for _ in range(5):
            reader, writer = await connect(base_url, "127.0.0.1")
            writer.write(STALLED_POST)
            held.append((reader, writer))
        await asyncio.sleep(0.2)
        reader, writer = await connect(base_url, "127.0.0.1")
        writer.write(b"GET /documents HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        async with asyncio.timeout(10):
            status, code, headers = error_of(await answer_then_close(reader))
        assert (status, code) == (503, "server_busy")
        assert int(headers["retry-after"]) >= 1
        async with httpx.AsyncClient(base_url=base_url) as http:
            for path in ("/healthz", "/readyz"):  # a probe still learns the process lives
                probe = await http.get(path)
                assert probe.status_code == 200, probe.text
                assert probe.headers["connection"] == "close"
            busy = await http.post("/chat", json={"query": "tea?"})
            assert busy.status_code == 503 and busy.json()["error"]["code"] == "server_busy"
        for _, writer in held:
            writer.close()


async def test_one_address_may_hold_only_its_share_of_connections(settings: Settings) -> None:
    served = settings.model_copy(update={"max_connections_per_client": 3})
    async with running_api(served) as base_url:
        held = [await connect(base_url, "127.0.0.3") for _ in range(3)]
        reader, writer = await connect(base_url, "127.0.0.3")
        writer.write(b"GET /documents HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        async with asyncio.timeout(10):
            status, code, headers = error_of(await answer_then_close(reader))
        assert (status, code) == (429, "too_many_connections")
        assert int(headers["retry-after"]) >= 1
        async with client_from(base_url, "127.0.0.3") as same:
            assert (await same.get("/healthz")).status_code == 200  # probes pass, once
        async with client_from(base_url, "127.0.0.4") as other:
            assert (await other.get("/documents")).status_code == 200
        held.pop()[1].close()  # a connection closed gives its place back
        async with client_from(base_url, "127.0.0.3") as same:
            for _ in range(100):
                answer = await same.get("/documents")
                if answer.status_code == 200:
                    break
                await asyncio.sleep(0.05)
            assert answer.status_code == 200, answer.text
        for _, writer in held:
            writer.close()


async def open_stream(base_url: str, job_id: str) -> tuple[bytes, Connection]:
    """An event stream of `job_id`, opened raw: its status line and its connection."""
    reader, writer = await connect(base_url, "127.0.0.1")
    writer.write(f"GET /jobs/{job_id}/events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    return await asyncio.wait_for(reader.readline(), 10), (reader, writer)


async def test_the_local_user_without_keys_cannot_take_every_connection(
    settings: Settings,
) -> None:
    # Issue 19: 999 event streams of the local user took every connection, and /healthz
    # answered 503. Now its streams have a limit of their own, and its connections the cap
    # of one address.
    served = settings.model_copy(update={"max_streams_without_keys": 100})
    enough_descriptors(4096)
    async with running_api(served) as base_url, httpx.AsyncClient(base_url=base_url) as http:
        job_id = (await http.post("/chat", json={"query": "tea?"})).json()["job_id"]
        opened: list[Any] = []
        statuses: Counter[bytes] = Counter()
        for batch in range(10):
            count = min(100, 999 - 100 * batch)
            results = await asyncio.gather(*(open_stream(base_url, job_id) for _ in range(count)))
            for status_line, connection in results:
                statuses[status_line.split()[1]] += 1
                opened.append(connection)
        assert statuses[b"200"] == 100, statuses  # the local user's streams
        assert statuses[b"429"] == 899, statuses  # too many streams, or connections
        assert (await http.get("/healthz")).status_code == 200
        async with client_from(base_url, "127.0.0.2") as other:  # connections are left
            assert (await other.post("/chat", json={"query": "tea?"})).status_code == 202
        for _, writer in opened:
            writer.close()
