"""`rag-async chat` and `ask --conversation`: a conversation from the terminal, against the real
stack. `chat` is driven through a pseudo-terminal, keys typed as a person types them: Ctrl-C
reaches it as SIGINT from its controlling terminal, as it would at a shell."""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import re
import select
import struct
import subprocess
import sys
import termios

import pytest

from rag_async.config import Settings
from tests.conftest import REPO, Stack, cli_env, ingest, run_cli
from tests.support.openai_server import OpenAIApp, expected_answer

# The child makes the pty its controlling terminal (a new session), then becomes `rag-async`.
_ON_A_TERMINAL = (
    "import os, sys; os.login_tty(0); "
    "os.execv(sys.executable, [sys.executable, '-m', 'rag_async.client.cli', *sys.argv[1:]])"
)
# What a terminal does to the text (colours, the spinner's cursor moves, CR before LF).
_CONTROLS = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07|\r")


class Terminal:
    """A program on a pseudo-terminal: keys typed in, its screen's text read back in order."""

    def __init__(self, *args: str, env: dict[str, str]) -> None:
        self._fd, child = os.openpty()
        fcntl.ioctl(self._fd, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 200, 0, 0))
        self.process = subprocess.Popen(
            [sys.executable, "-c", _ON_A_TERMINAL, *args],
            stdin=child,
            stdout=child,
            stderr=child,
            env=env,
            cwd=REPO,
        )
        os.close(child)
        self.screen = ""
        self._read = 0  # how far `expect` has matched

    def type(self, keys: str) -> None:
        os.write(self._fd, keys.encode())

    async def expect(self, pattern: str, within: float = 30) -> re.Match[str]:
        """The next match of `pattern` in what the program printed, waiting for it."""
        deadline = asyncio.get_running_loop().time() + within
        while (found := re.compile(pattern, re.S).search(self.screen, self._read)) is None:
            if asyncio.get_running_loop().time() > deadline:
                pytest.fail(f"never printed {pattern!r}; the screen:\n{self.screen}")
            self.screen += _CONTROLS.sub("", await asyncio.to_thread(self._chunk))
        self._read = found.end()
        return found

    def _chunk(self) -> str:
        if not select.select([self._fd], [], [], 0.2)[0]:
            return ""
        try:
            return os.read(self._fd, 65536).decode(errors="replace")
        except OSError:  # the program has gone and the pty is closed
            return ""

    async def exit_code(self) -> int:
        return await asyncio.to_thread(self.process.wait, 30)

    def close(self) -> None:
        self.process.kill()
        self.process.wait()
        os.close(self._fd)


def _chat(stack: Stack) -> Terminal:
    return Terminal("chat", env=cli_env(stack.settings, RAG_API_URL=stack.base_url))


# One answer, then its sources, then the prompt for the next question.
_ANSWERED = re.escape(expected_answer(12)) + r"\n\nSources:\n(  \[\d\] [^\n]+\n)+\n> $"


async def _running(stack: Stack, job_id: str) -> None:
    for _ in range(200):
        if (await stack.client.job(job_id))["status"] == "in_progress":
            return
        await asyncio.sleep(0.05)
    pytest.fail(f"job {job_id} never started")


@pytest.mark.timeout(120)
async def test_chat_holds_a_conversation_and_ctrl_c_stops_only_the_answer(
    stack: Stack, llm: OpenAIApp
) -> None:
    await ingest(stack)
    terminal = _chat(stack)
    try:
        conversation_id = (await terminal.expect(r"conversation (\S+): Ctrl-C"))[1]
        await terminal.expect(r"> $")
        for question in ("How long does green tea brew?", "And black tea?"):
            terminal.type(question + "\n")
            await terminal.expect(_ANSWERED)

        llm.config.ttft = 30.0  # an answer that would take half a minute to start
        terminal.type("Is anyone there?\n")
        stopped = (await terminal.expect(r"\(job ([0-9a-f]{32})\)"))[1]
        await _running(stack, stopped)
        terminal.type("\x03")  # Ctrl-C: the answer stops, the session goes on
        await terminal.expect(rf"stopped: cancelled job {stopped}\n\n> $")
        llm.config.ttft = 0.0

        terminal.type("At what temperature?\n")
        await terminal.expect(_ANSWERED)
        terminal.type("\x03")  # Ctrl-C at the prompt leaves
        assert await terminal.exit_code() == 0, terminal.screen
    finally:
        terminal.close()

    conversation = await stack.client.conversation(conversation_id)
    assert [turn["question"] for turn in conversation["turns"]] == [
        "How long does green tea brew?",
        "And black tea?",
        "At what temperature?",
    ]
    assert all(turn["answer"] == expected_answer(12) for turn in conversation["turns"])
    # A follow-up is searched for with the turn before it (the API's part, seen from here).
    assert conversation["turns"][1]["search_query"] is not None
    for _ in range(100):  # a running job stops within a poll of its worker
        if (await stack.client.job(stopped))["status"] == "cancelled":
            break
        await asyncio.sleep(0.1)
    assert (await stack.client.job(stopped))["status"] == "cancelled"
    assert "Traceback" not in terminal.screen, terminal.screen


async def test_ctrl_d_at_the_prompt_leaves_the_chat() -> None:
    terminal = Terminal("chat", env=cli_env(Settings(_env_file=None)))
    try:
        await terminal.expect(r"> $")
        terminal.type("\x04")
        assert await terminal.exit_code() == 0, terminal.screen
    finally:
        terminal.close()


async def test_ask_conversation_goes_on_with_a_conversation(stack: Stack) -> None:
    await ingest(stack)
    env = cli_env(stack.settings, RAG_API_URL=stack.base_url)

    async def ask(question: str) -> dict[str, object]:
        args = ("ask", "--json", "--conversation", "tea-talk", question)
        result = await asyncio.to_thread(run_cli, *args, env=env)
        assert result.returncode == 0, result.stderr
        answer: dict[str, object] = json.loads(result.stdout)
        return answer

    first = await ask("How long does green tea brew?")
    second = await ask("And black tea?")

    assert first["conversation_id"] == second["conversation_id"] == "tea-talk"
    conversation = await stack.client.conversation("tea-talk")
    assert [turn["job_id"] for turn in conversation["turns"]] == [
        first["job_id"],
        second["job_id"],
    ]
