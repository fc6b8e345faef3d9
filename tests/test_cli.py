"""The `rag-async` command against the real stack (Valkey, the app under uvicorn, a worker, the
OpenAI-compatible test server), run as a user runs it: a separate process, its output read."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from rag_async.client.cli.render import stats_lines
from rag_async.config import Settings
from rag_async.local.valkey import EmbeddedValkey, free_port
from rag_async.store.keys import Keys
from tests.conftest import (
    REPO,
    Stack,
    cli_env,
    ingest,
    make_settings,
    rag_async_command,
    run_cli,
    running_stack,
)
from tests.support.documents import add_document
from tests.support.openai_server import OpenAIApp, expected_answer

JOB_ID = re.compile(r"^[0-9a-f]{32}$")
MOMENT = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \((just now|\d+ s ago)\)"


async def cli(stack: Stack, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`rag-async ARGS` talking to the stack (through RAG_API_URL); in a thread, because the
    API and the worker run in this test's event loop."""
    environment = cli_env(stack.settings, **{"RAG_API_URL": stack.base_url, **env})
    return await asyncio.to_thread(run_cli, *args, env=environment)


def no_traceback(result: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in result.stderr + result.stdout, result.stderr


# ---- ask -----------------------------------------------------------------------------------


async def test_ask_streams_the_answer_then_its_sources_named_like_the_page(stack: Stack) -> None:
    await ingest(stack)  # "Tea", from Tea.md: "# Tea" then "## Brewing"

    result = await cli(stack, "ask", "How long does green tea brew?")

    assert result.returncode == 0, result.stderr
    answer, sources = result.stdout.split("\n\nSources:\n")
    assert answer == expected_answer(12)
    # Title › Section (file): the heading path after the title, as the web page shows it.
    assert sorted(sources.splitlines()) == ["  [1] Tea › Brewing (Tea.md)", "  [2] Tea (Tea.md)"]
    assert result.stderr == "", "nothing but the answer: no spinner off a terminal"


async def test_ask_with_the_offline_answerer_tells_passages_apart_and_what_they_are(
    valkey: EmbeddedValkey, tmp_path: Path
) -> None:
    settings = make_settings(valkey, tmp_path)  # no LLM: the extractive answerer
    steps = " ".join(
        f"Step {i}: rinse the descaled kettle and boil fresh water." for i in range(60)
    )
    manual = f"# Kettle\n\n## Descaling\n\nDescale the kettle with vinegar. {steps}\n"
    async with running_stack(settings) as stack:
        await ingest(stack, manual, title="Kettle")

        # Two passages of one section: the same place, told apart by their numbers.
        result = await cli(stack, "ask", "How do I descale the kettle?")
        assert result.returncode == 0, result.stderr
        answer, sources = result.stdout.split("\n\nSources:\n")
        lines = sources.splitlines()
        places = {line.split("] ", 1)[1] for line in lines}
        assert len(lines) > 1 and len(places) == len(lines), lines
        assert all(
            re.fullmatch(r"  \[\d\] Kettle › Descaling \(Kettle\.md, passage \d+\)", line)
            for line in lines
        ), lines

        # Nothing relevant: the passages listed are the closest ones, not the answer's sources.
        result = await cli(stack, "ask", "Who painted the kettle in Paris in 1998?")
        assert result.returncode == 0, result.stderr
        answer, closest = result.stdout.split(
            "\n\nClosest passages (the answer cites none of them):\n"
        )
        assert answer.startswith("Nothing relevant to that was found"), answer
        assert "Sources:" not in result.stdout and closest.startswith("  [1] Kettle")


async def test_ask_json_gives_the_final_answer_and_searches_one_collection(
    stack: Stack,
) -> None:
    title = "Plums\x1b]0;owned\x07 \x9b2Jguide"
    accepted = await add_document(
        stack.client, "# Plums\n\nThe orchard grows plums.", title=title, collection="zoo"
    )
    assert (await stack.client.answer(accepted["job_id"])).final.type == "done"  # type: ignore[union-attr]

    result = await cli(stack, "ask", "--collection", "zoo", "--json", "What grows in the orchard?")
    elsewhere = await cli(stack, "ask", "--json", "What grows in the orchard?")

    assert result.returncode == 0, result.stderr
    # No raw ESC, BEL or C1 control is printed (the server drops them from what it shows).
    assert not set(result.stdout) & {"\x1b", "\x07", "\x9b"}, result.stdout
    answer = json.loads(result.stdout)
    assert JOB_ID.match(answer["job_id"])
    assert answer["status"] == "complete" and answer["error"] is None
    assert (answer["query"], answer["collection"]) == ("What grows in the orchard?", "zoo")
    assert answer["answer"] == expected_answer(12)
    assert [s["title"] for s in answer["sources"]] == ["Plums guide"]
    assert answer["sources"][0]["collection"] == "zoo"
    assert answer["timings"]["total"] > 0 and answer["providers"]["llm"]
    view = await stack.client.job(answer["job_id"])
    assert view["status"] == "complete" and view["answer"] == answer["answer"]

    assert elsewhere.returncode == 0, elsewhere.stderr
    assert json.loads(elsewhere.stdout)["sources"] == [], "collections do not mix"
    assert json.loads(elsewhere.stdout)["collection"] == "default", "the one searched"


async def _job_of_question(settings: Settings) -> str:
    """The id of the one job the test's key prefix holds, once it exists."""
    redis = Redis.from_url(settings.redis_url or "")
    pattern = Keys(settings.key_prefix).job("*")
    try:
        for _ in range(200):
            keys = [key.decode() async for key in redis.scan_iter(match=pattern)]
            if keys:
                return keys[0].rsplit(":", 1)[-1]
            await asyncio.sleep(0.05)
    finally:
        await redis.aclose()
    pytest.fail("no job appeared")


async def _running_question(stack: Stack) -> str:
    job_id = await _job_of_question(stack.settings)
    for _ in range(200):
        if (await stack.client.job(job_id))["status"] == "in_progress":
            return job_id
        await asyncio.sleep(0.05)
    pytest.fail(f"job {job_id} never started")


def _start_ask(stack: Stack, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        rag_async_command("ask", *args),
        env=cli_env(stack.settings, RAG_API_URL=stack.base_url),
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.timeout(90)
async def test_cancel_stops_a_running_question_and_its_ask_exits_non_zero(
    stack: Stack, llm: OpenAIApp
) -> None:
    llm.config.ttft = 30.0  # the answer would take half a minute to start
    asking = _start_ask(stack, "Is anyone there?")
    try:
        job_id = await _running_question(stack)

        cancelled = await cli(stack, "cancel", job_id)
        stdout, stderr = await asyncio.to_thread(asking.communicate, timeout=30)
    finally:
        asking.kill()
    assert cancelled.returncode == 0, cancelled.stderr
    assert cancelled.stdout == f"cancelled {job_id}\n", "it waits until the worker stopped it"
    assert (await stack.client.job(job_id))["status"] == "cancelled"
    assert asking.returncode == 3, (stdout, stderr)
    assert "cancelled: cancelled on request" in stderr

    again = await cli(stack, "cancel", job_id)
    assert again.returncode == 1
    assert f"job {job_id} has already ended: cancelled" in again.stderr
    not_an_id = await cli(stack, "cancel", "../stats")
    assert not_an_id.returncode == 2 and "is not a job id" in not_an_id.stderr
    no_traceback(not_an_id)


@pytest.mark.timeout(60)
async def test_ctrl_c_cancels_the_question(stack: Stack, llm: OpenAIApp) -> None:
    llm.config.ttft = 30.0
    asking = _start_ask(stack, "Is anyone there?")
    try:
        job_id = await _running_question(stack)
        asking.send_signal(signal.SIGINT)
        _, stderr = await asyncio.to_thread(asking.communicate, timeout=30)
    finally:
        asking.kill()
    assert asking.returncode == 130, stderr
    assert f"cancelled job {job_id}" in stderr
    assert "Traceback" not in stderr, stderr
    for _ in range(100):  # a running job stops within a poll of its worker
        if (await stack.client.job(job_id))["status"] == "cancelled":
            break
        await asyncio.sleep(0.1)
    assert (await stack.client.job(job_id))["status"] == "cancelled"


# ---- status, stats ---------------------------------------------------------------------------


async def test_status_shows_a_job_readably_or_as_json(stack: Stack) -> None:
    document_id = await ingest(stack)
    asked = await cli(stack, "ask", "--json", "How long does green tea brew?")
    job_id = json.loads(asked.stdout)["job_id"]

    shown = await cli(stack, "status", job_id)
    as_json = await cli(stack, "status", "--json", job_id)

    assert shown.returncode == 0, shown.stderr
    head, answer, sources = shown.stdout.split("\n\n")
    lines = head.splitlines()
    assert lines[:4] == [
        f"job: {job_id}",
        "kind: answer",
        "status: complete",
        "question: How long does green tea brew?",
    ]
    assert re.search(rf"^created: {MOMENT}$", head, re.M), head
    assert re.search(r"^took: [\d.]+ m?s \(queued [\d.]+ m?s, retrieval [\d.]+ m?s", head, re.M)
    assert re.search(r"^answerer: .+$", head, re.M) and "worker: " in head
    assert not [line for line in lines if line.endswith(":")], "no empty fields"
    assert answer == f"answer:\n{expected_answer(12)}"
    assert sources.startswith("Sources:\n  [1] Tea")
    assert json.loads(as_json.stdout) == await stack.client.job(job_id)

    ingested = (await stack.client.document(document_id))["job_id"]
    ingest_job = await cli(stack, "status", ingested)
    assert json.loads(as_json.stdout)["kind"] == "answer", "the same name as --json"
    assert json.loads(asked.stdout)["collection"] == "default", "as its sources name it"
    assert "kind: ingest\n" in ingest_job.stdout
    assert f"document: {document_id}" in ingest_job.stdout
    assert re.search(r"^chunks: [1-9]", ingest_job.stdout, re.M), ingest_job.stdout

    unknown = await cli(stack, "status", "0" * 32)
    assert unknown.returncode == 1 and "no job 000" in unknown.stderr
    malformed = await cli(stack, "status", "last")
    assert malformed.returncode == 2 and "'last' is not a job id" in malformed.stderr


async def test_stats_tells_the_queue_the_workers_and_failures(stack: Stack) -> None:
    shown = await cli(stack, "stats")
    as_json = await cli(stack, "stats", "--json")

    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0] == "queue: 0 jobs waiting (queued or running: questions 0, documents 0)"
    assert lines[1] == "in flight: 0 jobs"
    assert lines[2] == "workers: 1 alive"
    assert re.fullmatch(r"  \S+:\d+: 0 jobs running, last heard (just now|\d+ s ago)", lines[3])
    assert "recent failures: none" in lines
    figures = json.loads(as_json.stdout)
    assert figures["queue_depth"] == 0 and len(figures["workers"]) == 1


# ---- where the API is ------------------------------------------------------------------------


async def test_api_url_option_wins_over_rag_api_url(stack: Stack) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    host_port = stack.base_url.removeprefix("http://")

    listed = await cli(stack, "documents", "list", "--api-url", host_port, RAG_API_URL=closed)
    refused = await cli(stack, "documents", "list", RAG_API_URL=closed)

    assert listed.returncode == 0, listed.stderr
    assert listed.stdout == "0 documents\n"
    assert refused.returncode == 1 and closed in refused.stderr


CLIENT_COMMANDS = [
    ["ask", "tea?"],
    ["status", "0" * 32],
    ["cancel", "0" * 32],
    ["stats"],
    ["ingest", str(REPO / "README.md")],
    ["documents", "list"],
    ["documents", "show", "abc"],
    ["documents", "delete", "abc"],
    ["eval", str(REPO / "benchmarks" / "retrieval_questions.jsonl")],
    ["dlq", "list"],
    ["dlq", "requeue", "0" * 32],
    ["dlq", "purge"],
]


@pytest.mark.parametrize("command", CLIENT_COMMANDS, ids=" ".join)
def test_every_client_command_says_where_it_found_no_api(command: list[str]) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    env = cli_env(Settings(_env_file=None), RAG_API_URL="http://127.0.0.1:9")
    result = run_cli(*command, "--api-url", closed, env=env)
    assert result.returncode == 1
    assert f"cannot reach the API at {closed} (nothing answers there" in result.stderr
    assert "--api-url URL or set RAG_API_URL" in result.stderr, result.stderr
    no_traceback(result)


def test_without_rag_api_url_the_cli_calls_the_local_default() -> None:
    port = free_port()  # RAG_PORT moves the default, as it moves `up`
    result = run_cli("stats", env=cli_env(Settings(_env_file=None), RAG_PORT=str(port)))
    assert f"cannot reach the API at http://127.0.0.1:{port} " in result.stderr, result.stderr


# ---- a closed pipe ---------------------------------------------------------------------------


async def test_a_closed_pipe_ends_a_command_quietly(stack: Stack) -> None:
    """`rag-async documents list | head -1`: the reader has gone before the output comes."""
    await ingest(stack)

    def closed_pipe(*args: str) -> tuple[int, str]:
        process = subprocess.Popen(
            rag_async_command(*args),
            env=cli_env(stack.settings, RAG_API_URL=stack.base_url),
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert process.stdout is not None and process.stderr is not None
        process.stdout.close()
        stderr = process.stderr.read()
        return process.wait(30), stderr

    for args in (("documents", "list"), ("ask", "tea?"), ("stats", "--json"), ("--help",)):
        started = time.monotonic()
        code, stderr = await asyncio.to_thread(closed_pipe, *args)
        assert stderr == "", (args, stderr)
        assert code in (0, 1), (args, code)
        assert time.monotonic() - started < 30


# ---- help ------------------------------------------------------------------------------------


def test_the_version() -> None:
    from importlib.metadata import version

    result = run_cli("--version", env=cli_env(Settings(_env_file=None)))
    assert result.stdout == f"rag-async {version('rag-async')}\n"


def _commands(command: Any, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = [path]
    for name, sub in getattr(command, "commands", {}).items():
        found += _commands(sub, (*path, name))
    return found


WIDE = {"COLUMNS": "200"}


def test_help_names_values_without_type_noise_or_broken_lines() -> None:
    import typer
    from typer.testing import CliRunner

    from rag_async.client.cli import app

    root = typer.main.get_command(app)
    runner = CliRunner()
    paths = _commands(root)
    assert {("ask",), ("status",), ("cancel",), ("stats",), ("documents", "list")} <= set(paths)
    for path in paths:
        result = runner.invoke(app, [*path, "--help"], env=WIDE, prog_name="rag-async")
        assert result.exit_code == 0, (path, result.output)
        assert not re.search(r"<(bool|str|int|float|Path|list)\b", result.output), result.output
        assert "{" not in result.output.splitlines()[1], result.output
        # Each command's summary on one line of its group's list (the terminal is wide).
        command = root
        for name in path:
            command = command.commands[name]  # type: ignore[attr-defined]
        for name, sub in getattr(command, "commands", {}).items():
            summary = " ".join((sub.help or "").split("\n\n")[0].split())
            summary = summary.replace("`", "")
            line = next(
                line for line in result.output.splitlines() if line.strip("│ ").startswith(name)
            )
            assert summary in line, (path, name, line)
    ask = runner.invoke(app, ["ask", "--help"], env=WIDE, prog_name="rag-async").output
    assert "Usage: rag-async ask [OPTIONS] QUESTION" in " ".join(ask.split())
    # As the README says, and as `test_ctrl_c_cancels_the_question` sees it exit.
    assert "130 after Ctrl-C" in " ".join(ask.replace("│", " ").split()), ask
    assert re.search(r"--collection +NAME", ask) and re.search(r"--api-url +URL", ask)


# ---- the dead-letter queue -------------------------------------------------------------------


@pytest.mark.timeout(90)
async def test_dead_letters_through_the_cli(
    valkey: EmbeddedValkey, tmp_path: Path, llm: Any
) -> None:
    from tests.support.openai_server import Fault

    settings = make_settings(
        valkey,
        tmp_path,
        llm_base_url=llm.base_url,
        llm_api_key="test-key",
        job_max_tries=1,
        llm_max_retries=0,
    )
    llm.config.fault = Fault("500")
    try:
        async with running_stack(settings) as stack:
            failed = await cli(stack, "ask", "--json", "tea?")
            job_id = json.loads(failed.stdout)["job_id"]
            listed = await cli(stack, "dlq", "list")
            failures = await cli(stack, "stats")
            llm.config.fault = None
            requeued = await cli(stack, "dlq", "requeue", job_id)
            await stack.client.answer(job_id)
            shown = await cli(stack, "status", job_id)
            purged = await cli(stack, "dlq", "purge")
    finally:
        llm.config.fault = None
    assert failed.returncode == 1
    assert json.loads(failed.stdout)["error"]["code"] == "dead_lettered"
    assert listed.stdout.startswith(f"{job_id}  answer  tries=1  "), listed.stdout
    assert listed.stdout.endswith("\n1 dead letter\n")
    assert "recent failures: 1\n" in failures.stdout and job_id in failures.stdout
    assert requeued.stdout == f"requeued {job_id}\n", requeued.stderr
    assert "status: complete (attempt 2)" in shown.stdout, shown.stdout
    assert purged.stdout == "dropped 0 dead letters\n"


# ---- another program at the API's address ----------------------------------------------------


def test_another_program_on_the_port_is_named_not_its_error_page(tmp_path: Path) -> None:
    """A web server that is not rag-async answers POST /chat with its HTML error page."""
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        result = run_cli("ask", "tea?", "--api-url", url, env=cli_env(Settings(_env_file=None)))
    finally:
        server.shutdown()
        server.server_close()
    assert result.returncode == 1
    assert f"{url}/chat answered HTTP 501 (text/html)" in result.stderr, result.stderr
    assert "not rag-async" in result.stderr and "another program" in result.stderr
    assert "<" not in result.stderr, "none of its HTML"
    no_traceback(result)


def test_stats_tells_the_jobs_waiting_their_turn_and_who_has_the_most() -> None:
    figures = {
        "queue_depth": 4,
        "jobs_in_flight": 4,
        "workers": [],
        "waiting": {
            "questions": {
                "interactive": {"jobs": 3, "oldest_age": 1.25},
                "background": {"jobs": 1, "oldest_age": 0.5},
            },
            "documents": {"interactive": {"jobs": 0, "oldest_age": 0.0}},
        },
        "busiest_keys": {"questions": [{"key": "heavy", "waiting": 3}, {"key": "", "waiting": 1}]},
    }
    lines = stats_lines(figures)
    assert lines[3] == (
        "waiting their turn: questions interactive 3 (oldest 1.2 s), "
        "questions background 1 (oldest 0.5 s)"
    )
    assert lines[4] == "  most waiting, questions: heavy 3, local 1"
    assert not any("waiting their turn" in line for line in stats_lines({"waiting": {}}))
