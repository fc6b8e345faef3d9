"""`rag-async up --host/--port/--data-dir`, as a process started the way a user starts it."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from rag_async.local.valkey import free_port
from tests.conftest import run_cli
from tests.support.processes import BIN, REPOSITORY, bare_env, console_script, started


@pytest.mark.timeout(90)
def test_up_serves_where_its_options_say(tmp_path: Path) -> None:
    port = free_port()
    data = tmp_path / "kept-here"
    env = bare_env(RAG_DEMO_CORPUS="false", RAG_LOG_LEVEL="INFO", RAG_PORT=str(free_port()))
    env["PATH"] = os.pathsep.join([str(BIN), env["PATH"]])  # an activated environment
    command = [
        *console_script("rag-async"),
        *("up", "--host", "localhost", "--port", str(port), "--data-dir", str(data)),
    ]
    with started("up", command, env, tmp_path) as up:
        up.wait_for("rag-async is up at", stream="stdout", timeout=60)
        assert f"rag-async is up at http://localhost:{port} " in up.stdout(), "over RAG_PORT"
        # ...and the command it suggests finds this API, not the default address.
        assert f"try: rag-async ask --api-url http://localhost:{port} " in up.stdout()
        assert (data / "valkey").is_dir() and (data / "qdrant").is_dir()
        assert not (tmp_path / ".rag-async").exists()

        # Its API and worker processes got the options too.
        stats = subprocess.run(
            [*console_script("rag-async"), "stats", "--api-url", f"localhost:{port}"],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert stats.returncode == 0, stats.stderr
        assert "workers: 1 alive" in stats.stdout, stats.stdout
        assert up.terminate(timeout=20) == 0, up.describe()


@pytest.mark.timeout(120)
def test_up_keeps_every_file_of_the_data_folder_private(tmp_path: Path) -> None:
    """After a run (Valkey's AOF and log, the embedded store, an upload and a question), no
    file in the data folder is readable by group or others, and no folder is open beyond its
    owner: what an earlier run left open is closed too."""
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    leftover = data / "valkey" / "valkey.log"  # as a run before this fix left it
    leftover.parent.mkdir(mode=0o755)
    leftover.write_text("an earlier run\n")
    leftover.chmod(0o644)
    port = free_port()
    env = bare_env(RAG_DEMO_CORPUS="true", RAG_PORT=str(port), RAG_DATA_DIR=str(data))
    with started("up", [*console_script("rag-async"), "up"], env, tmp_path) as up:
        up.wait_for("rag-async is up at", stream="stdout", timeout=90)  # the demo ingested
        api = ("--api-url", f"localhost:{port}")
        asked = run_cli("ask", *api, "How do I handle exceptions?", env=env)
        assert asked.returncode == 0, asked.stderr
        assert up.terminate(timeout=30) == 0, up.describe()
    modes = {
        path: stat.S_IMODE(path.lstat().st_mode)
        for path in [data, *data.rglob("*")]
        if not path.is_symlink()
    }
    assert any(path.suffix == ".aof" for path in modes), sorted(modes)
    assert any("qdrant" in path.parts for path in modes if path.is_file()), sorted(modes)
    opened = {
        str(path.relative_to(data)): oct(mode) for path, mode in modes.items() if mode & 0o077
    }
    assert opened == {}


def test_up_refuses_bad_options_before_starting_anything(tmp_path: Path) -> None:
    env = bare_env(RAG_DATA_DIR=str(tmp_path / "data"))
    no_port = run_cli("up", "--port", "0", env=env)
    anyone = run_cli("up", "--host", "0.0.0.0", "--port", str(free_port()), env=env)

    assert no_port.returncode == 2 and "--port" in no_port.stderr, no_port.stderr
    assert anyone.returncode == 2, anyone.stderr
    assert "RAG_API_KEYS" in anyone.stderr and "Traceback" not in anyone.stderr
    assert not (tmp_path / "data").exists()


@pytest.mark.timeout(120)
def test_up_restarts_on_its_port_at_once_after_ctrl_c_with_a_client_connected(
    tmp_path: Path,
) -> None:
    """A browser tab keeps its connection open: on Ctrl-C our API closes it first, which
    leaves the port's side of it waiting (TIME_WAIT) for a minute. Starting again at once
    still works, as uvicorn's own bind would."""
    port = free_port()
    env = bare_env(RAG_DEMO_CORPUS="false", RAG_PORT=str(port))
    env["PATH"] = _without(BIN, env["PATH"])  # the README's set-up: .venv not activated
    command = [*console_script("rag-async"), "up"]
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as tab:
        with started("up-1", command, env, tmp_path) as up:
            up.wait_for("rag-async is up at", stream="stdout", timeout=60)
            assert tab.get("/readyz").status_code == 200  # its connection stays open
            up.process.send_signal(signal.SIGINT)
            assert up.process.wait(30) == 0, up.describe()
        with started("up-2", command, env, tmp_path) as again:
            again.wait_for("rag-async is up at", stream="stdout", timeout=60)
            assert "cannot listen" not in again.stderr(), again.describe()
            _assert_the_suggested_command_runs(again.stdout(), env, tmp_path)
            assert again.terminate(timeout=20) == 0, again.describe()


def test_up_still_refuses_a_port_another_server_listens_on(tmp_path: Path) -> None:
    """Bound the way servers bind (SO_REUSEADDR, as uvicorn does), a listener is still one."""
    with socket.socket() as busy:
        busy.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        env = bare_env(RAG_PORT=str(port), RAG_DATA_DIR=str(tmp_path / "data"))
        result = run_cli("up", env=env, timeout=30)
    assert result.returncode == 1, result.stderr
    assert f"cannot listen on 127.0.0.1:{port} (Address already in use)" in result.stderr
    assert "Traceback" not in result.stderr


def _without(folder: Path, path: str) -> str:
    return os.pathsep.join(entry for entry in path.split(os.pathsep) if Path(entry) != folder)


def _assert_the_suggested_command_runs(banner: str, env: dict[str, str], cwd: Path) -> None:
    """The banner's `try:` line names a program this shell finds, whether or not the
    environment `rag-async` is installed in is activated."""
    found = re.search(r"^  try: (.+) ask (--api-url \S+ )?\"", banner, re.M)
    assert found, banner
    program = shlex.split(found.group(1))
    if shutil.which("rag-async", path=env["PATH"]) is None:
        assert program != ["rag-async"], banner
    stats = subprocess.run(
        [*program, "stats"], env=env, cwd=cwd, capture_output=True, text=True, timeout=30
    )
    assert stats.returncode == 0 and "workers: 1 alive" in stats.stdout, stats.stderr


_STARTS_A_VALKEY = """
import sys, time
from pathlib import Path
from rag_async.local.valkey import EmbeddedValkey

server = EmbeddedValkey(Path(sys.argv[1]), appendonly=False)
server.start()
print(server.process.pid, server.port, flush=True)
time.sleep(120)
"""


@pytest.mark.timeout(60)
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl is Linux's")
def test_the_embedded_valkey_dies_with_the_process_that_started_it(tmp_path: Path) -> None:
    """Killed outright, its parent cannot stop it: it must not live on, holding its port
    and the shell's pipe."""
    parent = subprocess.Popen(
        [sys.executable, "-c", _STARTS_A_VALKEY, str(tmp_path / "valkey")],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPOSITORY,
        env=bare_env(PYTHONPATH=str(REPOSITORY)),
    )
    assert parent.stdout is not None
    pid, port = (int(word) for word in parent.stdout.readline().split())
    try:
        assert _alive(pid)
        parent.kill()
        parent.wait(10)
        deadline = time.monotonic() + 20
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(pid), "valkey-server outlived the process that started it"
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
    finally:
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    """Whether the process runs (a zombie waiting for its reaper does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")
