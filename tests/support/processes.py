"""Commands run as real processes in their own session, stopped or killed the way an operator
(or a crash) would, and cleaned up whatever happened."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TextIO

import pytest

from tests.conftest import rag_async_command

BIN = Path(sys.executable).parent


def console_script(name: str) -> list[str]:
    """The installed script (what a user types), or its module form if it is not installed."""
    script = BIN / name
    if script.exists():
        return [str(script)]
    return rag_async_command() if name == "rag-async" else [sys.executable, "-m", name]


REPOSITORY = Path(__file__).resolve().parents[2]


async def run_python(script: str, *args: str) -> tuple[int, str, str]:
    """Run `script` in another Python process, from the repository's root (a second process
    holding what this one holds, say); its exit code, standard output and standard error."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        script,
        *args,
        cwd=REPOSITORY,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


def bare_env(**extra: str) -> dict[str, str]:
    """This environment without any rag-async configuration (and no OpenAI key, which would
    switch the offline answerer off), plus `extra`."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("RAG_") and k not in ("OPENAI_API_KEY", "OPENAI_BASE_URL")
    }
    env.update(PYTHONUNBUFFERED="1", **extra)
    return env


class Proc:
    """A command in its own session (so its whole process group can be ended), its stdout and
    stderr in files (so a chatty child never blocks on a full pipe)."""

    def __init__(self, name: str, command: list[str], env: Mapping[str, str], cwd: Path) -> None:
        logs = cwd / f"{name}.logs"
        logs.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.stdout_path = logs / "stdout"
        self.stderr_path = logs / "stderr"
        self._files: list[TextIO] = [self.stdout_path.open("w"), self.stderr_path.open("w")]
        self.process = subprocess.Popen(
            command,
            env=dict(env),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=self._files[0],
            stderr=self._files[1],
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def describe(self) -> str:
        return f"--- {self.name} stdout:\n{self.stdout()}\n--- {self.name} stderr:\n{self.stderr()}"

    def ready(self, stream: str, text: str) -> bool:
        """Whether `text` appeared on `stream`; fails at once if the process died first."""
        if text in (self.stdout() if stream == "stdout" else self.stderr()):
            return True
        code = self.process.poll()
        assert code is None, f"{self.name} exited ({code}) before {text!r}\n{self.describe()}"
        return False

    def wait_for(self, text: str, *, stream: str = "stderr", timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not self.ready(stream, text):
            assert time.monotonic() < deadline, f"no {text!r} in {timeout} s\n{self.describe()}"
            time.sleep(0.1)

    async def async_wait_for(
        self, text: str, *, stream: str = "stderr", within: float = 60
    ) -> None:
        deadline = time.monotonic() + within
        while not self.ready(stream, text):
            assert time.monotonic() < deadline, f"no {text!r} in {within} s\n{self.describe()}"
            await asyncio.sleep(0.1)

    def terminate(self, timeout: float = 20) -> int:
        """SIGTERM, as an operator or a container runtime stops it; its exit code."""
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(
                f"{self.name} did not stop within {timeout} s of SIGTERM\n{self.describe()}"
            )

    async def async_terminate(self, within: float = 20) -> int:
        return await asyncio.to_thread(self.terminate, within)

    def kill(self) -> None:
        """SIGKILL, as a crash or the OOM killer ends it: no cleanup of any kind."""
        self.process.kill()
        self.process.wait(10)

    def group_alive(self) -> bool:
        """Whether any process of its group (it, or a child it left behind) still exists."""
        try:
            os.killpg(self.pid, 0)
        except ProcessLookupError:
            return False
        return True

    def cleanup(self) -> None:
        """Whatever happened, leave nothing of it running."""
        if self.process.poll() is None or self.group_alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(10)
        for file in self._files:
            file.close()


@contextlib.contextmanager
def started(name: str, command: list[str], env: Mapping[str, str], cwd: Path) -> Iterator[Proc]:
    proc = Proc(name, command, env, cwd)
    try:
        yield proc
    finally:
        proc.cleanup()
