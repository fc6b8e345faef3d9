"""Client side of ingestion: find files, upload them, follow their jobs with a progress bar."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Sequence
from fnmatch import fnmatch
from pathlib import Path

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from .client import ApiError, RagClient
from .parsing import FORMATS

SUPPORTED_SUFFIXES = frozenset(FORMATS)
UPLOADS_IN_FLIGHT = 16  # the workers set the real pace; this only keeps them fed


def find_documents(
    paths: Iterable[Path],
    *,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
) -> tuple[list[Path], list[str]]:
    """The supported files under `paths` (folders walked), and a note for each path skipped.

    In folders, a file is taken if it matches one of the `include` globs (when any are given)
    and none of the `exclude` globs; a glob matches the file's name or its path relative to
    the folder (`*.md`, `drafts/*`). Files named on the command line are always taken.
    """
    found: list[Path] = []
    skipped: list[str] = []
    for path in paths:
        if path.is_dir():
            for file in sorted(p for p in path.rglob("*") if p.is_file()):
                relative = file.relative_to(path).as_posix()
                if file.suffix.lower() not in SUPPORTED_SUFFIXES:
                    continue
                if include and not _matches(relative, include):
                    continue
                if _matches(relative, exclude):
                    continue
                found.append(file)
        elif path.is_file():
            if path.suffix.lower() in SUPPORTED_SUFFIXES:
                found.append(path)
            else:
                skipped.append(f"{path}: unsupported type (text, Markdown, HTML, PDF)")
        else:
            skipped.append(f"{path}: no such file or folder")
    return found, skipped


def _matches(relative: str, globs: Sequence[str]) -> bool:
    name = relative.rsplit("/", 1)[-1]
    return any(fnmatch(relative, glob) or fnmatch(name, glob) for glob in globs)


def ingest_files(
    api_url: str,
    files: Sequence[Path],
    *,
    collection: str | None = None,
    show_progress: bool = True,
    api_key: str | None = None,
) -> tuple[int, list[str]]:
    """Upload files (one request each, so one bad file fails alone) and wait for their jobs.
    Returns the chunks indexed and a message per failed file."""
    client = RagClient(api_url, api_key=api_key)
    return asyncio.run(_ingest_files(client, files, collection, show_progress))


def _progress(show: bool, what: str) -> Progress:
    return Progress(
        TextColumn("[bold]ingesting"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(what),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        disable=not show,
    )


async def _ingest_files(
    client: RagClient, files: Sequence[Path], collection: str | None, show_progress: bool
) -> tuple[int, list[str]]:
    failures: list[str] = []
    done = chunks = 0
    started = time.monotonic()
    progress = _progress(show_progress, "documents")
    async with client:
        with progress:
            task = progress.add_task("ingest", total=len(files), rate="")
            limit = asyncio.Semaphore(UPLOADS_IN_FLIGHT)

            async def one(file: Path) -> None:
                nonlocal done, chunks
                async with limit:
                    try:
                        content = await asyncio.to_thread(file.read_bytes)
                        accepted = await client.upload(
                            [(file.name, content)], collection=collection, source=str(file)
                        )
                        async for event in client.follow(accepted["job_id"]):
                            if event.type == "error":
                                failures.append(f"{file}: {event.data.get('message')}")
                            elif event.type == "done":
                                chunks += int(event.data.get("chunks") or 0)
                    except ApiError as error:
                        failures.append(f"{file}: {error.message}")
                    except OSError as error:
                        failures.append(f"{file}: {error.strerror}")
                done += 1
                elapsed = max(time.monotonic() - started, 1e-6)
                rate = f"{done / elapsed:.1f} documents/s, {chunks / elapsed:.0f} chunks/s"
                progress.update(task, advance=1, rate=rate)

            await asyncio.gather(*(one(file) for file in files))
    return chunks, failures
