"""Client side of ingestion: find files, upload them, follow their jobs with a progress bar.

Each file is sent with a source name relative to what was named: `guide/intro.md` for a file
found in the folder `~/docs` (so a citation reads as the person knows the file), the file's
own name for a file named itself. The API derives a document's id from that name and its
collection, so ingesting the same folder again replaces (or, unchanged, keeps) its documents.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path
from typing import Any, Literal

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from rag_async.client.api import ApiError, RagClient
from rag_async.providers.parsing import FORMATS

SUPPORTED_SUFFIXES = frozenset(FORMATS)
UPLOADS_IN_FLIGHT = 16  # the workers set the real pace; this only keeps them fed


@dataclass(frozen=True, slots=True)
class Found:
    """A file to ingest, and the source name it is ingested (and cited) under."""

    path: Path
    name: str


@dataclass(frozen=True, slots=True)
class Skipped:
    """A path not ingested, and why. `named`: it was named on the command line (a mistake to
    report), rather than found in a folder (a note)."""

    path: str
    reason: str
    named: bool


def find_documents(
    paths: Iterable[Path],
    *,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
) -> tuple[list[Found], list[Skipped]]:
    """The supported files under `paths` (folders walked), and each path skipped with why.

    In folders, a file is taken if it matches one of the `include` globs (when any are given)
    and none of the `exclude` globs; a glob matches the file's name or its path relative to
    the folder (`*.md`, `drafts/*`). Hidden files and folders in a folder (`.git`) are
    skipped. Files named on the command line are always taken.
    """
    found: list[Found] = []
    skipped: list[Skipped] = []
    for path in paths:
        if path.is_dir():
            _walk(path, include, exclude, found, skipped)
        elif path.is_file():
            if path.suffix.lower() in SUPPORTED_SUFFIXES:
                found.append(Found(path, path.name))
            else:
                skipped.append(Skipped(str(path), _unsupported(path), named=True))
        else:
            skipped.append(Skipped(str(path), "no such file or folder", named=True))
    return _distinct(found), skipped


def _walk(
    folder: Path,
    include: Sequence[str],
    exclude: Sequence[str],
    found: list[Found],
    skipped: list[Skipped],
) -> None:
    for root, folders, files in os.walk(folder):
        here = Path(root)
        for name in sorted(folders):
            if name.startswith("."):
                skipped.append(Skipped(f"{here / name}{os.sep}", "hidden folder", named=False))
        folders[:] = sorted(name for name in folders if not name.startswith("."))
        for name in sorted(files):
            file = here / name
            relative = file.relative_to(folder).as_posix()
            reason = _why_not(file, relative, include, exclude)
            if reason:
                skipped.append(Skipped(str(file), reason, named=False))
            else:
                found.append(Found(file, relative))


def _why_not(file: Path, relative: str, include: Sequence[str], exclude: Sequence[str]) -> str:
    """Why a file found in a folder is not taken; empty if it is."""
    if file.name.startswith("."):
        return "hidden file"
    if file.suffix.lower() not in SUPPORTED_SUFFIXES:
        return _unsupported(file)
    if include and not _matching(relative, include):
        return f"matches no --include ({', '.join(include)})"
    excluded = _matching(relative, exclude)
    return f"excluded by --exclude {excluded}" if excluded else ""


def _unsupported(file: Path) -> str:
    kind = file.suffix.lower() or "no extension"
    return f"unsupported type {kind} (text, Markdown, HTML and PDF are)"


def _matching(relative: str, globs: Sequence[str]) -> str | None:
    name = relative.rsplit("/", 1)[-1]
    return next((g for g in globs if fnmatch(relative, g) or fnmatch(name, g)), None)


def _distinct(found: list[Found]) -> list[Found]:
    """Each file once (`docs docs/a.md` names one twice), and under a name of its own: files
    that would share one (`a/x.md b/x.md`, named each) are named by their paths instead, or
    the second would replace the first."""
    seen: set[Path] = set()
    unique = []
    for item in found:
        resolved = item.path.resolve()
        if resolved not in seen:
            seen.add(resolved)
            unique.append(item)
    shared = {name for name, count in Counter(i.name for i in unique).items() if count > 1}
    return [Found(i.path, i.path.as_posix()) if i.name in shared else i for i in unique]


# ---- uploading ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of one file: `indexed` anew, `unchanged` (already indexed as it is), or
    `failed` with the API's or the job's message."""

    file: Found
    state: Literal["indexed", "unchanged", "failed"]
    chunks: int = 0
    error: str = ""


@dataclass
class IngestReport:
    outcomes: list[Outcome] = field(default_factory=list)

    def _in(self, state: str) -> Iterator[Outcome]:
        return (outcome for outcome in self.outcomes if outcome.state == state)

    @property
    def indexed(self) -> list[Outcome]:
        return list(self._in("indexed"))

    @property
    def unchanged(self) -> list[Outcome]:
        return list(self._in("unchanged"))

    @property
    def failures(self) -> list[str]:
        return [
            f"{outcome.file.path}: {_without_name(outcome.error, outcome.file.path.name)}"
            for outcome in self._in("failed")
        ]

    @property
    def chunks(self) -> int:
        """Chunks indexed anew (unchanged documents' are indexed already)."""
        return sum(outcome.chunks for outcome in self.indexed)


def _without_name(message: str, name: str) -> str:
    """The API names the uploaded file in its message; the failure line names its path."""
    return message.removeprefix(f"{name}: ")


def ingest_files(
    api_url: str,
    files: Sequence[Found | Path],
    *,
    collection: str | None = None,
    show_progress: bool = True,
    api_key: str | None = None,
    attributes: dict[str, Any] | None = None,
) -> IngestReport:
    """Upload files (one request each, so one bad file fails alone), each with `attributes`
    (if any), and wait for their jobs. A plain Path is ingested under its file name. The
    progress bar goes to stderr, and only to a terminal."""
    client = RagClient(api_url, api_key=api_key)
    named = [item if isinstance(item, Found) else Found(item, item.name) for item in files]
    target = _Target(collection, attributes)
    return asyncio.run(_ingest_files(client, named, target, show_progress))


@dataclass(frozen=True, slots=True)
class _Target:
    """Where the files go, and what they carry."""

    collection: str | None
    attributes: dict[str, Any] | None


def _progress(show: bool) -> Progress:
    console = Console(stderr=True)
    return Progress(
        TextColumn("[bold]ingesting"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("documents"),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        console=console,
        disable=not (show and console.is_terminal),
    )


async def _ingest_files(
    client: RagClient, files: Sequence[Found], target: _Target, show_progress: bool
) -> IngestReport:
    report = IngestReport()
    started = time.monotonic()
    progress = _progress(show_progress)
    async with client:
        with progress:
            task = progress.add_task("ingest", total=len(files), rate="")
            limit = asyncio.Semaphore(UPLOADS_IN_FLIGHT)

            async def one(file: Found) -> None:
                async with limit:
                    report.outcomes.append(await _ingest_one(client, file, target))
                elapsed = max(time.monotonic() - started, 1e-6)
                done = len(report.outcomes)
                rate = f"{done / elapsed:.1f} documents/s, {report.chunks / elapsed:.0f} chunks/s"
                progress.update(task, advance=1, rate=rate)

            await asyncio.gather(*(one(file) for file in files))
    return report


async def _ingest_one(client: RagClient, file: Found, target: _Target) -> Outcome:
    try:
        content = await asyncio.to_thread(file.path.read_bytes)
        accepted = await client.upload(
            [(file.path.name, content)],
            collection=target.collection,
            source=file.name,
            attributes=target.attributes,
        )
        unchanged = False
        async for event in client.follow(accepted["job_id"]):
            if event.type == "progress" and event.data.get("stage") == "unchanged":
                unchanged = True
            elif event.type in ("error", "cancelled"):
                return Outcome(file, "failed", error=str(event.data.get("message")))
            elif event.type == "done":
                chunks = int(event.data.get("chunks") or 0)
                return Outcome(file, "unchanged" if unchanged else "indexed", chunks)
    except ApiError as error:
        return Outcome(file, "failed", error=error.message)
    except OSError as error:  # the file could not be read
        return Outcome(file, "failed", error=error.strerror or str(error))
    return Outcome(file, "failed", error="its job's events ended early")
