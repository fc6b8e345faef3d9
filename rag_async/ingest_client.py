"""Client side of ingestion: find files, upload them, follow their jobs with a progress bar."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from pathlib import Path

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from .client import ApiError, RagClient

SUPPORTED_SUFFIXES = frozenset({".txt", ".md", ".markdown", ".text", ".rst"})


def find_documents(paths: Iterable[Path]) -> tuple[list[Path], list[str]]:
    """The supported files under `paths` (folders walked), and a note for each path skipped."""
    found: list[Path] = []
    skipped: list[str] = []
    for path in paths:
        if path.is_dir():
            found += sorted(
                p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in SUPPORTED_SUFFIXES
            )
        elif path.is_file():
            if path.suffix.lower() in SUPPORTED_SUFFIXES:
                found.append(path)
            else:
                skipped.append(f"{path}: unsupported type (text and Markdown for now)")
        else:
            skipped.append(f"{path}: no such file or folder")
    return found, skipped


def read_documents(files: Sequence[Path]) -> tuple[list[tuple[str, str, str]], list[str]]:
    documents: list[tuple[str, str, str]] = []
    failures: list[str] = []
    for file in files:
        try:
            text = file.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            failures.append(f"{file}: not UTF-8 text")
            continue
        except OSError as error:
            failures.append(f"{file}: {error.strerror}")
            continue
        documents.append((file.stem, str(file), text))
    return documents, failures


def ingest_texts(
    api_url: str, documents: Sequence[tuple[str, str, str]], *, show_progress: bool = True
) -> list[str]:
    """Upload (title, source, text) documents and wait for their jobs; returns the failures."""
    return asyncio.run(_ingest(api_url, documents, show_progress))


async def _ingest(
    api_url: str, documents: Sequence[tuple[str, str, str]], show_progress: bool
) -> list[str]:
    failures: list[str] = []
    progress = Progress(
        TextColumn("[bold]ingesting"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("documents"),
        TimeElapsedColumn(),
        disable=not show_progress,
    )
    async with RagClient(api_url) as client:
        with progress:
            task = progress.add_task("ingest", total=len(documents))
            limit = asyncio.Semaphore(16)  # uploads in flight; the workers set the real pace

            async def one(title: str, source: str, text: str) -> None:
                async with limit:
                    try:
                        accepted = await client.add_document(text, title=title, source=source)
                        async for event in client.follow(accepted["job_id"]):
                            if event.type == "error":
                                failures.append(f"{source}: {event.data.get('message')}")
                    except ApiError as error:
                        failures.append(f"{source}: {error.message}")
                    progress.advance(task)

            await asyncio.gather(*(one(*document) for document in documents))
    return failures
