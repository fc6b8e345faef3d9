"""Quotas and limits: per key (requests a minute, unfinished jobs, stored bytes, open streams)
and per request (header size, files per upload), each refused with its code and, for a 429,
a Retry-After. Against the real app under uvicorn, a real Valkey and, where jobs must end, a
real worker."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
from redis.asyncio import Redis

from rag_async.config import Settings
from rag_async.local.valkey import EmbeddedValkey
from rag_async.store.keys import Keys
from tests.conftest import running_api, running_stack, running_worker
from tests.test_auth import ALICE, BOB, as_, finished, keyed_settings


def refused(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert error["code"] == code, error
    if status == 429:
        assert int(response.headers["retry-after"]) >= 1
    return error


async def test_requests_a_minute_per_key(valkey: EmbeddedValkey, tmp_path: Path, llm: Any) -> None:
    settings = keyed_settings(valkey, tmp_path, llm, rate_limit_per_minute=30, rate_limit_burst=3)
    async with running_stack(settings, with_worker=False) as stack:
        async with as_(stack, ALICE) as alice, as_(stack, BOB) as bob:
            for _ in range(3):  # the burst
                assert (await alice.get("/documents")).status_code == 200
            limited = await alice.get("/documents")
            refused(limited, 429, "rate_limited")
            assert int(limited.headers["retry-after"]) == 2  # a token every two seconds
            assert (await alice.post("/chat", json={"query": "tea?"})).status_code == 429
            assert (await bob.get("/documents")).status_code == 200  # each key its own bucket
            await asyncio.sleep(2.1)
            assert (await alice.get("/documents")).status_code == 200  # a token came back
        async with as_(stack, "not-a-key-0123456789") as wrong:
            # A wrong key is refused for what it is: a 401, not a 429.
            assert (await wrong.get("/documents")).status_code == 401


async def test_the_local_user_of_an_instance_without_keys_is_not_held_to_quotas(
    settings: Settings,
) -> None:
    local = settings.model_copy(
        update={
            "rate_limit_per_minute": 60,
            "rate_limit_burst": 1,
            "max_unfinished_jobs_per_key": 1,
            "max_streams_per_key": 1,
        }
    )
    async with running_api(local) as base_url, httpx.AsyncClient(base_url=base_url) as http:
        jobs = []
        for i in range(3):
            accepted = await http.post("/chat", json={"query": f"tea {i}?"})
            assert accepted.status_code == 202, accepted.text
            jobs.append(accepted.json()["job_id"])
        async with (
            http.stream("GET", f"/jobs/{jobs[0]}/events") as first,
            http.stream("GET", f"/jobs/{jobs[1]}/events") as second,
        ):
            assert first.status_code == second.status_code == 200


async def test_one_key_flooding_the_queue_does_not_deny_another(
    valkey: EmbeddedValkey, tmp_path: Path, llm: Any
) -> None:
    settings = keyed_settings(
        valkey, tmp_path, llm, max_unfinished_jobs_per_key=5, max_queue_depth=8
    )
    async with (
        running_stack(settings, with_worker=False) as stack,
        as_(stack, ALICE) as alice,
        as_(stack, BOB) as bob,
    ):
        jobs = []
        for i in range(5):
            accepted = await alice.post("/chat", json={"query": f"question {i}"})
            assert accepted.status_code == 202, accepted.text
            jobs.append(accepted.json()["job_id"])
        again = {"Idempotency-Key": "the-sixth"}
        sixth = await alice.post("/chat", json={"query": "a sixth"}, headers=again)
        error = refused(sixth, 429, "too_many_jobs")
        assert "5 unfinished jobs" in error["message"]
        # The queue has room, and the other key's first job takes it.
        assert (await bob.post("/chat", json={"query": "bob's first"})).status_code == 202
        # A job cancelled off the queue no longer counts; the refused request's
        # Idempotency-Key was not spent on a job that never was.
        assert (await alice.delete(f"/jobs/{jobs[0]}")).json()["status"] == "cancelled"
        retried = await alice.post("/chat", json={"query": "a sixth"}, headers=again)
        assert retried.status_code == 202, retried.text
        assert (await alice.get(f"/jobs/{retried.json()['job_id']}")).status_code == 200
        refused(await alice.post("/chat", json={"query": "a seventh"}), 429, "too_many_jobs")
        # Jobs that end, however they end, no longer count.
        async with running_worker(settings):
            for job_id in [*jobs[1:], retried.json()["job_id"]]:
                assert (await finished(alice, job_id))["status"] == "complete"
        for i in range(5):
            accepted = await alice.post("/chat", json={"query": f"later {i}"})
            assert accepted.status_code == 202, accepted.text


async def test_request_headers_over_the_limit_are_refused(settings: Settings) -> None:
    small = settings.model_copy(update={"max_header_bytes": 2048})
    async with running_api(small) as base_url, httpx.AsyncClient(base_url=base_url) as http:
        assert (await http.get("/healthz", headers={"X-Note": "n" * 1500})).status_code == 200
        big = await http.get("/healthz", headers={"X-Note": "n" * 2100})
        refused(big, 431, "headers_too_large")
        split = {f"X-Note-{i}": "n" * 200 for i in range(12)}  # the total counts, not one
        refused(await http.get("/healthz", headers=split), 431, "headers_too_large")


async def closed_within(reader: asyncio.StreamReader, seconds: float) -> bytes:
    """What the server sent before it closed the connection; fails if it stays open."""
    received = b""
    async with asyncio.timeout(seconds):
        while chunk := await reader.read(65536):
            received += chunk
    return received


async def test_the_server_drops_slow_and_oversized_request_heads(settings: Settings) -> None:
    served = settings.model_copy(update={"header_timeout": 0.5, "max_header_bytes": 4096})
    async with running_api(served) as base_url:
        url = httpx.URL(base_url)
        host, port = url.host, url.port or 80
        async with httpx.AsyncClient(base_url=base_url) as http:
            for _ in range(2):  # a kept-alive connection serves a second request
                assert (await http.get("/healthz")).status_code == 200
        # Connected and silent, and a head that trickles in and never ends: both dropped.
        silent = await asyncio.open_connection(host, port)
        trickling = await asyncio.open_connection(host, port)
        started = time.monotonic()
        trickling[1].write(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n")
        for _ in range(3):
            await asyncio.sleep(0.2)
            trickling[1].write(b"X-Slow: still coming\r\n")
        assert await closed_within(silent[0], 3) == b""
        assert await closed_within(trickling[0], 3) == b""
        assert time.monotonic() - started < 3
        # A head far over the limit is refused while it is still arriving.
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n")
        writer.write(b"".join(b"X-Big-%d: %s\r\n" % (i, b"b" * 1000) for i in range(64)))
        answer = await closed_within(reader, 3)
        assert answer.startswith(b"HTTP/1.1 431 "), answer[:80]
        assert b'"code":"headers_too_large"' in answer
        for connection in (silent, trickling, (reader, writer)):
            connection[1].close()


async def test_files_per_upload_and_bytes_per_upload(settings: Settings) -> None:
    small = settings.model_copy(update={"max_files_per_upload": 2, "max_document_bytes": 10_000})
    async with running_api(small) as base_url, httpx.AsyncClient(base_url=base_url) as http:
        three = [("files", (f"{name}.md", b"# Tea\n\nBrew it.")) for name in "abc"]
        error = refused(await http.post("/documents", files=three), 413, "too_many_files")
        assert "3 files" in error["message"] and "at most 2" in error["message"]
        # The body's own cap (about twice the largest document) bounds an upload's bytes.
        two_big = [("files", (f"{name}.md", b"x" * 50_000)) for name in "ab"]
        refused(await http.post("/documents", files=two_big), 413, "payload_too_large")
        queue = Keys(small.key_prefix).queue("documents")
        async with Redis.from_url(small.redis_url or "") as redis:
            assert await redis.zcard(queue) == 0  # neither upload queued anything
        two = three[:2]
        assert (await http.post("/documents", files=two)).status_code == 202


async def test_stored_bytes_per_key(valkey: EmbeddedValkey, tmp_path: Path, llm: Any) -> None:
    settings = keyed_settings(valkey, tmp_path, llm, max_stored_bytes_per_key=1000)
    text = "# Tea\n\n" + "Green tea is brewed at eighty degrees. " * 15  # 592 bytes

    def document(source: str, body: str = text) -> dict[str, str]:
        return {"text": body, "source": source}

    async with (
        running_stack(settings) as stack,
        as_(stack, ALICE) as alice,
        as_(stack, BOB) as bob,
    ):
        first = (await alice.post("/documents", json=document("a.md"))).json()
        await finished(alice, first["job_id"])
        error = refused(
            await alice.post("/documents", json=document("b.md")), 413, "quota_exceeded"
        )
        assert "592" in error["message"] and "1000" in error["message"]
        # Ingesting the same source again replaces it: its old size no longer counts.
        longer = text + "Black tea wants boiling water."
        replaced = await alice.post("/documents", json=document("a.md", longer))
        assert replaced.status_code == 202, replaced.text
        await finished(alice, replaced.json()["job_id"])
        # Every file of an upload over the quota is refused, and so is the upload.
        files = [("files", (f"{name}.md", text.encode())) for name in "cd"]
        multipart = await alice.post("/documents", files=files)
        refused(multipart, 413, "quota_exceeded")
        # Another key has its own quota.
        theirs = await bob.post("/documents", json=document("a.md"))
        assert theirs.status_code == 202
        # Deleting a document gives its bytes back.
        deleted = await alice.delete(f"/documents/{first['document_id']}")
        await finished(alice, deleted.json()["job_id"])
        again = await alice.post("/documents", json=document("b.md"))
        assert again.status_code == 202, again.text


async def test_open_streams_per_key(valkey: EmbeddedValkey, tmp_path: Path, llm: Any) -> None:
    settings = keyed_settings(valkey, tmp_path, llm, max_streams_per_key=2)
    async with running_stack(settings, with_worker=False) as stack:
        host, _, port = stack.base_url.removeprefix("http://").partition(":")
        async with as_(stack, ALICE) as alice, as_(stack, BOB) as bob:
            accepted = (await alice.post("/chat", json={"query": "anyone?"})).json()
            job_id, events_url = accepted["job_id"], accepted["events_url"]
            request = (
                f"GET /jobs/{job_id}/events HTTP/1.1\r\nHost: {host}\r\n"
                f"Authorization: Bearer {ALICE}\r\n\r\n"
            ).encode()

            async def open_stream() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
                reader, writer = await asyncio.open_connection(host, int(port))
                writer.write(request)
                status = await reader.readline()
                assert b" 200 " in status, status
                return reader, writer

            streams = [await open_stream(), await open_stream()]
            refused(await alice.get(f"/jobs/{job_id}/events"), 429, "too_many_streams")
            # EventSource's token is counted apart (test_streams_opened_by_token_...).
            async with (
                httpx.AsyncClient(base_url=stack.base_url) as anonymous,
                anonymous.stream("GET", events_url) as by_token,
            ):
                assert by_token.status_code == 200
            # Another key streams its own.
            bobs = (await bob.post("/chat", json={"query": "me too"})).json()["job_id"]
            async with bob.stream("GET", f"/jobs/{bobs}/events") as stream:
                assert stream.status_code == 200
            # Clients that vanish without a goodbye give their slots back.
            for _, writer in streams:
                writer.transport.abort()
            for _ in range(100):
                async with alice.stream("GET", f"/jobs/{job_id}/events") as stream:
                    if stream.status_code == 200:
                        break
                await asyncio.sleep(0.05)
            assert stream.status_code == 200
            streams = [await open_stream(), await open_stream()]  # both slots are free
            for _, writer in streams:
                writer.transport.abort()


async def test_streams_opened_by_token_never_take_the_keys_own(
    valkey: EmbeddedValkey, tmp_path: Path, llm: Any
) -> None:
    settings = keyed_settings(
        valkey, tmp_path, llm, max_streams_per_key=2, max_token_streams_per_key=2
    )
    async with running_stack(settings, with_worker=False) as stack, as_(stack, ALICE) as alice:
        host, _, port = stack.base_url.removeprefix("http://").partition(":")
        accepted = (await alice.post("/chat", json={"query": "anyone?"})).json()
        job_id, events_url = accepted["job_id"], accepted["events_url"]

        async def open_stream(headers: str) -> asyncio.StreamWriter:
            reader, writer = await asyncio.open_connection(host, int(port))
            writer.write(f"GET {events_url} HTTP/1.1\r\nHost: {host}\r\n{headers}\r\n".encode())
            status = await reader.readline()
            assert b" 200 " in status, status
            return writer

        # Whoever holds a leaked token fills the streams it may open...
        by_token = [await open_stream(""), await open_stream("")]
        async with httpx.AsyncClient(base_url=stack.base_url) as anonymous:
            error = refused(await anonymous.get(events_url), 429, "too_many_streams")
        # ...and the owner still streams with the key, as many as the key may.
        keyed = [await open_stream(f"Authorization: Bearer {ALICE}\r\n") for _ in range(2)]
        refused(await alice.get(f"/jobs/{job_id}/events"), 429, "too_many_streams")
        assert "opened by events token" in error["message"]
        for writer in [*by_token, *keyed]:
            writer.transport.abort()
