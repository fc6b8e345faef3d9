"""Bad input gets a clear JSON error and nothing is lost: malformed or oversized requests,
unknown job ids, Valkey gone at start or mid-flight, a second worker on embedded Qdrant, and
the CLI's errors. Against the real app, a real Valkey, embedded Qdrant and the real command."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from redis.asyncio import Redis
from redis.exceptions import ResponseError
from structlog.testing import capture_logs

from rag_async.config import Settings
from rag_async.domain.schemas import ErrorBody
from rag_async.local.valkey import EmbeddedValkey, free_port
from rag_async.store.keys import Keys
from rag_async.store.queue import JobQueue
from tests.conftest import (
    REPO,
    Stack,
    cli_env,
    make_settings,
    rag_async_command,
    run_cli,
    running_api,
    running_stack,
)

UNKNOWN_JOB = "0123456789abcdef" * 2  # well formed, never issued


def assert_error(
    response: httpx.Response, status: int, code: str | None = None, *needles: str
) -> dict[str, Any]:
    """The one error shape: JSON `{"error": {"code", "message"}}`, saying what is wrong."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json"), response.headers
    body = response.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert isinstance(error.get("code"), str) and error["code"], body
    assert isinstance(error.get("message"), str) and len(error["message"]) > 10, body
    if code is not None:
        assert error["code"] == code, body
    for needle in needles:
        assert needle.lower() in error["message"].lower(), (needle, error["message"])
    return dict(error)


async def keys_written(settings: Settings) -> tuple[int, list[bytes]]:
    """The queue's depth, and every key under the deployment's prefix."""
    redis = Redis.from_url(settings.redis_url or "")
    try:
        # Waiting in a key's list or on arq's queue.
        depth = await JobQueue(redis, Keys(settings.key_prefix)).size("answer")
        keys = [key async for key in redis.scan_iter(match=f"{settings.key_prefix}*")]
    finally:
        await redis.aclose()
    return depth, keys


async def assert_nothing_written(settings: Settings) -> None:
    depth, keys = await keys_written(settings)
    assert depth == 0, "a rejected request was enqueued"
    assert keys == [], f"a rejected request left keys behind: {keys}"


@pytest.fixture
def small(settings: Settings) -> Settings:
    """Small limits, so the oversized cases stay cheap."""
    return settings.model_copy(update={"max_query_chars": 50, "max_document_bytes": 100})


@pytest.fixture
async def api(small: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The real app under uvicorn, no worker: whatever is accepted stays in the queue."""
    async with running_api(small) as base_url, httpx.AsyncClient(base_url=base_url) as http:
        yield http


# --- POST /chat ---------------------------------------------------------------------------

JSON = {"content-type": "application/json"}

BAD_CHATS: list[tuple[str, bytes, dict[str, str], str, tuple[str, ...]]] = [
    ("empty", b'{"query": ""}', JSON, "empty_query", ("empty",)),
    ("whitespace", b'{"query": "  \\n\\t  "}', JSON, "empty_query", ("empty",)),
    (
        "over the limit",
        orjson.dumps({"query": "x" * 51}),
        JSON,
        "query_too_long",
        ("51 characters", "limit is 50"),
    ),
    ("number", b'{"query": 3}', JSON, "invalid_request", ("query", "string")),
    ("null", b'{"query": null}', JSON, "invalid_request", ("query", "string")),
    ("list body", b'["what is tea?"]', JSON, "invalid_request", ("body",)),
    ("missing field", b"{}", JSON, "invalid_request", ("query", "required")),
    ("no body", b"", JSON, "invalid_request", ("required",)),
    (
        "unknown field",
        b'{"query": "tea?", "top_k": 3}',
        JSON,
        "invalid_request",
        ("top_k", "not permitted"),
    ),
    ("malformed JSON", b'{"query": ', JSON, "invalid_request", ("not valid JSON",)),
    ("not JSON", b"what is tea?", JSON, "invalid_request", ("not valid JSON",)),
]


@pytest.mark.parametrize(
    ("content", "headers", "code", "needles"),
    [case[1:] for case in BAD_CHATS],
    ids=[case[0] for case in BAD_CHATS],
)
async def test_chat_rejects_bad_input_and_enqueues_nothing(
    api: httpx.AsyncClient,
    small: Settings,
    content: bytes,
    headers: dict[str, str],
    code: str,
    needles: tuple[str, ...],
) -> None:
    response = await api.post("/chat", content=content, headers=headers)
    assert_error(response, 422, code, *needles)
    await assert_nothing_written(small)


async def test_chat_rejects_a_body_that_is_not_utf8(
    api: httpx.AsyncClient, small: Settings
) -> None:
    response = await api.post("/chat", content=b'{"query": "\xff\xfe"}', headers=JSON)
    assert 400 <= response.status_code < 500
    assert_error(response, response.status_code)
    await assert_nothing_written(small)


async def test_default_query_limit_is_4000_characters(settings: Settings) -> None:
    assert settings.max_query_chars == 4000
    async with running_api(settings) as base_url, httpx.AsyncClient(base_url=base_url) as http:
        too_long = await http.post("/chat", json={"query": "y" * 4001})
        assert_error(too_long, 422, "query_too_long", "4001 characters", "limit is 4000")
        await assert_nothing_written(settings)
        # Exactly at the limit (surrounding whitespace does not count) is accepted.
        at_limit = await http.post("/chat", json={"query": "  " + "y" * 4000 + "\n"})
        assert at_limit.status_code == 202, at_limit.text
    assert (await keys_written(settings))[0] == 1


async def test_oversized_body_is_refused_before_it_is_read(
    api: httpx.AsyncClient, small: Settings
) -> None:
    two_mb = orjson.dumps({"query": "z" * 2_000_000})
    response = await api.post("/chat", content=two_mb, headers=JSON)
    assert_error(response, 413, "payload_too_large", "larger than")

    # The 413 comes from the Content-Length alone: not one byte of the body is sent here.
    assert api.base_url.port is not None
    reply = await asyncio.to_thread(_post_headers_only, api.base_url.port, 2 * 1024 * 1024)
    assert reply.startswith(b"HTTP/1.1 413"), reply
    assert b"payload_too_large" in reply, reply

    # Without a Content-Length (chunked), the bytes are counted as they arrive.
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"query": "'
        for _ in range(32):
            yield b"z" * 65536
        yield b'"}'

    streamed = await api.post("/chat", content=chunks(), headers=JSON)
    assert_error(streamed, 413, "payload_too_large", "larger than")
    await assert_nothing_written(small)


async def test_queue_too_deep_sheds_load_with_429(settings: Settings) -> None:
    settings = settings.model_copy(update={"max_queue_depth": 2})
    async with running_api(settings) as base_url, httpx.AsyncClient(base_url=base_url) as http:
        for _ in range(2):
            assert (await http.post("/chat", json={"query": "tea?"})).status_code == 202
        shed = await http.post("/chat", json={"query": "tea?"})
        assert_error(shed, 429, "overloaded", "queue")
        assert int(shed.headers["retry-after"]) > 0
    assert (await keys_written(settings))[0] == 2


def _post_headers_only(port: int, length: int) -> bytes:
    """POST /chat announcing `length` bytes but sending none; return what the server says."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(
            b"POST /chat HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % length
        )
        reply = b""
        while b"}}" not in reply:  # recv times out if the server waits for the body
            chunk = sock.recv(4096)
            if not chunk:
                break
            reply += chunk
    return reply


# --- job ids --------------------------------------------------------------------------------

READERS = ["/jobs/{}", "/job-status?job_id={}", "/jobs/{}/events"]


@pytest.mark.parametrize("template", READERS)
async def test_unknown_and_malformed_job_ids_are_404(api: httpx.AsyncClient, template: str) -> None:
    unknown = await api.get(template.format(UNKNOWN_JOB))
    assert_error(unknown, 404, "not_found", UNKNOWN_JOB, "no job")
    for malformed in ("not-a-job", "x" * 500, "0123456789ABCDEF" * 2, "%20", UNKNOWN_JOB + "0"):
        response = await api.get(template.format(malformed))
        assert_error(response, 404, "not_found", "not a job id")
        assert len(response.json()["error"]["message"]) < 200, "the echo of the id is capped"
    # A job id of another format (a UUID, dashes and all): not ours.
    uuid = "3f2b8c1e-9d4a-4e7b-8c2f-1a2b3c4d5e6f"
    assert_error(await api.get(template.format(uuid)), 404, "not_found", "not a job id")


async def test_missing_job_id_and_bad_last_event_id_are_422(api: httpx.AsyncClient) -> None:
    assert_error(await api.get("/job-status"), 422, "invalid_request", "job_id", "required")
    job_id = (await api.post("/chat", json={"query": "tea?"})).json()["job_id"]
    events = f"/jobs/{job_id}/events"
    for bad in ("abc", "-1", "1.5", "²", "99999999999999999999999"):
        header = await api.get(events, headers={"Last-Event-ID": bad.encode()})
        assert_error(header, 422, "invalid_request", "Last-Event-ID")
        query = await api.get(events, params={"last_event_id": bad})
        assert_error(query, 422, "invalid_request", "Last-Event-ID")


# --- POST /documents ------------------------------------------------------------------------

BAD_DOCUMENTS: list[tuple[str, dict[str, Any], str, tuple[str, ...]]] = [
    ("empty text", {"text": ""}, "empty_document", ("no text",)),
    ("blank text", {"text": " \n\n\t"}, "empty_document", ("no text",)),
    ("over the limit", {"text": "t" * 101}, "document_too_large", ("101 bytes", "limit is 100")),
    # The limit is in bytes: 60 characters of two bytes each are over it.
    ("multibyte", {"text": "é" * 60}, "document_too_large", ("120 bytes",)),
    ("missing text", {"title": "Tea"}, "invalid_request", ("text", "required")),
    ("text not a string", {"text": ["tea"]}, "invalid_request", ("text",)),
    (
        "bad document id",
        {"text": "tea", "document_id": "../../etc/passwd"},
        "invalid_request",
        ("document_id", "pattern"),
    ),
    (
        "document id too long",
        {"text": "tea", "document_id": "d" * 201},
        "invalid_request",
        ("document_id",),
    ),
    ("unknown field", {"text": "tea", "tags": ["a"]}, "invalid_request", ("tags",)),
]


@pytest.mark.parametrize(
    ("body", "code", "needles"),
    [case[1:] for case in BAD_DOCUMENTS],
    ids=[case[0] for case in BAD_DOCUMENTS],
)
async def test_documents_reject_bad_input_and_store_nothing(
    api: httpx.AsyncClient,
    small: Settings,
    body: dict[str, Any],
    code: str,
    needles: tuple[str, ...],
) -> None:
    status = 413 if code == "document_too_large" else 422
    assert_error(await api.post("/documents", json=body), status, code, *needles)
    await assert_nothing_written(small)


async def test_documents_body_far_over_the_limit_is_413(
    api: httpx.AsyncClient, small: Settings
) -> None:
    response = await api.post("/documents", json={"text": "t" * 200_000})
    assert_error(response, 413, "payload_too_large")
    await assert_nothing_written(small)


# --- text that UTF-8 cannot hold, and errors nobody expected ---------------------------------

# `"\ud800"` in JSON is half of a UTF-16 surrogate pair, alone. Python's json reads it into a
# str that UTF-8 cannot encode, and Redis, the logs and the LLM all need UTF-8.
LONE_SURROGATES: list[tuple[str, bytes, tuple[str, ...]]] = [
    ("/chat", b'{"query": "\\ud800"}', ("query: cannot be encoded as UTF-8", "lone surrogate")),
    ("/chat", b'{"query": "tea \\udc00?"}', ("query", "UTF-8", "at character 4")),
    ("/chat", b'{"query": "tea?", "collection": "\\ud800"}', ("collection", "UTF-8")),
    ("/chat", b'{"query": "tea?", "\\ud800": 1}', ("body: cannot be encoded as UTF-8",)),
    ("/documents", b'{"text": "\\ud800"}', ("text: cannot be encoded as UTF-8",)),
    ("/documents", b'{"text": "tea", "title": "T\\ud800"}', ("title", "UTF-8")),
    ("/documents", b'{"text": "tea", "source": "\\udfff.md"}', ("source", "UTF-8")),
    ("/documents", b'{"text": "tea", "document_id": "\\ud800"}', ("document_id", "UTF-8")),
]


async def test_text_that_utf8_cannot_hold_is_422_naming_the_field(
    api: httpx.AsyncClient, small: Settings
) -> None:
    for path, content, needles in LONE_SURROGATES:
        response = await api.post(path, content=content, headers=JSON)
        try:
            assert_error(response, 422, "invalid_request", *needles)
        except AssertionError as error:
            raise AssertionError(f"POST {path} {content!r}") from error
    await assert_nothing_written(small)

    # A pair is one character (U+1F375), and headers are bytes read as Latin-1: all text.
    pair = await api.post("/chat", content=b'{"query": "\\ud83c\\udf75?"}', headers=JSON)
    assert pair.status_code == 202, pair.text
    view = (await api.get(f"/jobs/{pair.json()['job_id']}")).json()
    assert view["query"] == "\U0001f375?", view
    for header in ("idempotency-key", "x-request-id"):
        odd = await api.post("/chat", json={"query": "tea?"}, headers={header: b"\xff\xfe"})
        assert odd.status_code == 202, (header, odd.text)
    document = await api.post(
        "/documents", json={"text": "tea"}, headers={"idempotency-key": b"\xff"}
    )
    assert document.status_code == 202, document.text


async def test_an_unexpected_error_is_a_json_500_and_logged_with_its_traceback(
    api: httpx.AsyncClient, small: Settings
) -> None:
    # A key under our prefix that is not a job record (written by hand, or by another version):
    # reading it fails in a way no handler expects.
    job_id = "f" * 32
    redis = Redis.from_url(small.redis_url or "")
    try:
        await redis.set(Keys(small.key_prefix).job(job_id), "not a hash")
    finally:
        await redis.aclose()
    with capture_logs() as logs:
        response = await api.get(f"/jobs/{job_id}")
    assert_error(response, 500, "internal_error", "logged")
    assert "WRONGTYPE" not in response.text and "Traceback" not in response.text
    [logged] = [entry for entry in logs if entry["event"] == "unhandled error"]
    assert logged["log_level"] == "error" and logged["path"] == f"/jobs/{job_id}", logged
    assert isinstance(logged["exc_info"], ResponseError), logged
    assert logged["exc_info"].__traceback__ is not None
    assert "WRONGTYPE" in logged["error"], logged
    # The API carries on.
    assert (await api.get(f"/jobs/{UNKNOWN_JOB}")).status_code == 404


async def test_openapi_describes_the_error_body_that_is_sent(api: httpx.AsyncClient) -> None:
    document = (await api.get("/openapi.json")).json()
    schemas = document["components"]["schemas"]
    assert "HTTPValidationError" not in schemas and "ValidationError" not in schemas, schemas
    assert set(schemas["ErrorBody"]["properties"]) == {"error"}
    documented = set()
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            invalid = operation["responses"].get("422")
            if invalid is not None:
                documented.add(f"{method.upper()} {path}")
                schema = invalid["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/ErrorBody"}, (method, path)
    # Every route that takes parameters or a body documents its 422.
    assert {"POST /chat", "POST /documents", "GET /jobs/{job_id}", "GET /job-status"} <= documented
    # And the body really sent is that schema.
    ErrorBody.model_validate((await api.get("/job-status")).json())


# --- Valkey gone during a request -------------------------------------------------------------


async def test_valkey_gone_mid_flight_is_503_and_the_api_recovers(tmp_path: Path, llm: Any) -> None:
    server = EmbeddedValkey(tmp_path / "valkey", appendonly=True)
    server.start()
    try:
        settings = make_settings(server, tmp_path)
        async with (
            running_api(settings) as base_url,
            httpx.AsyncClient(base_url=base_url, timeout=15) as http,
        ):
            job_id = (await http.post("/chat", json={"query": "tea?"})).json()["job_id"]
            server.stop()  # SIGTERM: the AOF is flushed, the port closes

            started = time.monotonic()
            for response in (
                await http.post("/chat", json={"query": "tea?"}),
                await http.get(f"/jobs/{job_id}"),
                await http.get(f"/job-status?job_id={job_id}"),
                await http.get(f"/jobs/{job_id}/events"),
            ):
                assert_error(response, 503, "service_unavailable", "try again")
                assert int(response.headers["retry-after"]) > 0
            assert time.monotonic() - started < 10, "a dead Valkey is reported promptly"
            assert (await http.get("/healthz")).status_code == 200  # the process lives on
            not_ready = await http.get("/readyz")
            assert not_ready.status_code == 503 and not_ready.json()["error"]["code"] == "not_ready"

            # Valkey comes back on the same port: the API reconnects by itself.
            server = EmbeddedValkey(tmp_path / "valkey", port=server.port, appendonly=True)
            server.start()
            deadline = time.monotonic() + 5
            while True:
                response = await http.post("/chat", json={"query": "tea again?"})
                if response.status_code == 202 or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.1)
            assert response.status_code == 202, response.text
            assert (await http.get("/readyz")).status_code == 200
            # The job accepted before the outage survived it (AOF).
            before = await http.get(f"/jobs/{job_id}")
            assert before.status_code == 200 and before.json()["status"] == "queued"
    finally:
        server.stop()


async def test_a_full_valkey_is_a_json_507_and_evicts_no_job(tmp_path: Path, llm: Any) -> None:
    server = EmbeddedValkey(
        tmp_path / "valkey", appendonly=False, password="s3cret", maxmemory="64mb"
    )
    server.start()
    try:
        settings = make_settings(server, tmp_path)
        async with (
            running_api(settings) as base_url,
            httpx.AsyncClient(base_url=base_url, timeout=15) as http,
            Redis.from_url(server.url) as redis,
        ):
            job_id = (await http.post("/chat", json={"query": "tea?"})).json()["job_id"]
            await redis.config_set("maxmemory", 1)  # far over its limit: full

            response = await http.post("/chat", json={"query": "tea again?"})
            assert_error(response, 507, "insufficient_storage", "full", "not accepted")
            # Reads go on, and the job accepted before is still there: nothing was evicted.
            before = await http.get(f"/jobs/{job_id}")
            assert before.status_code == 200 and before.json()["status"] == "queued"

            await redis.config_set("maxmemory", "64mb")
            response = await http.post("/chat", json={"query": "tea at last?"})
            assert response.status_code == 202, response.text
    finally:
        server.stop()


# --- Valkey unreachable at start --------------------------------------------------------------


def _no_traceback(result: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in result.stderr, result.stderr
    assert "Traceback" not in result.stdout, result.stdout


@pytest.mark.parametrize("command", ["api", "worker"])
async def test_unreachable_valkey_at_start_exits_naming_the_url(
    settings: Settings, command: str
) -> None:
    port = free_port()
    url = f"redis://:s3cret@127.0.0.1:{port}/0"
    env = cli_env(settings, RAG_REDIS_URL=url, RAG_PORT=str(free_port()))
    started = time.monotonic()
    result = await asyncio.to_thread(run_cli, command, env=env, timeout=30)
    assert time.monotonic() - started < 20
    assert result.returncode != 0
    assert f"127.0.0.1:{port}" in result.stderr, result.stderr
    assert "s3cret" not in result.stderr, "the password is redacted"
    _no_traceback(result)


# --- a second worker on embedded Qdrant --------------------------------------------------------


class _Lines:
    """Collects a process's stderr on a thread, so the pipe never fills."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self.ready = threading.Event()
        assert process.stderr is not None
        self._thread = threading.Thread(target=self._read, args=(process.stderr,), daemon=True)
        self._thread.start()

    def _read(self, stream: Any) -> None:
        for line in stream:
            self.lines.append(line)
            if "worker ready" in line:
                self.ready.set()

    @property
    def text(self) -> str:
        return "".join(self.lines)


@pytest.fixture
def first_worker(settings: Settings) -> Iterator[tuple[subprocess.Popen[str], _Lines]]:
    process = subprocess.Popen(
        rag_async_command("worker"),
        env=cli_env(settings),
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines = _Lines(process)
    try:
        yield process, lines
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


async def test_second_worker_on_embedded_qdrant_fails_clearly(
    settings: Settings, first_worker: tuple[subprocess.Popen[str], _Lines]
) -> None:
    process, lines = first_worker
    ready = await asyncio.to_thread(lines.ready.wait, 30)
    assert ready, f"the first worker never got ready:\n{lines.text}"

    started = time.monotonic()
    second = await asyncio.to_thread(run_cli, "worker", env=cli_env(settings), timeout=30)
    assert time.monotonic() - started < 20
    assert second.returncode != 0
    assert "RAG_QDRANT_URL" in second.stderr, second.stderr
    assert "one process" in second.stderr
    _no_traceback(second)
    assert process.poll() is None, "the first worker is unharmed"

    process.send_signal(signal.SIGTERM)
    code = await asyncio.to_thread(process.wait, 15)
    assert code in (0, -signal.SIGTERM), lines.text
    assert "Traceback" not in lines.text, lines.text


# --- the CLI ------------------------------------------------------------------------------------


async def test_cli_ask_shows_the_apis_error(small: Settings) -> None:
    async with running_stack(small) as stack:
        env = cli_env(small, RAG_API_URL=stack.base_url)
        empty, too_long = await asyncio.gather(
            asyncio.to_thread(run_cli, "ask", "", env=env),
            asyncio.to_thread(run_cli, "ask", "why? " * 20, env=env),
        )
    assert empty.returncode == 1
    assert "query is empty" in empty.stderr, empty.stderr
    _no_traceback(empty)
    assert too_long.returncode == 1
    # 20 × "why? " is 100 characters, 99 once the trailing space is stripped.
    assert "99 characters long; the limit is 50" in too_long.stderr, too_long.stderr
    _no_traceback(too_long)
    await assert_nothing_written(small)


async def test_cli_without_an_api_or_files(settings: Settings, tmp_path: Path) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    env = cli_env(settings, RAG_API_URL=closed)
    note = tmp_path / "note.md"
    note.write_text("# Tea\n\nGreen tea brews at 80 degrees.\n")
    ask, missing, no_api = await asyncio.gather(
        asyncio.to_thread(run_cli, "ask", "x", env=env),
        asyncio.to_thread(run_cli, "ingest", "/nonexistent", env=env),
        asyncio.to_thread(run_cli, "ingest", str(note), env=env),
    )
    assert ask.returncode == 1
    assert "cannot reach the API" in ask.stderr and closed in ask.stderr, ask.stderr
    _no_traceback(ask)

    assert missing.returncode != 0
    assert "/nonexistent" in missing.stderr and "no such file" in missing.stderr, missing.stderr
    _no_traceback(missing)

    assert no_api.returncode != 0
    assert "cannot reach the API" in no_api.stderr, no_api.stderr
    _no_traceback(no_api)


# --- configuration --------------------------------------------------------------------------

ENTRY_POINTS = {
    "api": rag_async_command("api"),
    "worker": rag_async_command("worker"),
    "arq": [sys.executable, "-m", "arq", "workers.settings.WorkerSettings"],
}


def _run(command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        stdin=subprocess.DEVNULL,
    )


@pytest.mark.parametrize("entry_point", ENTRY_POINTS)
async def test_bad_configuration_names_the_variable(settings: Settings, entry_point: str) -> None:
    for variable, value, needles in [
        ("RAG_PORT", "abc", ("valid integer", "got 'abc'")),
        ("RAG_LOG_LEVEL", "verbose", ("'DEBUG'", "got 'verbose'")),
    ]:
        env = cli_env(settings, **{variable: value})
        result = await asyncio.to_thread(_run, ENTRY_POINTS[entry_point], env)
        assert result.returncode != 0, result.stderr
        assert f"invalid configuration: {variable}: " in result.stderr, result.stderr
        for needle in needles:
            assert needle in result.stderr, (needle, result.stderr)
        assert "validation error for Settings" not in result.stderr, "pydantic's words"
        _no_traceback(result)
    # Any case is a level.
    assert Settings(_env_file=None, log_level="debug").log_level == "DEBUG"


async def test_a_misspelt_variable_is_warned_of_at_start(settings: Settings) -> None:
    env = cli_env(settings, RAG_PROT="9000", RAG_API_URL=f"http://127.0.0.1:{free_port()}")
    ask, arq = await asyncio.gather(
        asyncio.to_thread(run_cli, "ask", "tea?", env=env),
        # What arq's CLI does first: read the worker's settings (then it would run the worker).
        asyncio.to_thread(
            _run,
            [sys.executable, "-c", "import rag_async.worker.process as w; w.WorkerSettings"],
            env,
        ),
    )
    warning = "RAG_PROT is not a setting of rag-async and is ignored; did you mean RAG_PORT?"
    assert f"warning: {warning}" in ask.stderr, ask.stderr
    assert "cannot reach the API" in ask.stderr, "a warning, not an error"
    assert arq.returncode == 0 and warning in arq.stderr, arq.stderr
    for result in (ask, arq):
        assert result.stderr.count("is not a setting") == 1, "only the unknown one"
        _no_traceback(result)


async def test_unknown_route_says_so(api: httpx.AsyncClient) -> None:
    assert_error(await api.get("/nope"), 404, "not_found", "GET /nope", "/docs")
    assert_error(await api.put("/chat"), 405, "method_not_allowed", "PUT /chat")


async def test_last_event_id_beyond_the_end_closes_the_stream(stack: Stack, llm: Any) -> None:
    llm.config.ttft = 0.5  # still running when the stream opens
    job_id = (await stack.client.ask("tea?"))["job_id"]
    async with (
        httpx.AsyncClient(base_url=stack.base_url, timeout=10) as http,
        http.stream("GET", f"/jobs/{job_id}/events", headers={"Last-Event-ID": "999"}) as stream,
    ):
        received = b"".join([chunk async for chunk in stream.aiter_bytes()])
    # Nothing after 999 exists; once the job ends the stream ends too, instead of idling on.
    assert b"data:" not in received
    assert (await stack.client.job(job_id))["status"] == "complete"
