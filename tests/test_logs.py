"""One log format: with RAG_LOG_JSON=true every line a process writes is a JSON object, from
our code and from the libraries (uvicorn, arq) alike, and every line of a job carries the
job's id (with its request id and attempt once the lifecycle has read the record). The API
echoes X-Request-ID. Real processes (`rag-async worker`, `rag-async api`), real Valkey, the
test LLM server.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from rag_async.client.api import RagClient
from rag_async.config import Settings
from rag_async.local.valkey import free_port
from tests.conftest import SAMPLE_DOCUMENT, cli_env, rag_async_command, running_api
from tests.support.documents import add_document
from tests.support.openai_server import OpenAIApp
from tests.support.processes import Proc

pytestmark = pytest.mark.timeout(120)


def json_lines(text: str) -> list[dict[str, Any]]:
    """Every line of `text` as JSON; a line that is not fails the test, quoted."""
    lines = []
    for line in text.splitlines():
        try:
            lines.append(json.loads(line))
        except ValueError:
            raise AssertionError(f"a line that is not JSON: {line!r}") from None
    return lines


async def finish(client: RagClient, job_id: str) -> str:
    events = [event async for event in client.follow(job_id)]
    return events[-1].type


async def test_every_worker_line_is_json_and_a_jobs_lines_carry_its_ids(
    settings: Settings, llm: OpenAIApp, tmp_path: Path
) -> None:
    env = cli_env(
        settings,
        RAG_LOG_JSON="true",
        RAG_LOG_LEVEL="DEBUG",  # arq's own lines of a job too
        RAG_DATA_DIR=str(tmp_path / "worker"),
    )
    worker = Proc("worker", rag_async_command("worker"), env, tmp_path)
    try:
        await worker.async_wait_for('"worker ready"')
        async with running_api(settings) as base_url, RagClient(base_url) as client:
            answered = (await client.ask("tea?"))["job_id"]
            assert await finish(client, answered) == "done"
            llm.fail_next("400")
            failed = (await client.ask("tea?"))["job_id"]
            assert await finish(client, failed) == "error"
            added = await add_document(client, SAMPLE_DOCUMENT, title="Tea", source="tea.md")
            assert await finish(client, added["job_id"]) == "done"
            deleted = (await client.delete_document(added["document_id"]))["job_id"]
            assert await finish(client, deleted) == "done"
        assert await worker.async_terminate() == 0, worker.describe()
        logged = worker.stderr()  # to the last line: its farewell is JSON too
    finally:
        llm.config.faults.clear()
        worker.cleanup()

    lines = json_lines(logged)
    assert lines[-1]["event"] == "worker stopped", lines[-1]
    assert {line.get("logger") for line in lines} >= {"arq.worker"}, "arq's lines are JSON too"
    jobs = {answered: "answer", failed: "answer", added["job_id"]: "ingest", deleted: "delete"}
    for job_id in jobs:
        mine = [line for line in lines if job_id in json.dumps(line)]
        # arq's own start and end lines, and ours: each with the id as a field.
        assert len(mine) >= 3, (job_id, mine)
        assert all(line.get("job_id") == job_id for line in mine), mine
        ours = [line for line in mine if "logger" not in line]
        assert ours and all(line["attempt"] == 1 and line["request_id"] for line in ours), ours
    events = {line["event"] for line in lines if line.get("job_id") == failed}
    assert "job failed" in events, events


async def test_at_info_a_job_logs_one_line_and_the_worker_starts_once(
    settings: Settings, tmp_path: Path
) -> None:
    """The default log reads like a list of what happened: a line per job (ours, with its kind
    and time), arq's start-up lines once although a process runs an arq worker per queue."""
    env = cli_env(settings, RAG_LOG_LEVEL="INFO", RAG_DATA_DIR=str(tmp_path / "worker"))
    worker = Proc("worker", rag_async_command("worker"), env, tmp_path)
    try:
        await worker.async_wait_for("worker ready")
        async with running_api(settings) as base_url, RagClient(base_url) as client:
            added = await add_document(client, SAMPLE_DOCUMENT, title="Tea", source="tea.md")
            assert await finish(client, added["job_id"]) == "done"
            answered = (await client.ask("tea?"))["job_id"]
            assert await finish(client, answered) == "done"
        assert await worker.async_terminate() == 0, worker.describe()
        logged = worker.stderr()
    finally:
        worker.cleanup()

    assert logged.count("Starting worker") == 1, logged
    assert logged.count("redis_version=") <= 1, logged
    for job_id in (added["job_id"], answered):
        mine = [line for line in logged.splitlines() if job_id in line]
        assert len(mine) == 1 and "job complete" in mine[0], mine


async def test_the_apis_lines_are_json_uvicorns_included(
    settings: Settings, tmp_path: Path
) -> None:
    port = free_port()
    env = cli_env(settings, RAG_LOG_JSON="true", RAG_PORT=str(port))
    api = Proc("api", rag_async_command("api"), env, tmp_path)
    try:
        await api.async_wait_for("Uvicorn running")
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            assert (await http.get("/healthz")).status_code == 200
        await api.async_terminate()  # uvicorn ends by raising the signal again: no status
    finally:
        api.cleanup()
    lines = json_lines(api.stderr())
    uvicorn = [line for line in lines if str(line.get("logger", "")).startswith("uvicorn")]
    assert any("Uvicorn running" in line["event"] for line in uvicorn), lines
    assert all(line["level"] and line["timestamp"] for line in lines)


async def test_the_api_echoes_a_request_id_or_gives_one(settings: Settings) -> None:
    async with running_api(settings) as base_url, httpx.AsyncClient(base_url=base_url) as http:
        given = await http.get("/healthz", headers={"X-Request-ID": "req-42"})
        none = await http.get("/healthz")
        odd = await http.get("/healthz", headers={"X-Request-ID": "x y" * 100})
        refused = await http.get("/jobs/nope", headers={"X-Request-ID": "req-43"})
    assert given.headers["x-request-id"] == "req-42"
    assert refused.status_code == 404 and refused.headers["x-request-id"] == "req-43"
    for response in (none, odd):
        assert len(response.headers["x-request-id"]) == 12, response.headers
    assert none.headers["x-request-id"] != odd.headers["x-request-id"]
