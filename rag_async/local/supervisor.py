"""`rag-async up`: the whole service on one machine, in the foreground.

Starts an embedded Valkey (unless RAG_REDIS_URL is set), one worker process and the API,
ingests the bundled demo corpus on first run, and stops everything cleanly on Ctrl-C/SIGTERM.
It says it is up only once a question can be answered: a worker is heard from and, on first
run, every demo document's job has completed. A child that dies after it was running is
restarted; one that dies at start stops `up`, since restarting it would only fail again.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import structlog

from rag_async.config import Settings
from rag_async.datadir import keep_private, open_to_others
from rag_async.local.valkey import EmbeddedValkey, stored_password
from rag_async.redaction import redact

log = structlog.get_logger("rag_async.up")

_STARTUP_GRACE = 5.0  # a child that dies sooner than this after start is broken, not unlucky
# Offline the demo corpus is indexed quickly; a dense embedder on a slow link, or a job
# retried after a failure (backoff) or a lost worker (RAG_WORKER_DEAD_AFTER), takes far longer.
_DEMO_TIMEOUT = 300.0
_DEMO_MARKER = "demo-corpus-ingested"


@dataclass
class Child:
    name: str
    command: list[str]
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    restarts: int = field(default=0)

    def start(self, env: dict[str, str]) -> None:
        self.process = subprocess.Popen(self.command, env=env)
        self.started_at = time.monotonic()

    def exited(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def stop(self, timeout: float) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _who_may_call(settings: Settings) -> str:
    if settings.api_keys_configured:
        return "API keys are required (RAG_API_KEYS, RAG_ADMIN_KEYS)"
    return "one local user, no API keys: anyone who can reach this address can use it"


class Stop(Exception):
    """Raised by the signal handler to leave the supervision loop."""


def run_up(settings: Settings) -> int:
    data_dir = keep_private(settings.data_dir)  # its children inherit the umask
    if open_to_others(data_dir):
        log.warning("other users may read the data folder: chmod 700 it", path=str(data_dir))
    env = dict(os.environ)
    valkey: EmbeddedValkey | None = None
    children = [
        Child("worker", [sys.executable, "-m", "rag_async.client.cli", "worker"]),
        Child("api", [sys.executable, "-m", "rag_async.client.cli", "api"]),
    ]
    _stop_on_signals()
    try:
        _check_port_free(settings)
        if not settings.redis_url:
            valkey = _start_valkey(settings, data_dir)
            env["RAG_REDIS_URL"] = valkey.url
        if not settings.qdrant_url:
            log.info("embedded qdrant", path=str(data_dir / "qdrant"))
        for child in children:
            child.start(env)
        _wait_until_ready(settings, children)
        if settings.demo_corpus:
            _ingest_demo_once(settings, data_dir, children, env)
        log.info("ready", url=settings.api_base_url, docs=f"{settings.api_base_url}/docs")
        print(
            f"\nrag-async is up at {settings.api_base_url}  (Ctrl-C stops it)\n"
            f"  {_who_may_call(settings)}\n"
            f'  try: {cli_command()} ask{_api_url_option(settings)} "{_demo_question()}"\n',
            flush=True,
        )
        return _supervise(children, env)
    except Stop as stop:
        log.info("stopping", signal=str(stop))
        return 0
    except RuntimeError as error:
        log.error(str(error))
        return 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # let the shutdown finish
        for child in reversed(children):
            # A worker drains its running jobs first (RAG_WORKER_SHUTDOWN_GRACE).
            child.stop(timeout=settings.worker_shutdown_grace + 10)
        if valkey is not None:
            valkey.stop()
        log.info("stopped")


def _stop_on_signals() -> None:
    """SIGTERM and SIGINT (Ctrl-C) raise `Stop`, which leaves the supervision loop."""

    def on_signal(signum: int, _frame: object) -> None:
        raise Stop(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)


def _check_port_free(settings: Settings) -> None:
    """Before anything starts: is the API's port free? Another server answering there would
    otherwise be taken for ours, or our API would stop with a bind error among other logs.

    Asked the way uvicorn binds it, with SO_REUSEADDR: right after a stop, the connections
    our API closed (a browser tab's keep-alive) linger in TIME_WAIT on this port, which a
    plain bind counts as in use although the server's own bind succeeds. Another listener
    still refuses it, and listening too catches one bound the same way but not yet
    listening."""
    with socket.socket(socket.AF_INET6 if ":" in settings.host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((settings.host, settings.port))
            probe.listen(1)
        except OSError as error:
            raise RuntimeError(
                f"cannot listen on {settings.host}:{settings.port} ({error.strerror}): another "
                f"program uses it. Stop it, or pick another port: rag-async up --port "
                f"{settings.port + 1} (and --api-url localhost:{settings.port + 1} for the "
                "commands you run against it)"
            ) from None


def cli_command() -> str:
    """How to run `rag-async` from this shell: its name if that finds this installation,
    else its script's path (a virtual environment not activated: the README's set-up), else
    the module through this Python."""
    script = Path(sys.executable).parent / "rag-async"
    if not script.is_file():
        return f"{shlex.quote(sys.executable)} -m rag_async.client.cli"
    found = shutil.which("rag-async")
    if found and Path(found).resolve() == script.resolve():
        return "rag-async"
    here = Path.cwd()
    # A path with a slash runs as it is; from inside this folder, the shorter one.
    return shlex.quote(str(script.relative_to(here) if script.is_relative_to(here) else script))


def _api_url_option(settings: Settings) -> str:
    """The `--api-url` other commands need to find this API, if its address is not theirs
    by default."""
    if settings.port == Settings.model_fields["port"].default:
        return ""
    return f" --api-url {settings.api_base_url}"


def _start_valkey(settings: Settings, data_dir: Path) -> EmbeddedValkey:
    """The embedded Valkey: loopback only, behind the data folder's password, memory capped."""
    folder = data_dir / "valkey"
    valkey = EmbeddedValkey(
        folder, password=stored_password(folder), maxmemory=settings.valkey_maxmemory
    )
    valkey.start()
    log.info(
        "embedded valkey started",
        url=redact(valkey.url),
        aof=str(valkey.data_dir),
        maxmemory=settings.valkey_maxmemory,
    )
    return valkey


def _supervise(children: list[Child], env: dict[str, str]) -> int:
    while True:
        time.sleep(0.5)
        _check_children(children, env)


def _check_children(children: list[Child], env: dict[str, str]) -> None:
    """Restart a child that died after it was running; raise if one could not start."""
    for child in children:
        code = child.exited()
        if code is None:
            continue
        # Killed by a signal (the OOM killer, an operator's kill -9) is bad luck at any
        # age; exiting by itself this soon means it cannot start.
        killed = code < 0
        if not killed and time.monotonic() - child.started_at < _STARTUP_GRACE:
            raise RuntimeError(f"the {child.name} exited at start (code {code}); see above")
        child.restarts += 1
        log.warning("restarting", child=child.name, exit_code=code, restarts=child.restarts)
        child.start(env)


def _wait_until_ready(settings: Settings, children: list[Child], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for child in children:
            code = child.exited()
            if code is not None:
                raise RuntimeError(f"the {child.name} exited at start (code {code}); see above")
        try:
            ready = httpx.get(f"{settings.api_base_url}/readyz", timeout=1)
            # Up means answering: the API ready and a worker heard from.
            if ready.status_code == 200 and ready.json().get("workers", 0) > 0:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(
        f"the API and a worker did not become ready at {settings.api_base_url} in {timeout} s"
    )


def _ingest_demo_once(
    settings: Settings, data_dir: Path, children: list[Child], env: dict[str, str]
) -> None:
    """Ingest the demo corpus unless a run did already, and return once it is searchable."""
    marker = data_dir / _DEMO_MARKER
    if marker.exists():
        return
    key = settings.api_key.get_secret_value() if settings.api_key else None
    if key is None and settings.api_keys_configured:
        log.warning("demo corpus not ingested: with API keys, RAG_API_KEY names its owner")
        return
    from rag_async.local.demo_corpus import demo_documents

    documents = demo_documents()
    log.info("ingesting the demo corpus (first run only)", documents=len(documents))
    headers = {"Authorization": f"Bearer {key}"} if key else None
    with httpx.Client(base_url=settings.api_base_url, timeout=10, headers=headers) as http:
        jobs = {
            source: _submit_demo(http, title, source, text) for title, source, text in documents
        }
        # The children are still watched: a worker lost now is restarted, and its jobs run
        # on the new one, rather than `up` waiting for them forever.
        _wait_for_jobs(http, jobs, lambda: _check_children(children, env))
    # Only now: a marker left by an unfinished ingestion would skip the corpus for good.
    marker.write_text("the bundled demo corpus was ingested; delete this file to ingest it again\n")


def _submit_demo(http: httpx.Client, title: str, source: str, text: str) -> str:
    """Queue one demo document; its job id."""
    try:
        response = http.post("/documents", json={"text": text, "title": title, "source": source})
    except httpx.HTTPError as error:
        raise _demo_failed(f"{source} could not be submitted: {error}") from None
    if response.status_code != 202:
        raise _demo_failed(f"{source} was refused: {_error_message(response)}")
    return str(response.json()["job_id"])


def _wait_for_jobs(
    http: httpx.Client,
    jobs: dict[str, str],
    check: Callable[[], None],
    timeout: float = _DEMO_TIMEOUT,
) -> None:
    """Wait until the record of every job (source name: job id) says it is complete."""
    pending = dict(jobs)
    deadline = time.monotonic() + timeout
    while True:
        check()
        for source, job_id in list(pending.items()):
            try:
                response = http.get(f"/jobs/{job_id}")
            except httpx.HTTPError:
                break  # the API is restarting: ask again next round
            if response.status_code != 200:
                break
            view = response.json()
            if view["status"] == "complete":
                del pending[source]
            elif view["status"] in ("failed", "cancelled"):
                raise _demo_failed(f"{source}: {view.get('error') or view['status']}")
        if not pending:
            return
        if time.monotonic() > deadline:
            names = ", ".join(sorted(pending))
            raise _demo_failed(f"{names} not ingested after {timeout:.0f} s; see the log above")
        time.sleep(0.2)


def _demo_failed(reason: str) -> RuntimeError:
    return RuntimeError(
        f"the demo corpus could not be ingested: {reason}. "
        "Start again to retry, or set RAG_DEMO_CORPUS=false to start without it."
    )


def _error_message(response: httpx.Response) -> str:
    try:
        return str(response.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return f"HTTP {response.status_code}"


def _demo_question() -> str:
    from rag_async.local.demo_corpus import DEMO_QUESTION

    return DEMO_QUESTION
