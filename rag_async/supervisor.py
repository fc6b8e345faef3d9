"""`rag-async up`: the whole service on one machine, in the foreground.

Starts an embedded Valkey (unless RAG_REDIS_URL is set), one worker process and the API,
ingests the bundled demo corpus on first run, and stops everything cleanly on Ctrl-C/SIGTERM.
A child that dies after it was running is restarted; one that dies at start stops `up`,
since restarting it would only fail again.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import structlog

from .config import Settings
from .embedded_valkey import EmbeddedValkey

log = structlog.get_logger("rag_async.up")

_STARTUP_GRACE = 5.0  # a child that dies sooner than this after start is broken, not unlucky


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


class Stop(Exception):
    """Raised by the signal handler to leave the supervision loop."""


def run_up(settings: Settings) -> int:
    data_dir = settings.data_dir
    data_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    valkey: EmbeddedValkey | None = None
    children = [
        Child("worker", [sys.executable, "-m", "rag_async.cli", "worker"]),
        Child("api", [sys.executable, "-m", "rag_async.cli", "api"]),
    ]

    def on_signal(signum: int, _frame: object) -> None:
        raise Stop(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        if not settings.redis_url:
            valkey = EmbeddedValkey(data_dir / "valkey")
            valkey.start()
            env["RAG_REDIS_URL"] = valkey.url
            log.info("embedded valkey started", url=valkey.url, aof=str(valkey.data_dir))
        if not settings.qdrant_url:
            log.info("embedded qdrant", path=str(data_dir / "qdrant"))
        for child in children:
            child.start(env)
        _wait_until_ready(settings, children)
        if settings.demo_corpus:
            _ingest_demo_once(settings, data_dir)
        log.info("ready", url=settings.api_base_url, docs=f"{settings.api_base_url}/docs")
        print(
            f"\nrag-async is up at {settings.api_base_url}  (Ctrl-C stops it)\n"
            f'  try: rag-async ask "{_demo_question()}"\n',
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


def _supervise(children: list[Child], env: dict[str, str]) -> int:
    while True:
        time.sleep(0.5)
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


def _ingest_demo_once(settings: Settings, data_dir: Path) -> None:
    marker = data_dir / "demo-corpus-ingested"
    if marker.exists():
        return
    from .demo_corpus import demo_documents
    from .ingest_client import ingest_texts

    documents = [(title, source, text) for title, source, text in demo_documents()]
    log.info("ingesting the demo corpus (first run only)", documents=len(documents))
    failures = ingest_texts(settings.api_base_url, documents, show_progress=False)
    if failures:
        raise RuntimeError(f"demo corpus ingestion failed: {failures}")
    marker.write_text("the bundled demo corpus was ingested; delete this file to ingest it again\n")


def _demo_question() -> str:
    from .demo_corpus import DEMO_QUESTION

    return DEMO_QUESTION
