"""Documents: `ingest`, and `documents list|show|delete`."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from rag_async.client.cli.base import (
    ApiUrl,
    api_key,
    api_settings,
    app,
    command,
    fail,
    one_line,
    plain,
    print_table,
    read_option,
    typer_app,
    unreachable,
    with_client,
)
from rag_async.client.cli.render import ago, document_lines, plural

if TYPE_CHECKING:
    from rich.table import Table

    from rag_async.client.api import RagClient
    from rag_async.client.ingest import IngestReport, Skipped

DOCUMENTS = "Documents"
# Skipped files listed one by one for each reason; the rest of them are counted.
_SKIPPED_SHOWN = 5

Collection = Annotated[
    str | None,
    typer.Option(
        metavar="NAME",
        help="The collection to add them to (default: RAG_DEFAULT_COLLECTION, `default`).",
        show_default=False,
    ),
]


AttributeOption = Annotated[
    list[str] | None,
    typer.Option(
        "--attribute",
        metavar="KEY=VALUE",
        help="An attribute of every file, for `ask --filter` (repeatable): a number, "
        "true/false or text (`year=2024`, `team=red`).",
    ),
]


@command(app, rich_help_panel=DOCUMENTS)
def ingest(
    paths: Annotated[
        list[Path],
        typer.Argument(metavar="PATH", help="Files or folders (text, Markdown, HTML, PDF)."),
    ],
    collection: Collection = None,
    include: Annotated[
        list[str] | None,
        typer.Option(metavar="GLOB", help="In folders, only files matching this (repeatable)."),
    ] = None,
    exclude: Annotated[
        list[str] | None,
        typer.Option(metavar="GLOB", help="In folders, skip files matching this (repeatable)."),
    ] = None,
    attribute: AttributeOption = None,
    api_url: ApiUrl = None,
) -> None:
    """Add documents: uploads them, shows progress until they are searchable, then a summary.

    A file is cited by its path inside the folder named (`guide/intro.md`), or by its name
    if it was named itself. Ingesting it again replaces it, or, if it has not changed, says
    so and keeps it. Hidden files and folders are skipped.
    """
    import httpx

    from rag_async.client import metadata
    from rag_async.client.ingest import find_documents, ingest_files

    attributes = read_option(metadata.attributes, attribute, "--attribute")
    loaded = api_settings(api_url)
    files, skipped = find_documents(paths, include=include or (), exclude=exclude or ())
    _tell_skipped(skipped)
    if not files:
        fail("no text, Markdown, HTML or PDF files to ingest", code=2)
    url = loaded.api_base_url
    try:
        report = ingest_files(
            url, files, collection=collection, api_key=api_key(loaded), attributes=attributes
        )
    except httpx.TransportError as error:
        unreachable(url, error)
    typer.echo(_summary(report, len(files)))
    for failure in report.failures:
        typer.secho(f"failed: {plain(failure)}", fg="red", err=True)
    raise typer.Exit(1 if report.failures or any(s.named for s in skipped) else 0)


def _tell_skipped(skipped: Sequence[Skipped]) -> None:
    """Each path skipped, with why; beyond a few for one reason (a folder of images), a count."""
    by_reason: dict[str, list[Skipped]] = defaultdict(list)
    for item in skipped:
        by_reason[item.reason].append(item)
    for reason, items in by_reason.items():
        for item in items[:_SKIPPED_SHOWN]:
            typer.secho(f"skipped {plain(item.path)}: {reason}", fg="yellow", err=True)
        if len(items) > _SKIPPED_SHOWN:
            more = plural(len(items) - _SKIPPED_SHOWN, "more file")
            typer.secho(f"skipped {more}: {reason}", fg="yellow", err=True)


def _summary(report: IngestReport, total: int) -> str:
    done = len(report.indexed) + len(report.unchanged)
    line = f"{done} of {plural(total, 'document')} ingested"
    if not report.unchanged:
        return f"{line} ({plural(report.chunks, 'chunk')})"
    parts = [f"{len(report.unchanged)} unchanged"]
    if report.indexed:
        parts.insert(0, f"{len(report.indexed)} new or changed ({plural(report.chunks, 'chunk')})")
    return f"{line}: {', '.join(parts)}"


documents_app = typer_app("The ingested documents: list, show, delete.")
app.add_typer(documents_app, name="documents", rich_help_panel=DOCUMENTS)


@command(documents_app, "list")
def documents_list(
    collection: Annotated[
        str | None, typer.Option(metavar="NAME", help="Only this collection.")
    ] = None,
    api_url: ApiUrl = None,
) -> None:
    """List documents, most recently ingested first."""

    async def show(client: RagClient) -> None:
        entries = await client.documents(collection)
        if entries:
            print_table(_table(entries))
        typer.echo(plural(len(entries), "document"))

    with_client(api_url, show)


def _table(entries: list[dict[str, Any]]) -> Table:
    from rich.table import Table
    from rich.text import Text

    # The collection is a column only when there is more than one to tell apart.
    several = len({entry["collection"] for entry in entries}) > 1
    table = Table(box=None, pad_edge=False, header_style="bold")
    table.add_column("ID", no_wrap=True, min_width=24)
    table.add_column("STATUS", no_wrap=True, min_width=7)
    table.add_column("CHUNKS", no_wrap=True, justify="right")
    if several:
        table.add_column("COLLECTION", no_wrap=True, max_width=20)
    table.add_column("INGESTED", no_wrap=True, min_width=10)
    table.add_column("SOURCE", ratio=1, min_width=10, overflow="fold")
    table.add_column("TITLE", ratio=1, min_width=10)
    for entry in entries:
        ingested = entry.get("ingested_at")
        cells = [
            one_line(entry["document_id"]),
            one_line(entry["status"]),
            str(entry.get("chunks") or 0),
            *([one_line(entry["collection"])] if several else []),
            ago(ingested) if ingested else "-",
            one_line(entry.get("source") or entry.get("filename") or "-"),
            one_line(entry["title"]),
        ]
        # As Text, not str: rich would read `[link=…]` in a title as its own markup.
        table.add_row(*(Text(cell) for cell in cells))
    return table


@command(documents_app, "show")
def documents_show(
    document_id: Annotated[str, typer.Argument(metavar="ID", help="A document id.")],
    api_url: ApiUrl = None,
) -> None:
    """Show one document: its title, source, collection, status, size and when it was
    ingested."""

    async def show(client: RagClient) -> None:
        typer.echo("\n".join(document_lines(await client.document(document_id))))

    with_client(api_url, show)


@command(documents_app, "delete")
def documents_delete(
    document_ids: Annotated[
        list[str], typer.Argument(metavar="ID", help="Document ids to remove.")
    ],
    api_url: ApiUrl = None,
) -> None:
    """Remove documents and every chunk of them; waits until they are gone."""

    async def delete(client: RagClient) -> None:
        for document_id in document_ids:
            accepted = await client.delete_document(document_id)
            async for event in client.follow(accepted["job_id"]):
                if event.type == "error":
                    fail(f"{document_id}: {event.data.get('message')}")
            typer.echo(f"deleted {document_id}")

    with_client(api_url, delete)
