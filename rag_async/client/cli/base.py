"""What every `rag-async` command shares: the Typer app, its help style, settings, errors,
safe printing, and the `--api-url` of the commands that talk to an API."""

from __future__ import annotations

import asyncio
import json
import re
import sys
from collections.abc import Awaitable, Callable, Sequence
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import typer
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption

from rag_async.config import Settings, load_settings
from rag_async.domain.errors import ConfigurationError
from rag_async.domain.text import printable

if TYPE_CHECKING:
    import httpx
    from rich.console import Console
    from rich.table import Table

    from rag_async.client.api import RagClient

T = TypeVar("T")

LOCAL_API = "http://127.0.0.1:8000"

# Exit statuses beyond 0 (done) and 1 (failed, or the API could not be reached); 2 is a usage
# error (Typer's own, and a bad configuration).
EXIT_CANCELLED = 3
EXIT_INTERRUPTED = 130  # Ctrl-C, as a shell reports SIGINT


# ---- help ---------------------------------------------------------------------------------
# Typer prints each parameter's Python type in help (`<str>`, `<bool>`, `<list[Path]>`): the
# names (QUESTION, --collection NAME) say more, and a flag takes no value at all.


class _Argument(TyperArgument):
    def display_type_rich(self, ctx: Any) -> str | None:
        return None

    def _usage_display_name(self) -> str:
        name = self.display_name_raw
        name = name if self.required else f"[{name}]"
        return f"{name}..." if self.nargs != 1 else name


def _tidy(param: object) -> None:
    if type(param) is TyperArgument:
        param.__class__ = _Argument
        param.metavar = param.metavar or (param.name or "").upper()
    elif isinstance(param, TyperOption) and param.metavar is None:
        param.metavar = "" if param.is_flag else (param.name or "value").upper()


class _Tidied:
    """Tidies a command's (or a group's) options and its --help, as `_tidy` says."""

    params: list[Any]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for param in self.params:
            _tidy(param)

    def get_help_option(self, ctx: Any) -> TyperOption | None:
        option: TyperOption | None = super().get_help_option(ctx)  # type: ignore[misc]
        _tidy(option)
        return option


class Command(_Tidied, TyperCommand):
    pass


class Group(_Tidied, TyperGroup):
    pass


def typer_app(help: str) -> typer.Typer:
    """A Typer app (or command group) with this CLI's help style. Markdown joins a docstring's
    wrapped lines (the default style keeps them, breaking the commands' list mid-sentence)."""
    return typer.Typer(
        help=help,
        cls=Group,
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
        rich_markup_mode="markdown",
        context_settings={"help_option_names": ["-h", "--help"]},
    )


def command(group: typer.Typer, name: str | None = None, **kwargs: Any) -> Callable[[T], T]:
    """`group.command(...)` with this CLI's help style."""
    return group.command(name, cls=Command, **kwargs)  # type: ignore[return-value]


app = typer_app("Asynchronous RAG: ask questions about your documents, with their sources.")


def _show_version(value: bool) -> None:
    if value:
        try:
            number = version("rag-async")
        except PackageNotFoundError:  # run from a checkout that was never installed
            number = "unknown"
        typer.echo(f"rag-async {number}")
        raise typer.Exit()


@app.callback()
def _options(
    _version: Annotated[
        bool,
        typer.Option(
            "--version", help="Show the version and exit.", callback=_show_version, is_eager=True
        ),
    ] = False,
) -> None:
    pass


def main() -> None:
    # A closed pipe (`rag-async documents list | head -1`) ends the command quietly: Typer
    # turns the BrokenPipeError into exit status 1 without a word, as long as nothing on the
    # way takes it for a network error (so commands catch httpx's errors, not OSError).
    app(prog_name="rag-async")


# ---- settings and errors ------------------------------------------------------------------


def settings() -> Settings:
    try:
        loaded, warnings = load_settings()
    except ConfigurationError as error:
        fail(error.message, code=2)
    for warning in warnings:
        typer.secho(f"warning: {warning}", fg="yellow", err=True)
    return loaded


def fail(message: str, code: int = 1) -> NoReturn:
    typer.secho(f"error: {plain(message)}", fg="red", err=True)
    raise typer.Exit(code)


def read_option(read: Callable[[Sequence[str]], T], given: list[str] | None, option: str) -> T:
    """An option's values as `read` reads them, or exit 2 saying what is wrong with them."""
    try:
        return read(given or ())
    except ValueError as error:
        fail(f"{option}: {error}", code=2)


def note(message: str) -> None:
    """A remark for the person at the terminal, on stderr (stdout keeps the data)."""
    typer.secho(plain(message), err=True, dim=True)


# ---- printing what others wrote -------------------------------------------------------------

# JSON escapes C0 controls itself; these it would print raw.
_RAW_IN_JSON = re.compile(r"[\x7f-\x9f]")


def plain(text: str) -> str:
    """`text` without terminal control sequences, bidi controls or zero-width characters
    (domain/text.py's `printable`): for anything printed that a document or the API wrote.
    The one rule for every command's output."""
    return printable(text)


def one_line(text: str) -> str:
    """`plain` text for a table cell or a `name: value` line."""
    return " ".join(plain(text).split())


def print_json(value: Any) -> None:
    """`value` as JSON on stdout. The data is kept whole (a machine reads it) and escaped
    where a terminal would act on it: JSON's escapes for C0 controls, and `\\u0080`-style
    ones for DEL and the C1 controls (`\\x9b` starts a sequence like ESC [)."""
    text = json.dumps(value, ensure_ascii=False, indent=2)
    typer.echo(_RAW_IN_JSON.sub(lambda m: f"\\u{ord(m.group()):04x}", text))


def stdout_console() -> Console:
    from rich.console import Console

    # Piped, lines are not wrapped at 80 columns: a row stays one line for grep and cut.
    return Console(highlight=False, width=None if sys.stdout.isatty() else 10_000)


def stderr_console() -> Console:
    from rich.console import Console

    return Console(stderr=True, highlight=False)


def print_table(table: Table) -> None:
    console = stdout_console()
    if console.is_terminal:
        console.print(table)
        return
    with console.capture() as captured:
        console.print(table)
    typer.echo("\n".join(line.rstrip() for line in captured.get().splitlines()))


# ---- talking to an API ---------------------------------------------------------------------

ApiUrl = Annotated[
    str | None,
    typer.Option(
        "--api-url",
        metavar="URL",
        help="The rag-async API to talk to. Default: RAG_API_URL if set, else "
        f"http://RAG_HOST:RAG_PORT ({LOCAL_API}).",
        show_default=False,
    ),
]


def api_settings(api_url: str | None) -> Settings:
    """The settings, with `--api-url` over RAG_API_URL; either may be given as `host:port`."""
    loaded = settings()
    url = api_url or loaded.api_url
    if url:
        url = url if "://" in url else f"http://{url}"
        loaded = loaded.model_copy(update={"api_url": url})
    return loaded


def api_key(loaded: Settings) -> str | None:
    return loaded.api_key.get_secret_value() if loaded.api_key else None


def unreachable(url: str, error: httpx.TransportError) -> NoReturn:
    import httpx

    if isinstance(error, httpx.TimeoutException):
        why = "it did not answer in time"
    elif isinstance(error, httpx.ConnectError):
        why = f"nothing answers there: {error}" if str(error) else "nothing answers there"
    else:
        why = str(error) or type(error).__name__
    fail(
        f"cannot reach the API at {url} ({why}). Is `rag-async up` running? "
        "To talk to another address, pass --api-url URL or set RAG_API_URL."
    )


def with_client(api_url: str | None, action: Callable[[RagClient], Awaitable[T]]) -> T:
    """Run `action` against the API, turning its errors into a message and exit status 1."""
    import httpx

    from rag_async.client.api import ApiError, RagClient

    loaded = api_settings(api_url)
    url = loaded.api_base_url

    async def run() -> T:
        async with RagClient(url, api_key=api_key(loaded)) as client:
            return await action(client)

    try:
        return asyncio.run(run())
    except ApiError as error:
        fail(error.message)
    except httpx.TransportError as error:
        unreachable(url, error)
