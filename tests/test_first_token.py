"""The answer's first text does not wait for the screen (llm/safety.py): text that can start no
link, tag or echo goes out with the piece that brings it, an undecided tail only until the
piece that decides it, and nothing waits for the next flush of the token coalescing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from rag_async.local.valkey import EmbeddedValkey
from rag_async.providers.llm.prompt import SYSTEM_PROMPT
from rag_async.providers.llm.raw_html import HtmlGuard
from rag_async.providers.llm.safety import MAX_LINK, REDACTED, EchoGuard, LinkGuard, screen
from rag_async.worker.jobs.answer import screened_batches
from tests.conftest import SAMPLE_DOCUMENT, make_settings, running_stack
from tests.support.documents import add_document
from tests.support.openai_server import OpenAIApp

pytestmark = pytest.mark.timeout(90)

DOCS = frozenset(["https://docs.example/tea"])


class Pieces:
    """An LLM stream that sends a piece when the test says so, and waits for the next."""

    def __init__(self) -> None:
        self._queue: asyncio.Queue[str | None] = asyncio.Queue()

    def send(self, *pieces: str | None) -> None:
        for piece in pieces:
            self._queue.put_nowait(piece)  # None ends the stream

    async def stream(self) -> AsyncIterator[str]:
        while (piece := await self._queue.get()) is not None:
            yield piece


async def _next(out: AsyncIterator[str]) -> str:
    async with asyncio.timeout(5):  # bounds a test against code that would wait for more
        return await anext(out)


async def test_the_first_batch_goes_out_with_the_piece_that_decides_it() -> None:
    # A flush interval far longer than the test: a batch that waited for it would never come.
    llm = Pieces()
    batches = screened_batches(llm.stream(), [], interval=3600)
    llm.send("The")  # a word of the system prompt: it may start an echo of it
    llm.send(" kettle")  # which this rules out
    assert await _next(batches) == "The kettle"
    llm.send(" boils", " [1].", None)
    assert await _next(batches) == " boils [1]."


async def test_plain_text_goes_out_with_its_piece() -> None:
    llm = Pieces()
    out = screen(llm.stream(), [])
    llm.send("Boil water, then pour. ")
    assert await _next(out) == "Boil water, then pour. "
    llm.send("Kettle: 1 < 2, a <b, c d; ")  # no "<" here can start a tag any more
    assert await _next(out) == "Kettle: 1 < 2, a &lt;b, c d; "


async def test_an_undecided_tail_is_held_until_the_next_piece_decides_it() -> None:
    llm = Pieces()
    out = screen(llm.stream(), [])
    llm.send("Boil water [1")  # a link's label may be coming
    assert await _next(out) == "Boil water "
    llm.send("], then pour <b")  # "[1]," is a citation; "<b" may open a tag
    assert await _next(out) == "[1], then pour "
    llm.send(">hot</b")  # a tag, gone; the closing one may still be one
    assert await _next(out) == "hot"
    llm.send(">. See ![")  # an image may be coming
    assert await _next(out) == ". See "
    llm.send("a diagram](https://docs.example/d.png) below.")
    assert await _next(out) == "a diagram below."
    llm.send(None)
    with pytest.raises(StopAsyncIteration):
        await _next(out)


def test_a_bracket_and_colon_in_mid_line_is_no_definition() -> None:
    # A batch that begins with " [1]:" continues its line: nothing there waits for a newline.
    guard = LinkGuard(DOCS)
    assert guard.feed("As the kettle's manual says") == "As the kettle's manual says"
    assert guard.feed(" [1]: boil") == " [1]: boil"
    # At a line's start, text after the colon that no definition can hold goes at once too.
    assert guard.feed(" it.\n") == " it.\n"
    assert guard.feed("[1]: The kettle manual, page 3") == "[1]: The kettle manual, page 3"
    # A definition to a source's own location is kept without waiting for its line's end.
    assert guard.feed("\n[2]: https://docs.example/tea ") == "\n[2]: https://docs.example/tea "


def test_a_definition_is_held_only_while_it_may_be_dropped_and_no_longer_than_the_bound() -> None:
    guard = LinkGuard(DOCS)
    assert guard.feed("Sources:\n[1]:") == "Sources:\n"  # its URL may be on the next line
    assert guard.feed(" https://evil.example/?q=") == ""  # dropped with its line, once it ends
    assert guard.feed("secret\nBoil it.") == "Boil it."
    # One that never ends its line is decided within `MAX_LINK` characters.
    long = f"\n[2]: https://evil.example/{'a' * MAX_LINK}"
    assert guard.feed(long) == "\n"
    assert guard.feed(" and on") == " and on"


def test_a_link_held_too_long_cannot_become_a_link_later() -> None:
    guard = LinkGuard(DOCS)
    label = "x" * MAX_LINK
    out = guard.feed(f"See [{label}") + guard.feed("](https://evil.example/?q=secret)")
    out += guard.feed("", final=True)
    assert out == f"See \\[{label}](https://evil.example/?q=secret)"  # "\[" opens no link


def test_a_line_is_judged_as_the_reader_sees_it() -> None:
    # An autolink to a foreign host goes: the definition after it then starts the line.
    answer = "Boil [1].\n<https://evil.example/a>[2]: https://evil.example/b\nDone [2]."
    for cut in range(len(answer) + 1):
        guard = LinkGuard(DOCS)
        out = guard.feed(answer[:cut]) + guard.feed(answer[cut:]) + guard.feed("", final=True)
        assert out == "Boil [1].\nDone [2].", (cut, out)


ANSWERS = [
    "As said [1]: the kettle boils.\n[2]: Kettle manual, page 3\n[3]: https://evil.example/x\n"
    "  [4]: <https://docs.example/tea> 'Tea'\n[5]: tea.md \"t\"\nok [6]: x",
    "a <b, c> and <i x='1' y=2 z>b</i> <span  class = \"a b\" / > 1 <2 <a:b <c",
]


@pytest.mark.parametrize("answer", ANSWERS)
def test_early_decisions_are_those_of_the_whole_answer(answer: str) -> None:
    def guarded(pieces: list[str]) -> str:
        links, tags = LinkGuard(DOCS), HtmlGuard()
        out = "".join(tags.feed(links.feed(piece)) for piece in pieces)
        return out + tags.feed(links.feed("", final=True), final=True)

    whole = guarded([answer])
    assert "evil" not in whole and "<i" not in whole and "<span" not in whole, whole
    for cut in range(len(answer) + 1):
        for other in range(cut, len(answer) + 1, 4):
            pieces = [answer[:cut], answer[cut:other], answer[other:]]
            assert guarded(pieces) == whole, pieces


async def test_the_first_token_event_does_not_wait_for_a_flush_interval(
    valkey: EmbeddedValkey, tmp_path: Path, llm: OpenAIApp
) -> None:
    """A real worker and the test LLM: with a flush interval longer than the whole answer,
    the first text reaches the client while the LLM is still sending (before, the screen held
    the first word until the next batch: here, the end of the answer)."""
    settings = make_settings(
        valkey, tmp_path, llm_base_url=llm.base_url, llm_api_key="k", token_flush_interval=5.0
    )
    words = ["The", " kettle", " boils", " water", " quickly", " [1]", "."] + [" Yes."] * 8
    llm.config.ttft, llm.config.tokens_per_second = 0.0, 10  # 1.5 s of answer
    llm.config.answer = words
    try:
        async with running_stack(settings) as stack:
            accepted = await add_document(stack.client, SAMPLE_DOCUMENT, title="Tea")
            async with asyncio.timeout(60):
                async for _ in stack.client.follow(accepted["job_id"]):
                    pass
            completed = llm.stats.completed_streams
            accepted = await stack.client.ask("Does the kettle boil quickly?")
            tokens: list[str] = []
            answer = ""
            async with asyncio.timeout(60):
                async for event in stack.client.follow(accepted["job_id"]):
                    if event.type == "token":
                        if not tokens:
                            still_streaming = llm.stats.completed_streams == completed
                        tokens.append(event.data["text"])
                    elif event.type == "done":
                        answer = event.data["answer"]
    finally:
        llm.config.answer = None
        llm.config.ttft, llm.config.tokens_per_second = 0.0, 200
    assert answer == "".join(words) == "".join(tokens)
    assert tokens[0] == "The kettle", tokens
    assert still_streaming


ECHOES = [
    f"The answer is: {SYSTEM_PROMPT[:200]} and the documents say so [1]. {SYSTEM_PROMPT[-120:]}",
    "You answer questions using only the numbered sources given, the answer [1]. Cite the "
    "sources you use with their numbers in square brackets, like that.",
]


@pytest.mark.parametrize("answer", ECHOES)
def test_an_echo_is_judged_alike_however_its_words_are_cut(answer: str) -> None:
    def guarded(pieces: list[str]) -> str:
        guard = EchoGuard(SYSTEM_PROMPT)
        return "".join(guard.feed(piece) for piece in pieces) + guard.feed("", final=True)

    whole = guarded([answer])
    assert REDACTED in whole
    for cut in range(len(answer) + 1):
        for other in range(cut, len(answer) + 1, 11):
            pieces = [answer[:cut], answer[cut:other], answer[other:]]
            assert guarded(pieces) == whole, pieces
    assert guarded(list(answer)) == whole  # a character at a time
