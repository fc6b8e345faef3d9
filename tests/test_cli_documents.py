"""`rag-async ingest` and `rag-async documents` against the real stack, run as processes."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from rag_async.local.valkey import EmbeddedValkey
from tests.conftest import Stack, make_settings, running_stack
from tests.support.documents import add_document
from tests.test_cli import MOMENT, cli, no_traceback
from tests.test_documents import make_pdf


@pytest.fixture
async def stack(valkey: EmbeddedValkey, tmp_path: Path, llm: Any) -> AsyncIterator[Stack]:
    """The stack with small chunks, so that each page of a PDF is a passage of its own."""
    settings = make_settings(
        valkey,
        tmp_path,
        llm_base_url=llm.base_url,
        llm_api_key="test-key",
        chunk_tokens=20,
        chunk_overlap=4,
    )
    async with running_stack(settings) as running:
        yield running


def _folder(root: Path) -> Path:
    folder = root / "handbook"
    files = {
        "tea.md": "# Tea\n\nGreen tea brews at 80 degrees for two minutes.\n",
        "guide/kettle.md": "# Kettle\n\nThe zorblaxian kettle hums when fed quince juice.\n",
        "drafts/plan.md": "# Plan\n\nA draft nobody should cite.\n",
        ".git/notes.md": "# Hidden\n\nInside a hidden folder.\n",
        ".draft.md": "# Hidden file\n",
    }
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    for n in range(7):
        (folder / f"photo{n}.jpg").write_bytes(b"\xff\xd8 not text")
    (folder / "guide" / "book.pdf").write_bytes(
        make_pdf(["Front page.", "The capybara sleeps by the river."], "Rivers")
    )
    return folder


async def test_ingest_names_sources_relative_to_what_was_named(
    stack: Stack, tmp_path: Path
) -> None:
    folder = _folder(tmp_path)
    single = tmp_path / "elsewhere" / "loose.md"
    single.parent.mkdir()
    single.write_text("# Loose\n\nA loose note about walnuts.\n")

    result = await cli(stack, "ingest", str(folder), str(single), "--exclude", "drafts/*")

    assert result.returncode == 0, result.stdout + result.stderr
    assert re.fullmatch(r"4 of 4 documents ingested \(\d+ chunks\)\n", result.stdout)
    listed = await stack.client.documents()
    # Inside the folder named, the path from it; a file named itself, its name.
    sources = {d["source"] for d in listed}
    assert sources == {"tea.md", "guide/kettle.md", "guide/book.pdf", "loose.md"}
    kettle = await cli(stack, "ask", "What does the zorblaxian kettle hum on?")
    assert "  [1] Kettle (guide/kettle.md)" in kettle.stdout, kettle.stdout
    capybara = await cli(stack, "ask", "Where does the capybara sleep?")
    assert "  [1] Rivers (guide/book.pdf, page 2)" in capybara.stdout, capybara.stdout


async def test_ingest_lists_what_it_skipped_and_why(stack: Stack, tmp_path: Path) -> None:
    folder = _folder(tmp_path)

    result = await cli(stack, "ingest", str(folder), "--exclude", "drafts/*", "--include", "*.md")

    assert result.returncode == 0, "files skipped in a folder are notes, not failures"
    assert result.stdout == "2 of 2 documents ingested (2 chunks)\n"
    skipped = result.stderr.splitlines()
    unsupported = "unsupported type .jpg (text, Markdown, HTML and PDF are)"
    assert skipped == [
        f"skipped {folder / '.git'}/: hidden folder",
        f"skipped {folder / '.draft.md'}: hidden file",
        *(f"skipped {folder / f'photo{n}.jpg'}: {unsupported}" for n in range(5)),
        f"skipped 2 more files: {unsupported}",
        f"skipped {folder / 'drafts' / 'plan.md'}: excluded by --exclude drafts/*",
        f"skipped {folder / 'guide' / 'book.pdf'}: matches no --include (*.md)",
    ], result.stderr

    missing = await cli(stack, "ingest", str(folder / "tea.md"), str(tmp_path / "nothing.md"))
    assert missing.returncode == 1, "a path named but not ingested is an error"
    assert f"skipped {tmp_path / 'nothing.md'}: no such file or folder" in missing.stderr


async def test_ingesting_unchanged_files_says_unchanged(stack: Stack, tmp_path: Path) -> None:
    folder = _folder(tmp_path)
    first = await cli(stack, "ingest", str(folder), "--include", "*.md", "--exclude", "drafts/*")
    assert first.stdout == "2 of 2 documents ingested (2 chunks)\n", first.stderr

    again = await cli(stack, "ingest", str(folder), "--include", "*.md", "--exclude", "drafts/*")
    (folder / "tea.md").write_text("# Tea\n\nBlack tea wants boiling water.\n")
    changed = await cli(stack, "ingest", str(folder), "--include", "*.md", "--exclude", "drafts/*")

    assert again.returncode == 0 and again.stdout == "2 of 2 documents ingested: 2 unchanged\n"
    assert changed.stdout == (
        "2 of 2 documents ingested: 1 new or changed (1 chunk), 1 unchanged\n"
    ), changed.stdout
    assert len(await stack.client.documents()) == 2, "replaced, not added"


async def test_documents_list_has_a_source_column_and_show_reads_well(
    stack: Stack, tmp_path: Path
) -> None:
    folder = _folder(tmp_path)
    await cli(stack, "ingest", str(folder / "guide"))
    documents = {d["source"]: d for d in await stack.client.documents()}

    listed = await cli(stack, "documents", "list")
    shown = await cli(stack, "documents", "show", documents["book.pdf"]["document_id"])

    assert listed.returncode == 0, listed.stderr
    header, *rows, count = listed.stdout.splitlines()
    assert header.split() == ["ID", "STATUS", "CHUNKS", "INGESTED", "SOURCE", "TITLE"]
    assert count == "2 documents"
    kettle = next(row for row in rows if documents["kettle.md"]["document_id"] in row)
    when = r"(just now|\d+ s ago)"
    assert re.fullmatch(rf"\w{{24}} +indexed +1 +{when} +kettle\.md +Kettle", kettle)

    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[:5] == [
        f"id: {documents['book.pdf']['document_id']}",
        "title: Rivers",
        "source: book.pdf",
        "format: pdf",
        "collection: default",
    ]
    assert re.search(r"^status: indexed, \d+ chunks?$", shown.stdout, re.M), shown.stdout
    assert re.search(r"^size: \d+ bytes$", shown.stdout, re.M), shown.stdout
    assert re.search(rf"^ingested: {MOMENT}$", shown.stdout, re.M), shown.stdout
    assert all(re.fullmatch(r"[a-z ]+: \S.*", line) for line in lines), "no empty fields"
    assert "None" not in shown.stdout

    await cli(stack, "ingest", str(folder / "tea.md"), "--collection", "zoo")
    markup = await add_document(stack.client, "Plain.", title="[link=http://evil]x[/link]")
    await stack.client.answer(markup["job_id"])
    both = (await cli(stack, "documents", "list")).stdout.splitlines()
    zoo = (await cli(stack, "documents", "list", "--collection", "zoo")).stdout.splitlines()
    assert both[0].split()[3] == "COLLECTION", "told apart once there are several"
    assert both[-1] == "4 documents" and zoo[-1] == "1 document"
    assert any(line.endswith(" [link=http://evil]x[/link]") for line in both), "not markup"
    assert "COLLECTION" not in zoo[0] and "tea.md" in zoo[1]

    missing = await cli(stack, "documents", "show", "nope")
    assert missing.returncode == 1 and "no document 'nope'" in missing.stderr
    no_traceback(missing)


async def test_ingest_prints_no_control_sequences_of_file_names(
    stack: Stack, tmp_path: Path
) -> None:
    """A file's name is printed too (skipped, failed): it could carry an escape."""
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "evil\x1b]0;owned\x07.png").write_bytes(b"x")
    (folder / "ok.md").write_text("# OK\n\nFine.\n")

    result = await cli(stack, "ingest", str(folder))

    assert result.returncode == 0, result.stderr
    # The whole sequence goes, its text with it.
    assert f"skipped {folder / 'evil.png'}: unsupported type .png" in result.stderr
    assert not set(result.stdout + result.stderr) & {"\x1b", "\x07"}
    shown = await cli(stack, "ask", "--json", "fine?")
    assert json.loads(shown.stdout)["status"] == "complete"


async def test_a_failed_file_is_named_once(stack: Stack, tmp_path: Path) -> None:
    empty = tmp_path / "notes" / "empty.txt"
    empty.parent.mkdir()
    empty.write_text("")

    result = await cli(stack, "ingest", str(empty))

    assert result.returncode == 1
    assert f"failed: {empty}: the file is empty\n" in result.stderr, result.stderr
