"""The `rag-async` command: run the service, or talk to one."""

from __future__ import annotations

import asyncio
import re
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from redis import Redis
from redis.exceptions import RedisError

from .config import Settings, load_settings
from .errors import ConfigurationError
from .logs import configure_logging
from .redaction import redact

if TYPE_CHECKING:
    from .client import RagClient

app = typer.Typer(
    help="Asynchronous RAG: ask questions about your documents.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _settings() -> Settings:
    try:
        settings, warnings = load_settings()
    except ConfigurationError as error:
        _fail(error.message, code=2)
    for warning in warnings:
        typer.secho(f"warning: {warning}", fg="yellow", err=True)
    return settings


def _check_exposure(settings: Settings) -> None:
    """Refuse to serve every answer to the network without keys (identity.check_exposure)."""
    from .identity import check_exposure

    try:
        check_exposure(settings)
    except ConfigurationError as error:
        _fail(error.message, code=2)


def _api_key(settings: Settings) -> str | None:
    return settings.api_key.get_secret_value() if settings.api_key else None


def _fail(message: str, code: int = 1) -> NoReturn:
    typer.secho(f"error: {_plain(message)}", fg="red", err=True)
    raise typer.Exit(code)


# A terminal runs the escape sequences in what it is given: text from a document or the API
# could clear the screen, retitle the window or plant a hyperlink. Whole sequences go (so no
# residue of them is printed), then every other C0 and C1 control but newline and tab.
_TERMINAL_CONTROL = re.compile(
    r"\x1b\][^\x07\x1b\x9c\n]*(?:\x07|\x1b\\|\x9c)?"  # OSC (title, hyperlink, clipboard)
    r"|\x1b[PX^_][^\x1b\x9c]*(?:\x1b\\|\x9c)?"  # DCS, SOS, PM, APC strings
    r"|(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]?"  # CSI (cursor, erase, colours)
    r"|\x1b[ -/]*[0-~]?"  # any other escape
    r"|[\x00-\x08\x0b-\x1f\x7f-\x9f]"
)


def _plain(text: str) -> str:
    """`text` without terminal control sequences: for anything printed that a document or the
    API wrote."""
    return _TERMINAL_CONTROL.sub("", text)


def _check_redis(url: str | None) -> None:
    """Fail at start, naming the URL, rather than with a connection traceback later."""
    if not url:
        _fail("RAG_REDIS_URL is not set (or use `rag-async up`, which starts a Valkey)")
    try:
        Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2).ping()
    except (RedisError, OSError, ValueError) as error:
        _fail(f"cannot reach Redis/Valkey at {redact(url)}: {error}")


def _use_uvloop() -> None:
    """uvloop's cheaper socket I/O matters in a worker streaming many answers at once (uvicorn
    picks it by itself for the API)."""
    try:
        import uvloop
    except ImportError:  # not on every platform; asyncio's loop works, a little slower
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


@app.command()
def up() -> None:
    """Run everything here: embedded Valkey and Qdrant (unless their URLs are set), the API
    and one worker; ingests the demo corpus on first run. Ctrl-C stops it."""
    from .supervisor import run_up

    settings = _settings()
    _check_exposure(settings)
    configure_logging(settings.log_level, json=settings.log_json, process="up")
    raise typer.Exit(run_up(settings))


@app.command()
def api() -> None:
    """Serve the HTTP API (needs RAG_REDIS_URL)."""
    import uvicorn

    from .api import create_app
    from .api.server import server_options

    settings = _settings()
    _check_exposure(settings)
    configure_logging(settings.log_level, json=settings.log_json, process="api")
    _check_redis(settings.redis_url)
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        access_log=False,  # one line per request and per SSE stream is noise at this rate
        log_config=None,  # log through our configuration, like the other processes
        timeout_graceful_shutdown=5,
        **server_options(settings),  # header timeout and size, keep-alive, connections
    )


@app.command()
def worker(
    queue: Annotated[
        list[str] | None,
        typer.Option(
            "--queue",
            help="Serve only this queue: questions or documents (repeatable). Default: both.",
        ),
    ] = None,
) -> None:
    """Run a worker process that takes questions and documents from their queues."""
    from workers.settings import WorkerProcess

    from .queues import LANES

    unknown = [name for name in queue or [] if name not in LANES]
    if unknown:
        _fail(f"unknown queue {unknown[0]!r}: choose from {', '.join(LANES)}", code=2)
    lanes = tuple(lane for lane in LANES if not queue or lane in queue)
    settings = _settings()
    configure_logging(settings.log_level, json=settings.log_json, process="worker")
    _check_redis(settings.redis_url)
    _use_uvloop()

    async def serve() -> None:
        process = WorkerProcess(settings, lanes)
        loop = asyncio.get_running_loop()
        for stop_signal in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(stop_signal, process.stop)
        await process.run()

    try:
        asyncio.run(serve())
    except ConfigurationError as error:
        _fail(error.message, code=2)
    # Jobs still running at the end of the grace period were cancelled and stay queued: they
    # run again on a worker (at-least-once), so stopping is an ordinary end, not a crash.
    typer.secho("worker stopped; any unfinished jobs will run again on a worker", err=True)


@app.command()
def ask(
    question: Annotated[str, typer.Argument(help="The question to ask.")],
) -> None:
    """Ask a question; the answer streams as it is written, then its sources."""
    import httpx

    from .client import Answer, ApiError, RagClient

    settings = _settings()

    async def run() -> int:
        async with RagClient(settings.api_base_url, api_key=_api_key(settings)) as client:
            accepted = await client.ask(question)
            answer = Answer()  # drops the text of an attempt that died
            sources: list[dict[str, Any]] = []
            async for event in client.follow(accepted["job_id"]):
                if answer.apply(event):
                    # A terminal cannot take back printed text: say it starts over.
                    typer.echo("\n[that attempt failed; the answer starts over]")
                if event.type == "sources":
                    sources = event.data["sources"]
                elif event.type == "token":
                    sys.stdout.write(_plain(event.data["text"]))
                    sys.stdout.flush()
                elif event.type == "error":
                    typer.echo()
                    typer.secho(f"error: {_plain(event.data['message'])}", fg="red", err=True)
                    return 1
                elif event.type == "done":
                    typer.echo("\n")
                    for source in sources:
                        score = f"{source['score']:.3f}"
                        typer.echo(
                            f"  [{source['n']}] {_plain(source['title'])} "
                            f"(chunk {source['chunk']}, score {score})"
                        )
            return 0

    try:
        raise typer.Exit(asyncio.run(run()))
    except ApiError as error:
        _fail(error.message)
    except (OSError, httpx.TransportError) as error:
        _fail(f"cannot reach the API at {settings.api_base_url}: {error}")


@app.command()
def ingest(
    paths: Annotated[
        list[Path], typer.Argument(help="Files or folders (text, Markdown, HTML, PDF).")
    ],
    collection: Annotated[
        str | None, typer.Option(help="The collection to add them to (default: the default).")
    ] = None,
    include: Annotated[
        list[str] | None,
        typer.Option(help="In folders, only files matching this glob (repeatable)."),
    ] = None,
    exclude: Annotated[
        list[str] | None,
        typer.Option(help="In folders, skip files matching this glob (repeatable)."),
    ] = None,
) -> None:
    """Add documents: uploads them, shows progress until they are searchable, then a summary."""
    import httpx

    from .ingest_client import find_documents, ingest_files

    settings = _settings()
    files, skipped = find_documents(paths, include=include or (), exclude=exclude or ())
    for note in skipped:
        typer.secho(f"skipped {_plain(note)}", fg="yellow", err=True)
    if not files:
        _fail("no text, Markdown, HTML or PDF files to ingest", code=2)
    try:
        chunks, failures = ingest_files(
            settings.api_base_url, files, collection=collection, api_key=_api_key(settings)
        )
    except httpx.HTTPError as error:
        _fail(f"cannot reach the API at {settings.api_base_url}: {error}")
    ok = len(files) - len(failures)
    typer.echo(f"{ok} of {len(files)} documents ingested ({chunks} chunks)")
    for failure in failures:
        typer.secho(f"failed: {_plain(failure)}", fg="red", err=True)
    raise typer.Exit(1 if failures or skipped else 0)


documents_app = typer.Typer(help="The ingested documents.", no_args_is_help=True)
app.add_typer(documents_app, name="documents")


@documents_app.command("list")
def documents_list(
    collection: Annotated[str | None, typer.Option(help="Only this collection.")] = None,
) -> None:
    """List documents, most recently ingested first."""

    async def show(client: RagClient) -> None:
        entries = await client.documents(collection)
        for entry in entries:
            line = (
                f"{entry['document_id']}  {entry['status']:<9}  {entry['collection']:<12}  "
                f"chunks={entry.get('chunks') or 0:<5}  {entry['title']}"
            )
            typer.echo(_plain(line))
        typer.echo(f"{len(entries)} document(s)")

    _with_client(show)


@documents_app.command("show")
def documents_show(document_id: Annotated[str, typer.Argument(help="A document id.")]) -> None:
    """Show one document's registry entry."""

    async def show(client: RagClient) -> None:
        entry = await client.document(document_id)
        for name, value in entry.items():
            typer.echo(_plain(f"{name}: {'' if value is None else value}"))

    _with_client(show)


@documents_app.command("delete")
def documents_delete(
    document_ids: Annotated[list[str], typer.Argument(help="Document ids to remove.")],
) -> None:
    """Remove documents and every chunk of them; waits until they are gone."""

    async def delete(client: RagClient) -> None:
        for document_id in document_ids:
            accepted = await client.delete_document(document_id)
            async for event in client.follow(accepted["job_id"]):
                if event.type == "error":
                    _fail(f"{document_id}: {event.data.get('message')}")
            typer.echo(f"deleted {document_id}")

    _with_client(delete)


dlq = typer.Typer(help="The dead-letter queue: jobs that failed every try.", no_args_is_help=True)
app.add_typer(dlq, name="dlq")


def _with_client(action: Callable[[RagClient], Awaitable[None]]) -> None:
    """Run `action` against the API, turning its errors into a message and exit code 1."""
    import httpx

    from .client import ApiError, RagClient

    settings = _settings()

    async def run() -> None:
        async with RagClient(settings.api_base_url, api_key=_api_key(settings)) as client:
            await action(client)

    try:
        asyncio.run(run())
    except ApiError as error:
        _fail(error.message)
    except (OSError, httpx.TransportError) as error:
        _fail(f"cannot reach the API at {settings.api_base_url}: {error}")


@dlq.command("list")
def dlq_list() -> None:
    """List the dead letters, newest first."""

    async def show(client: RagClient) -> None:
        entries = await client.dead_letters()
        for entry in entries:
            line = (
                f"{entry['job_id']}  {entry['kind']:<6}  tries={entry['attempts']}  "
                f"{entry['request']!r}\n    {entry['error']}"
            )
            typer.echo(_plain(line))
        typer.echo(f"{len(entries)} dead letter(s)")

    _with_client(show)


@dlq.command("requeue")
def dlq_requeue(
    job_ids: Annotated[list[str], typer.Argument(help="Job ids to run again.")],
) -> None:
    """Put dead letters back on the queue, with all their tries."""

    async def requeue(client: RagClient) -> None:
        for job_id in job_ids:
            await client.requeue(job_id)
            typer.echo(f"requeued {job_id}")

    _with_client(requeue)


@dlq.command("purge")
def dlq_purge() -> None:
    """Drop every dead letter (their jobs stay failed)."""

    async def purge(client: RagClient) -> None:
        entries = await client.dead_letters()
        for entry in entries:
            await client.drop_dead_letter(entry["job_id"])
        typer.echo(f"dropped {len(entries)} dead letter(s)")

    _with_client(purge)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
