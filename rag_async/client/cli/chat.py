"""`chat`: a conversation at the terminal. Each question is asked within one conversation (the
API keeps its turns, so a follow-up knows what came before) and its answer streams as `ask`'s
does. Ctrl-C stops the answer being written, not the session; at the prompt it leaves, as
Ctrl-D does."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from typing import TYPE_CHECKING

import typer

from rag_async.client.cli.base import (
    ApiUrl,
    api_key,
    api_settings,
    app,
    command,
    note,
    plain,
    unreachable,
)
from rag_async.client.cli.questions import (
    ASK,
    Asking,
    Collection,
    ConversationId,
    stream_answer,
    tell_end,
)

if TYPE_CHECKING:
    from rag_async.client.api import RagClient

PROMPT = "> "


@command(app, rich_help_panel=ASK)
def chat(
    collection: Collection = None,
    conversation: ConversationId = None,
    api_url: ApiUrl = None,
) -> None:
    """Talk with your documents: one question after another, each a follow-up of the ones
    before it.

    Ctrl-C stops the answer being written (its job is cancelled) and the session goes on;
    Ctrl-C at the prompt, or Ctrl-D, leaves. The conversation's id, printed first, lets
    `ask --conversation ID` go on with it.
    """
    import httpx

    from rag_async.client.api import RagClient

    _line_editing()
    loaded = api_settings(api_url)
    url = loaded.api_base_url
    conversation_id = conversation or uuid.uuid4().hex
    note(f"conversation {conversation_id}: Ctrl-C stops an answer, Ctrl-D leaves")
    with asyncio.Runner() as runner:
        client = RagClient(url, api_key=api_key(loaded))
        try:
            while (question := _next_question()) is not None:
                if question:
                    asking = Asking(conversation_id=conversation_id)
                    _turn(runner, client, asking, question, collection)
                    typer.echo()
        except httpx.TransportError as error:
            unreachable(url, error)
        finally:
            runner.run(client.aclose())


def _line_editing() -> None:
    """Arrow keys and history at the prompt, where the platform has GNU readline."""
    with contextlib.suppress(ImportError):
        import readline  # noqa: F401  (importing it is what turns it on for input())


def _next_question() -> str | None:
    """The next question ("" for an empty line); None when the person leaves."""
    try:
        return input(PROMPT).strip()
    except (EOFError, KeyboardInterrupt):
        typer.echo()
        return None


def _turn(
    runner: asyncio.Runner, client: RagClient, asking: Asking, question: str, collection: str | None
) -> None:
    """Ask one question and stream its answer; an error is told and the session goes on."""
    from rag_async.client.api import ApiError

    try:
        runner.run(_ask(client, asking, question, collection))
    except ApiError as error:
        typer.secho(f"error: {plain(error.message)}", fg="red", err=True)
    except KeyboardInterrupt:
        runner.run(_stop(client, asking))
    else:
        if asking.final is None:
            typer.secho("error: the answer's stream ended early", fg="red", err=True)
        elif asking.final.type != "done":
            tell_end(asking.final)


async def _ask(client: RagClient, asking: Asking, question: str, collection: str | None) -> None:
    async with client.asking(
        question, collection=collection, conversation_id=asking.conversation_id
    ) as asked:
        asking.job_id = asked.job_id
        await stream_answer(asked, asking)


async def _stop(client: RagClient, asking: Asking) -> None:
    """Ctrl-C while an answer is written: its job need not run on."""
    import httpx

    from rag_async.client.api import ApiError

    if asking.shown:
        typer.echo()
    if asking.job_id is None:  # not asked yet, or its job id never came back
        note("stopped")
        return
    try:
        await client.cancel(asking.job_id)
        note(f"stopped: cancelled job {asking.job_id}")
    except (ApiError, httpx.HTTPError) as error:  # it ended already, or the API is away
        message = error.message if isinstance(error, ApiError) else str(error)
        note(f"stopped; job {asking.job_id} was not cancelled: {message}")
