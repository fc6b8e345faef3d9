"""Questions and their jobs: `ask`, `status`, `cancel`."""

from __future__ import annotations

import asyncio
import re
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any

import typer

from rag_async.client.cli.base import (
    EXIT_CANCELLED,
    EXIT_INTERRUPTED,
    ApiUrl,
    api_key,
    api_settings,
    app,
    command,
    fail,
    note,
    plain,
    print_json,
    read_option,
    stderr_console,
    unreachable,
    with_client,
)
from rag_async.client.cli.render import job_lines, source_lines, sources_heading

if TYPE_CHECKING:
    from rich.status import Status

    from rag_async.client.api import Asked, JobEvent, RagClient

ASK = "Ask"
_JOB_ID = re.compile(r"[0-9a-f]{32}")
# How long `cancel` waits for a running job's worker to stop it, in seconds.
_CANCEL_WAIT = 30.0
_EXIT_OF = {"done": 0, "error": 1, "cancelled": EXIT_CANCELLED}
_STATUS_OF = {"done": "complete", "error": "failed", "cancelled": "cancelled"}

Json = Annotated[bool, typer.Option("--json", help="Print the result as one JSON object.")]
Collection = Annotated[
    str | None,
    typer.Option(
        metavar="NAME",
        help="Search this collection only (default: RAG_DEFAULT_COLLECTION, `default`).",
        show_default=False,
    ),
]
FilterOption = Annotated[
    list[str] | None,
    typer.Option(
        "--filter",
        metavar="KEY=VALUE",
        help="Search only documents with this attribute (repeatable: all of them), as "
        "`ingest --attribute` gave it; or a JSON filter as POST /chat takes it.",
    ),
]
ConversationId = Annotated[
    str | None,
    typer.Option(
        "--conversation",
        metavar="ID",
        help="Ask within this conversation (any id of letters, digits and `._:-`; its first "
        "question begins it): the answer knows its latest turns. `chat` prints its id.",
        show_default=False,
    ),
]


def _job_id(value: str) -> str:
    if _JOB_ID.fullmatch(value) is None:
        fail(f"{value[:80]!r} is not a job id (job ids are 32 hex characters)", code=2)
    return value


@dataclass
class Asking:
    """What `ask` has seen of its job so far."""

    job_id: str | None = None
    conversation_id: str | None = None
    sources: list[dict[str, Any]] = field(default_factory=list)
    final: JobEvent | None = None
    shown: bool = False  # whether answer text was printed


@command(app, rich_help_panel=ASK)
def ask(
    question: Annotated[str, typer.Argument(help="The question to ask.")],
    collection: Collection = None,
    conversation: ConversationId = None,
    filter_: FilterOption = None,
    json: Json = False,
    api_url: ApiUrl = None,
) -> None:
    """Ask a question: the answer streams as it is written, then its sources.

    Exit status: 0 answered, 1 failed (or the API could not be reached), 3 cancelled (by
    `cancel`), 130 after Ctrl-C (which cancels the question, as a shell reports SIGINT).
    """
    import httpx

    from rag_async.client import metadata
    from rag_async.client.api import ApiError, RagClient

    filters = read_option(metadata.filters, filter_, "--filter")
    loaded = api_settings(api_url)
    url = loaded.api_base_url
    asking = Asking()

    async def run() -> None:
        async with (
            RagClient(url, api_key=api_key(loaded)) as client,
            client.asking(
                question, collection=collection, conversation_id=conversation, filters=filters
            ) as asked,
        ):
            asking.job_id, asking.conversation_id = asked.job_id, conversation
            await (_collect(asked, asking) if json else stream_answer(asked, asking))

    try:
        asyncio.run(run())
    except ApiError as error:
        fail(error.message)
    except httpx.TransportError as error:
        unreachable(url, error)
    except KeyboardInterrupt:
        _interrupted(asking, url, api_key(loaded))
    final = asking.final
    if final is None:  # the stream ended without a last event (it should not)
        fail(f"the answer's stream ended early; `rag-async status {asking.job_id}` tells more")
    if json:
        print_json(_result(question, collection or loaded.default_collection, asking))
    elif final.type != "done":
        tell_end(final)
    raise typer.Exit(_EXIT_OF[final.type])


async def stream_answer(asked: Asked, asking: Asking) -> None:
    """Print the answer as it streams, then its sources; a spinner on a terminal until the
    first words."""
    from rag_async.client.api import Answer

    answer = Answer()  # drops the text of an attempt that died
    waiting = _Waiting(asked.job_id)
    try:
        async for event in asked.events:
            if answer.apply(event):
                # A terminal cannot take back printed text: say it starts over.
                typer.echo("\n[that attempt failed; the answer starts over]")
            if event.type == "status":
                waiting.update(event.data.get("stage") or event.data.get("status"))
            elif event.type == "sources":
                asking.sources = event.data["sources"]
            elif event.type == "token":
                waiting.stop()
                sys.stdout.write(plain(event.data["text"]))
                sys.stdout.flush()
                asking.shown = True
    finally:
        waiting.stop()
    asking.final = answer.final
    if asking.shown:
        typer.echo()
    if answer.final is not None and answer.final.type == "done" and asking.sources:
        said = answer.final.data.get("answer")
        typer.echo("\n" + sources_heading(said if isinstance(said, str) else None, asking.sources))
        typer.echo("\n".join(source_lines(asking.sources)))


async def _collect(asked: Asked, asking: Asking) -> None:
    async for event in asked.events:
        if event.type == "sources":
            asking.sources = event.data["sources"]
        if event.type in _EXIT_OF:
            asking.final = event


class _Waiting:
    """`⠋ retrieving (job 3f2a…)` on stderr while nothing else is shown; only on a terminal."""

    def __init__(self, job_id: str) -> None:
        self._job_id = job_id
        self._status: Status | None = None
        console = stderr_console()
        if console.is_terminal:
            self._status = console.status(self._text("queued"))
            self._status.start()

    def _text(self, stage: str) -> str:
        from rich.markup import escape

        return f"{escape(stage.replace('_', ' '))}  [dim](job {self._job_id})[/dim]"

    def update(self, stage: str | None) -> None:
        if self._status is not None and stage:
            self._status.update(self._text(plain(stage)))

    def stop(self) -> None:
        if self._status is not None:
            self._status.stop()
            self._status = None


def _result(question: str, collection: str | None, asking: Asking) -> dict[str, Any]:
    final = asking.final
    assert final is not None
    result: dict[str, Any] = {
        "job_id": asking.job_id,
        "status": _STATUS_OF[final.type],
        "query": question,
        # The collection searched: the sources name it as the API does.
        "collection": asking.sources[0]["collection"] if asking.sources else collection,
        "conversation_id": asking.conversation_id,
        "answer": final.data.get("answer") if final.type == "done" else None,
        "sources": asking.sources,
        "error": None,
    }
    if final.type == "done":
        result |= {"timings": final.data.get("timings"), "providers": final.data.get("providers")}
    else:
        code = final.data.get("code", "cancelled" if final.type == "cancelled" else "job_failed")
        result["error"] = {"code": code, "message": final.data.get("message")}
    return result


def tell_end(final: JobEvent) -> None:
    message = plain(str(final.data.get("message", "")))
    if final.type == "cancelled":
        typer.secho(f"cancelled: {message}", fg="yellow", err=True)
    else:
        typer.secho(f"error: {message}", fg="red", err=True)


def _interrupted(asking: Asking, url: str, key: str | None) -> None:
    """Ctrl-C: the person wants the answer no more, so its job need not run on."""
    import httpx

    from rag_async.client.api import ApiError, RagClient

    if asking.shown:
        typer.echo()
    if asking.job_id is None:
        raise typer.Exit(EXIT_INTERRUPTED)

    async def cancel(job_id: str) -> str:
        async with RagClient(url, api_key=key, timeout=5) as client:
            return str((await client.cancel(job_id))["status"])

    try:
        asyncio.run(cancel(asking.job_id))
        note(f"cancelled job {asking.job_id}")
    except (ApiError, httpx.HTTPError) as error:  # it ended already, or the API is away
        message = error.message if isinstance(error, ApiError) else str(error)
        note(f"job {asking.job_id} was not cancelled: {message}")
    raise typer.Exit(EXIT_INTERRUPTED)


@command(app, rich_help_panel=ASK)
def status(
    job_id: Annotated[str, typer.Argument(metavar="JOB", help="A job id.")],
    json: Json = False,
    api_url: ApiUrl = None,
) -> None:
    """Show a job: its status and stage, timings, and its answer and sources (or its error).

    Job ids come from `ask --json`, the web page's address (`?job=…`) and `dlq list`.
    """
    _job_id(job_id)

    async def show(client: RagClient) -> None:
        view = await client.job(job_id)
        if json:
            print_json(view)
            return
        typer.echo("\n".join(job_lines(view)))
        if view.get("answer"):
            partial = " (so far)" if view.get("answer_is_partial") else ""
            typer.echo(f"\nanswer{partial}:\n{plain(view['answer']).strip()}")
        if view.get("sources") and view.get("kind") == "answer":
            heading = sources_heading(view.get("answer"), view["sources"])
            typer.echo(f"\n{heading}\n" + "\n".join(source_lines(view["sources"])))

    with_client(api_url, show)


@command(app, rich_help_panel=ASK)
def cancel(
    job_ids: Annotated[list[str], typer.Argument(metavar="JOB", help="Job ids to cancel.")],
    api_url: ApiUrl = None,
) -> None:
    """Cancel jobs: a queued one at once, a running one as soon as its worker notices (this
    waits until it has stopped)."""
    for job_id in job_ids:
        _job_id(job_id)

    async def cancel_all(client: RagClient) -> int:
        failures = 0
        for job_id in job_ids:
            failures += not await _cancel(client, job_id)
        return failures

    raise typer.Exit(1 if with_client(api_url, cancel_all) else 0)


async def _cancel(client: RagClient, job_id: str) -> bool:
    from rag_async.client.api import ApiError

    try:
        state = (await client.cancel(job_id))["status"]
    except ApiError as error:
        if error.status not in (404, 409):  # another job may still be cancelled
            raise
        typer.secho(f"error: {plain(error.message)}", fg="red", err=True)
        return False
    if state == "cancelling":
        last = await _last_event(client, job_id)
        if last is None:
            note(f"{job_id}: asked to stop; its worker has not stopped it yet")
            return False
        if last.type != "cancelled":
            typer.secho(f"error: {job_id} ended before it could be cancelled", fg="red", err=True)
            return False
    typer.echo(f"cancelled {job_id}")
    return True


async def _last_event(client: RagClient, job_id: str) -> JobEvent | None:
    last = None
    try:
        async with asyncio.timeout(_CANCEL_WAIT):
            async for event in client.follow(job_id):
                last = event
    except TimeoutError:
        return None
    return last
