"""`rag-async eval` against the real stack, run as a process: recall@k, MRR@10 and the misses
of a small question file over a small ingested corpus, and bad files told by their line."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from rag_async.client.evaluation.questions import MAX_LINE_BYTES, QuestionFileError, read_questions
from rag_async.config import Settings
from rag_async.local.valkey import free_port
from tests.conftest import Stack, cli_env, ingest, run_cli
from tests.test_cli import cli, no_traceback
from tests.test_search import KETTLE

GARDEN = """# Garden notes

Tomatoes want six hours of sun and deep watering twice a week. Prune the suckers.
"""

QUESTIONS = [
    {"question": "How long does green tea brew?", "expected": "Tea.md"},
    {"question": "How often is the kettle descaled?", "expected": ["Kettle"]},
    # The benchmark's own field name, and a title in another case.
    {"question": "How much sun do tomatoes want?", "pages": ["garden notes"], "evidence": "x"},
    # Answered by the tea page, but only the kettle says "descale".
    {"question": "descale with citric acid", "expected": "Tea.md"},
]


async def _corpus(stack: Stack) -> None:
    await ingest(stack)
    await ingest(stack, KETTLE, title="Kettle")
    await ingest(stack, GARDEN, title="Garden notes")


def _file(tmp_path: Path, lines: list[str] | bytes) -> str:
    path = tmp_path / "questions.jsonl"
    if isinstance(lines, bytes):
        path.write_bytes(lines)
    else:
        path.write_text("\n".join(lines) + "\n")
    return str(path)


async def test_eval_reports_recall_mrr_and_the_misses(stack: Stack, tmp_path: Path) -> None:
    await _corpus(stack)
    path = _file(tmp_path, [json.dumps(q) for q in QUESTIONS] + [""])

    result = await cli(stack, "eval", path, "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["questions"] == 4 and report["top_k"] == 20 and report["errors"] == 0
    assert report["recall"] == {"1": 0.75, "5": 0.75, "10": 0.75, "20": 0.75}
    assert report["mrr@10"] == 0.75
    [miss] = report["misses"]
    assert miss["line"] == 4 and miss["expected"] == ["Tea.md"] and miss["rank"] is None
    assert miss["found"] == ["Kettle.md"] and miss["error"] is None

    text = await cli(stack, "eval", path, "--top-k", "2")
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert lines[:4] == [
        "4 questions, 2 passages each",
        "  recall@1   0.750",
        "  recall@2   0.750",
        "  MRR@10    0.750",
    ]
    assert "  line 4: descale with citric acid" in lines
    assert "    not found; found: Kettle.md" in lines
    assert text.stderr == "", "no progress bar off a terminal"

    # Another collection holds none of them: every question is a miss.
    elsewhere = await cli(stack, "eval", path, "--collection", "empty", "--json")
    assert json.loads(elsewhere.stdout)["recall"]["20"] == 0.0


async def test_a_search_refused_is_the_questions_error_and_exit_1(
    stack: Stack, tmp_path: Path
) -> None:
    await ingest(stack)
    long = {"question": "tea " * 2000, "expected": "Tea.md"}
    path = _file(tmp_path, [json.dumps(QUESTIONS[0]), json.dumps(long)])
    result = await cli(stack, "eval", path, "--json")
    assert result.returncode == 1, result.stderr
    report = json.loads(result.stdout)
    assert report["errors"] == 1 and report["recall"]["1"] == 0.5
    assert "characters long; the limit is 4000" in report["misses"][0]["error"]


BAD_FILES: list[tuple[list[str] | bytes, str]] = [
    (["{not json"], "line 2 is not JSON"),
    (["[1, 2]"], "line 2 is not a JSON object"),
    (['{"expected": "a.md"}'], 'line 2: "question" must be a non-empty string'),
    (['{"question": "tea?"}'], 'line 2: "expected" must name the document'),
    (['{"question": "tea?", "expected": []}'], 'line 2: "expected" must name'),
    (['{"question": "tea?", "expected": 3}'], 'line 2: "expected" must name'),
    (['{"question": "q", "expected": "a", "collection": "*"}'], 'line 2: "collection" must'),
    (['{"question": "\\ud800", "expected": "a"}'], "UTF-8 cannot encode"),
    (b"\xff\xfe{}\n", "line 2 is not UTF-8 text"),
    (b"x" * (MAX_LINE_BYTES + 10), "line 2 is longer than"),
    (["[" * 50_000], "line 2 is not JSON (nested too deep)"),
]


def test_bad_question_files_are_told_by_their_line(tmp_path: Path) -> None:
    good = json.dumps(QUESTIONS[0])
    for content, message in BAD_FILES:
        lines = good.encode() + b"\n" + content if isinstance(content, bytes) else [good, *content]
        with pytest.raises(QuestionFileError) as raised:
            read_questions(Path(_file(tmp_path, lines)))
        assert message in str(raised.value), (message, raised.value)
    for empty in (["", "  "], b""):
        with pytest.raises(QuestionFileError, match="no questions in it"):
            read_questions(Path(_file(tmp_path, empty)))
    for unreadable in (tmp_path / "nowhere.jsonl", tmp_path):
        with pytest.raises(QuestionFileError, match="cannot read it"):
            read_questions(unreadable)


async def test_the_cli_tells_a_bad_file_with_exit_2_before_asking_anything(
    settings: Settings, tmp_path: Path
) -> None:
    # No API runs at RAG_API_URL: the file is refused before any request.
    env = cli_env(settings, RAG_API_URL=f"http://127.0.0.1:{free_port()}")
    good = json.dumps(QUESTIONS[0])
    for content, message in [BAD_FILES[0], BAD_FILES[8]]:
        lines = good.encode() + b"\n" + content if isinstance(content, bytes) else [good, *content]
        result = await asyncio.to_thread(run_cli, "eval", _file(tmp_path, lines), env=env)
        assert result.returncode == 2, result.stderr
        assert message in result.stderr and result.stdout == "", result.stderr
        no_traceback(result)
