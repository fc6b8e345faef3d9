"""The real commands as separate processes: `rag-async up`, `rag-async worker` (two of them on
one queue), `rag-async ingest` and the arq CLI, each stopped the way an operator stops it."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import stat
import subprocess
import time
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis import Redis
from redis.exceptions import AuthenticationError

from rag_async.client.api import RagClient
from rag_async.config import Settings
from rag_async.local.demo_corpus import DEMO_QUESTION
from rag_async.local.valkey import EmbeddedValkey, free_port
from tests.conftest import (
    Stack,
    cli_env,
    make_settings,
    rag_async_command,
    run_cli,
    running_api,
)
from tests.support.documents import add_document
from tests.support.processes import Proc, bare_env, console_script, started


def _accepts_connections(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _ask_cli(env: Mapping[str, str], cwd: Path) -> str:
    result = subprocess.run(
        [*console_script("rag-async"), "ask", DEMO_QUESTION],
        env=dict(env),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def _assert_cited_answer_with_sources(output: str) -> None:
    answer, _, listing = output.strip().partition("\n\nSources:\n")
    assert re.search(r"\[\d+\]", answer), output  # cited: which sources it quotes is its own
    assert re.search(r"^\s+\[1\] .+ \(.+\.md(, passage \d+)?\)$", listing, re.M), output


def _ask_http(base_url: str, question: str) -> dict[str, Any]:
    """Submit over HTTP and poll until the job ends; its final record."""
    with httpx.Client(base_url=base_url, timeout=10) as http:
        response = http.post("/chat", json={"query": question})
        assert response.status_code == 202, response.text
        job_id = response.json()["job_id"]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            view: dict[str, Any] = http.get(f"/jobs/{job_id}").json()
            if view["status"] in ("complete", "failed", "cancelled"):
                return view
            time.sleep(0.05)
    pytest.fail(f"job {job_id} did not finish in 30 s")


@pytest.mark.timeout(90)
def test_up_answers_the_demo_question_stops_cleanly_and_persists(tmp_path: Path) -> None:
    port = free_port()
    env = bare_env(RAG_PORT=str(port), RAG_LOG_LEVEL="INFO")
    base_url = f"http://127.0.0.1:{port}"
    data = tmp_path / ".rag-async"
    up_command = [*console_script("rag-async"), "up"]

    with started("up-1", up_command, env, tmp_path) as up:
        up.wait_for("rag-async is up at", stream="stdout", timeout=60)
        assert f"rag-async is up at {base_url}" in up.stdout()
        assert "ingesting the demo corpus" in up.stderr()

        _assert_cited_answer_with_sources(_ask_cli(env, tmp_path))
        first = _ask_http(base_url, DEMO_QUESTION)
        assert first["status"] == "complete", first
        assert first["providers"]["llm"].startswith("extractive (offline")
        # Offline defaults: hybrid retrieval with the shipped static model, extractive answers.
        assert first["providers"]["retrieval"].startswith("hybrid: lexical-bm25 + wordllama")

        # Everything lives in the data folder of the folder it was started from.
        aof = data / "valkey" / "appendonlydir"
        assert aof.is_dir() and any(aof.glob("*.aof")), sorted(data.rglob("*"))
        assert (data / "qdrant").is_dir(), sorted(data.rglob("*"))
        marker = data / "demo-corpus-ingested"
        assert marker.exists()
        marker_written = marker.stat().st_mtime_ns

        valkey_port = _valkey_port(up)
        assert _accepts_connections(valkey_port)
        password = (data / "valkey" / "password").read_text()

        assert up.terminate(timeout=20) == 0, up.describe()
        assert not _accepts_connections(valkey_port), "valkey-server outlived `rag-async up`"
        assert not _accepts_connections(port), "the API outlived `rag-async up`"
        assert not up.group_alive(), "a child of `rag-async up` was left running"

    # Again in the same folder: no second ingestion, and the data is still there.
    with started("up-2", up_command, env, tmp_path) as up:
        up.wait_for("rag-async is up at", stream="stdout", timeout=60)
        assert "ingesting the demo corpus" not in up.stderr(), up.describe()
        assert marker.stat().st_mtime_ns == marker_written
        assert (data / "valkey" / "password").read_text() == password, "kept, not made anew"

        # The first run's job came back from the AOF...
        with httpx.Client(base_url=base_url, timeout=10) as http:
            again = http.get(f"/jobs/{first['job_id']}").json()
        assert again["status"] == "complete" and again["answer"] == first["answer"], again
        # ...and the chunks from the embedded Qdrant on disk, since nothing was re-ingested.
        _assert_cited_answer_with_sources(_ask_cli(env, tmp_path))
        assert _ask_http(base_url, DEMO_QUESTION)["sources"] == first["sources"]

        assert up.terminate(timeout=20) == 0, up.describe()
        assert not up.group_alive()


def _valkey_port(up: Proc) -> int:
    """The embedded Valkey's port, from the line `up` logs (its URL, password redacted)."""
    found = re.search(r"url=redis://\*\*\*@127\.0\.0\.1:(\d+)/0", up.stderr())
    assert found, up.describe()
    return int(found.group(1))


@pytest.mark.timeout(90)
def test_up_keeps_its_data_private_and_its_valkey_behind_a_password(tmp_path: Path) -> None:
    port = free_port()
    env = bare_env(RAG_PORT=str(port), RAG_LOG_LEVEL="INFO", RAG_VALKEY_MAXMEMORY="64mb")
    data = tmp_path / ".rag-async"
    with started("up", [*console_script("rag-async"), "up"], env, tmp_path) as up:
        up.wait_for("rag-async is up at", stream="stdout", timeout=60)
        assert stat.S_IMODE(data.stat().st_mode) == 0o700, "only its owner may list it"
        assert stat.S_IMODE((data / "valkey").stat().st_mode) == 0o700
        secret = data / "valkey" / "password"
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600
        password = secret.read_text().strip()
        assert len(password) >= 32, "made up at random"
        assert password not in up.stdout() + up.stderr(), "never logged"

        valkey_port = _valkey_port(up)
        with (
            Redis("127.0.0.1", valkey_port, socket_timeout=5) as anonymous,
            pytest.raises(AuthenticationError, match="Authentication required"),
        ):
            anonymous.ping()  # NOAUTH
        with Redis("127.0.0.1", valkey_port, password=password, decode_responses=True) as valkey:
            config = valkey.config_get("maxmemory", "maxmemory-policy", "bind")
            valkey_pid = valkey.info("server")["process_id"]
        # Writes beyond the limit fail (and the API says so) rather than evict a job.
        assert config == {
            "maxmemory": str(64 * 1024 * 1024),
            "maxmemory-policy": "noeviction",
            "bind": "127.0.0.1",
        }
        command_line = Path(f"/proc/{valkey_pid}/cmdline")
        if command_line.exists():  # Linux: what `ps` shows any user
            assert password.encode() not in command_line.read_bytes()

        answer = _ask_http(f"http://127.0.0.1:{port}", DEMO_QUESTION)
        assert answer["status"] == "complete" and answer["sources"], answer
        assert up.terminate(timeout=20) == 0, up.describe()


@pytest.mark.timeout(120)
async def test_up_is_up_once_the_demo_corpus_is_searchable_even_if_the_worker_dies(
    tmp_path: Path,
) -> None:
    port = free_port()
    # The demo jobs wait in the queue (the documents worker polls every 30 s, and is not
    # nudged) long enough for the worker to be killed under them; one poll of the next worker
    # takes all six.
    env = bare_env(
        RAG_PORT=str(port),
        RAG_LOG_LEVEL="INFO",
        RAG_WORKER_NUDGE="false",
        RAG_WORKER_DOCUMENT_POLL_DELAY="30",
        RAG_WORKER_MAX_DOCUMENTS="8",
    )
    with started("up", [*console_script("rag-async"), "up"], env, tmp_path) as up:
        await up.async_wait_for("ingesting the demo corpus")
        assert "rag-async is up" not in up.stdout(), up.describe()
        found = re.search(r"worker ready .*pid=(\d+)", up.stderr())
        assert found, up.describe()
        os.kill(int(found.group(1)), signal.SIGKILL)

        await up.async_wait_for("rag-async is up at", stream="stdout", within=60)
        # At once: up means a demo question finds its sources.
        async with RagClient(f"http://127.0.0.1:{port}") as client:
            accepted = await client.ask(DEMO_QUESTION)
            events = [event async for event in client.follow(accepted["job_id"])]
        assert events[-1].type == "done", up.describe()
        sources = next(event.data["sources"] for event in events if event.type == "sources")
        assert sources, events
        assert "restarting" in up.stderr() and "child=worker" in up.stderr(), up.describe()
        assert (tmp_path / ".rag-async" / "demo-corpus-ingested").exists()
        assert await up.async_terminate() == 0, up.describe()


@pytest.mark.timeout(90)
async def test_two_worker_processes_share_one_queue(
    settings: Settings, llm: Any, tmp_path: Path
) -> None:
    llm.config.ttft, llm.config.tokens, llm.config.tokens_per_second = 0.5, 5, 0
    # Few jobs per process, so that one process cannot take the whole batch by itself.
    workers = [
        Proc(
            f"worker-{n}",
            rag_async_command("worker"),
            cli_env(settings, RAG_DATA_DIR=str(tmp_path / f"w{n}"), RAG_WORKER_MAX_JOBS="4"),
            tmp_path,
        )
        for n in (1, 2)
    ]
    try:
        for worker in workers:
            await worker.async_wait_for("worker ready")
        async with running_api(settings) as base_url, RagClient(base_url) as client:
            accepted = await asyncio.gather(*(client.ask(f"question {i}") for i in range(20)))

            async def answer(job_id: str) -> dict[str, Any]:
                events = [event async for event in client.follow(job_id)]
                assert events[-1].type == "done", events[-1]
                return await client.job(job_id)

            views = await asyncio.gather(*(answer(a["job_id"]) for a in accepted))
        assert all(view["status"] == "complete" for view in views)
        hostname = socket.gethostname()
        answered_by = Counter(view["worker"] for view in views)
        expected = {f"{hostname}:{worker.pid}" for worker in workers}
        assert set(answered_by) == expected, (answered_by, expected)
        assert sum(answered_by.values()) == 20

        codes = await asyncio.gather(*(worker.async_terminate() for worker in workers))
        assert codes == [0, 0], [worker.describe() for worker in workers]
    finally:
        for worker in workers:
            worker.cleanup()


SEARCHABLE = {
    "alpha.md": "# Alpha\n\nAlpha notes talk about the weather in spring and summer.\n",
    "sub/beta.md": "# Beta\n\nThe zorblaxian reactor hums quietly when fed quince juice.\n",
    "gamma.md": "# Gamma\n\nGamma notes list the shops that sell bread on Sundays.\n",
}


@pytest.mark.timeout(90)
async def test_ingest_command_adds_a_folder(stack: Stack, tmp_path: Path) -> None:
    folder = tmp_path / "docs"
    for name, text in SEARCHABLE.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    scan = tmp_path / "scan.docx"
    scan.write_bytes(b"%PDF-1.4 not a text file")

    env = cli_env(stack.settings, RAG_API_URL=stack.base_url)
    # A blocking wait in a thread: the API and the worker run in this test's event loop.
    result = await asyncio.to_thread(run_cli, "ingest", str(folder), str(scan), env=env)

    assert "3 of 3 documents ingested" in result.stdout, result.stdout + result.stderr
    assert f"skipped {scan}: unsupported type" in result.stderr, result.stderr
    assert result.returncode == 1, "a named file that was not ingested makes the exit code 1"

    job_id = (await stack.client.ask("What is the zorblaxian reactor fed?"))["job_id"]
    events = [event async for event in stack.client.follow(job_id)]
    assert events[-1].type == "done", events[-1]
    sources = next(event.data["sources"] for event in events if event.type == "sources")
    assert sources[0]["n"] == 1
    assert sources[0]["title"] == "Beta"  # the Markdown file's first heading
    assert sources[0]["source"] == "sub/beta.md"  # relative to the folder named
    assert "quince juice" in sources[0]["text"]


@pytest.mark.timeout(90)
async def test_arq_cli_runs_the_worker(settings: Settings, tmp_path: Path) -> None:
    worker = Proc(
        "arq",
        [*console_script("arq"), "workers.settings.WorkerSettings"],
        cli_env(settings, RAG_DATA_DIR=str(tmp_path / "arq-worker")),
        tmp_path,
    )
    try:
        await worker.async_wait_for("worker ready")
        async with running_api(settings) as base_url, RagClient(base_url) as client:
            job_id = (await client.ask("anyone there?"))["job_id"]
            events = [event async for event in client.follow(job_id)]
            assert events[-1].type == "done", events[-1]
            view = await client.job(job_id)
        assert view["worker"] == f"{socket.gethostname()}:{worker.pid}"
        assert await worker.async_terminate() == 0, worker.describe()
    finally:
        worker.cleanup()


def test_arq_cli_without_a_redis_url_says_so(tmp_path: Path) -> None:
    result = subprocess.run(
        [*console_script("arq"), "workers.settings.WorkerSettings"],
        env=bare_env(),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode != 0
    assert "RAG_REDIS_URL is not set" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr, result.stderr


@pytest.mark.timeout(60)
async def test_a_worker_can_serve_one_queue_only(settings: Settings, tmp_path: Path) -> None:
    command = rag_async_command("worker", "--queue", "documents")
    with started("documents-only", command, cli_env(settings), tmp_path) as worker:
        await worker.async_wait_for("worker ready")
        async with running_api(settings) as base_url, RagClient(base_url) as client:
            question = await client.ask("is anyone answering?")
            document = await add_document(client, "Tea is a drink.", title="Tea")
            ingested = await asyncio.wait_for(client.answer(document["job_id"]), 30)
            assert ingested.final is not None and ingested.final.type == "done", ingested
            assert (await client.job(question["job_id"]))["status"] == "queued"
        assert await worker.async_terminate() == 0


def test_an_unknown_queue_is_refused(settings: Settings) -> None:
    result = run_cli("worker", "--queue", "emails", env=cli_env(settings))
    assert result.returncode == 2
    assert "unknown queue 'emails': choose from questions, documents" in result.stderr


def test_up_on_a_busy_port_says_so_and_how_to_pick_another(
    valkey: EmbeddedValkey, tmp_path: Path
) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        env = cli_env(make_settings(valkey, tmp_path), RAG_PORT=str(port))
        env.pop("RAG_REDIS_URL")  # up's own Valkey, as a newcomer runs it
        result = run_cli("up", env=env, timeout=30)
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert f"rag-async up --port {port + 1}" in result.stderr
    assert f"--api-url localhost:{port + 1}" in result.stderr
    assert "Traceback" not in result.stderr
