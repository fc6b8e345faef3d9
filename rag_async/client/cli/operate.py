"""For whoever runs the service: `stats`, and the dead-letter queue (`dlq list|requeue|purge`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from rag_async.client.cli.base import (
    ApiUrl,
    app,
    command,
    one_line,
    print_json,
    typer_app,
    with_client,
)
from rag_async.client.cli.render import ago, plural, stats_lines

if TYPE_CHECKING:
    from rag_async.client.api import RagClient

OPERATE = "Operate"


@command(app, rich_help_panel=OPERATE)
def stats(
    json: Annotated[bool, typer.Option("--json", help="Print GET /stats as it is.")] = False,
    api_url: ApiUrl = None,
) -> None:
    """What the service is doing: jobs waiting and in flight, per queue; breakers; and, for an
    admin key (or the local user), the live workers and the latest failures."""

    async def show(client: RagClient) -> None:
        figures = await client.stats()
        if json:
            print_json(figures)
        else:
            typer.echo("\n".join(stats_lines(figures)))

    with_client(api_url, show)


dlq = typer_app("The dead-letter queue: jobs that failed every try.")
app.add_typer(dlq, name="dlq", rich_help_panel=OPERATE)


@command(dlq, "list")
def dlq_list(api_url: ApiUrl = None) -> None:
    """List the dead letters, newest first."""

    async def show(client: RagClient) -> None:
        entries = await client.dead_letters()
        for entry in entries:
            when = f"  {ago(entry['dead_lettered_at'])}" if entry.get("dead_lettered_at") else ""
            typer.echo(
                f"{entry['job_id']}  {one_line(entry['kind'])}  tries={entry['attempts']}{when}"
                f"  {one_line(repr(entry['request']))}\n    {one_line(str(entry['error']))}"
            )
        typer.echo(plural(len(entries), "dead letter"))

    with_client(api_url, show)


@command(dlq, "requeue")
def dlq_requeue(
    job_ids: Annotated[list[str], typer.Argument(metavar="JOB", help="Job ids to run again.")],
    api_url: ApiUrl = None,
) -> None:
    """Put dead letters back on the queue, with all their tries."""

    async def requeue(client: RagClient) -> None:
        for job_id in job_ids:
            await client.requeue(job_id)
            typer.echo(f"requeued {job_id}")

    with_client(api_url, requeue)


@command(dlq, "purge")
def dlq_purge(api_url: ApiUrl = None) -> None:
    """Drop every dead letter (their jobs stay failed)."""

    async def purge(client: RagClient) -> None:
        entries = await client.dead_letters()
        for entry in entries:
            await client.drop_dead_letter(entry["job_id"])
        typer.echo(f"dropped {plural(len(entries), 'dead letter')}")

    with_client(api_url, purge)
