"""`rag-async eval`: how well retrieval finds the documents that answer a file of questions."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from rag_async.client.cli.base import (
    EXIT_INTERRUPTED,
    ApiUrl,
    app,
    command,
    fail,
    one_line,
    print_json,
    with_client,
)
from rag_async.client.cli.documents import DOCUMENTS
from rag_async.client.cli.questions import Json
from rag_async.client.cli.render import plural

if TYPE_CHECKING:
    from rag_async.client.api import RagClient
    from rag_async.client.evaluation.run import Asked, Evaluation

# 20 passages hold at least 10 documents (at most 2 of one document lead the others, when
# there are others: providers/retrieval/retriever.py), so that MRR@10 and recall@10 see the
# first 10 documents whole.
DEFAULT_TOP_K = 20


QuestionFile = Annotated[
    Path, typer.Argument(metavar="QUESTIONS.jsonl", help="The question file (JSON Lines).")
]
Collection = Annotated[
    str | None,
    typer.Option(
        metavar="NAME",
        help="Search this collection, for the lines that name none (default: "
        "RAG_DEFAULT_COLLECTION, `default`).",
        show_default=False,
    ),
]
TopK = Annotated[
    int, typer.Option("--top-k", metavar="K", min=1, max=50, help="Passages per search.")
]
Concurrency = Annotated[int, typer.Option(metavar="N", min=1, max=16, help="Searches at once.")]


@command(app, "eval", rich_help_panel=DOCUMENTS)
def evaluate(
    questions: QuestionFile,
    collection: Collection = None,
    top_k: TopK = DEFAULT_TOP_K,
    concurrency: Concurrency = 4,
    json: Json = False,
    api_url: ApiUrl = None,
) -> None:
    """Measure retrieval on your own questions: recall@k, MRR@10 and the misses.

    Each line of the file is a JSON object: `{"question": "...", "expected": "guide.md"}`,
    `expected` naming the document that answers it (its source file name, document id or
    title; or a list of them, any of which answers it), with an optional `collection`. Each
    question is searched (POST /search, `--top-k` passages); the documents found rank in the
    order of their first passage. recall@k is the share of questions whose document is among
    the first k, MRR@10 the mean of 1/its rank (0 beyond 10). A miss is a question whose
    document is not among the first 5.

    Exit status: 0 done, 1 a search failed (or the API could not be reached), 2 a bad file.
    """
    from rag_async.client.evaluation.questions import QuestionFileError, read_questions

    try:
        asked = read_questions(questions)
    except QuestionFileError as error:
        fail(str(error), code=2)

    async def run(client: RagClient) -> Evaluation:
        from rag_async.client.evaluation.run import evaluate as search_all

        with _Progress(len(asked)) as advance:
            return await search_all(
                client,
                asked,
                top_k=top_k,
                collection=collection,
                concurrency=concurrency,
                on_done=advance,
            )

    try:
        evaluation = with_client(api_url, run)
    except KeyboardInterrupt:  # the searches asked are read-only: nothing to cancel
        fail("interrupted", code=EXIT_INTERRUPTED)
    if json:
        print_json(_report(evaluation, collection))
    else:
        _print(evaluation)
    raise typer.Exit(1 if evaluation.errors else 0)


class _Progress:
    """A progress bar on stderr while the questions are searched; only on a terminal."""

    def __init__(self, total: int) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        from rag_async.client.cli.base import stderr_console

        console = stderr_console()
        columns = (TextColumn("[bold]searching"), BarColumn(), MofNCompleteColumn())
        self._bar = Progress(*columns, console=console, disable=not console.is_terminal)
        self._task = self._bar.add_task("eval", total=total)

    def __enter__(self) -> Any:
        self._bar.start()
        return lambda: self._bar.advance(self._task)

    def __exit__(self, *_: object) -> None:
        self._bar.stop()


def _report(evaluation: Evaluation, collection: str | None) -> dict[str, Any]:
    return {
        "questions": len(evaluation.asked),
        "top_k": evaluation.top_k,
        "collection": collection,
        "recall": {str(k): round(v, 4) for k, v in evaluation.recall().items()},
        "mrr@10": round(evaluation.mrr(), 4),
        "misses": [_miss(asked) for asked in evaluation.misses],
        "errors": len(evaluation.errors),
    }


def _miss(asked: Asked) -> dict[str, Any]:
    question = asked.question
    return {
        "line": question.line,
        "question": question.text,
        "expected": list(question.expected),
        "rank": asked.rank,
        "found": list(asked.found),
        "error": asked.error,
    }


def _print(evaluation: Evaluation) -> None:
    count = len(evaluation.asked)
    typer.echo(f"{plural(count, 'question')}, {evaluation.top_k} passages each")
    for k, value in evaluation.recall().items():
        typer.echo(f"  recall@{k:<3} {value:.3f}")
    typer.echo(f"  MRR@10    {evaluation.mrr():.3f}")
    misses = evaluation.misses
    if not misses:
        return
    typer.echo(f"\nmisses ({len(misses)} of {count}, not among the first 5 documents):")
    for asked in misses:
        question = asked.question
        typer.echo(f"  line {question.line}: {one_line(question.text)}")
        typer.echo(f"    expected: {one_line(', '.join(question.expected))}")
        if asked.error is not None:
            typer.secho(f"    error: {one_line(asked.error)}", fg="red")
            continue
        where = f"rank {asked.rank}" if asked.rank is not None else "not found"
        instead = ", ".join(asked.found) or "nothing"
        typer.echo(f"    {where}; found: {one_line(instead)}")
