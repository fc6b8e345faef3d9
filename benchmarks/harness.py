"""Shared by the benchmark scripts: start the real services as separate processes (so each
one's CPU can be read from /proc), and a few statistics helpers.

The fault benchmark (reliability.py) also starts workers while a run is under way, gives
workers their own environment (a Redis URL through a proxy, a shorter grace), and sends each
process's output to a file, so that the warnings a fault provokes do not flood the report."""

from __future__ import annotations

import asyncio
import atexit
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from rag_async.local.valkey import EmbeddedValkey, free_port  # noqa: E402

_TICKS = os.sysconf("SC_CLK_TCK")

# Questions about the demo corpus, asked in turn by the load and reliability scripts.
QUESTIONS = [
    "How do I handle exceptions in Python?",
    "What is a list comprehension?",
    "How do I create a virtual environment?",
    "How do classes inherit from other classes?",
    "How do I read and write files?",
    "What does the import statement do?",
]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def rss_mib(pid: int, field: str = "VmRSS") -> float:
    """A memory figure of /proc/PID/status (VmRSS: now, VmHWM: the peak so far), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} for process {pid}")


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


@dataclass
class Services:
    """Valkey, the OpenAI-compatible test server, the API and N workers, each a process
    (or, `inline`, the replaced design's single app in place of the API and workers)."""

    valkey: EmbeddedValkey
    llm: subprocess.Popen[str]
    llm_url: str
    api: subprocess.Popen[bytes]
    api_url: str
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)  # what every worker starts from
    data: Path = Path()
    corpus: str | None = "demo"  # what every worker's store holds: demo, docs or nothing
    logs: Path | None = None  # each process's stdout and stderr go to files here, if set
    _files: ExitStack = field(default_factory=ExitStack, repr=False)

    @property
    def llm_admin_url(self) -> str:
        """The test LLM's own endpoints (`/_faults`, `/_stats`) live beside `/v1`."""
        return self.llm_url.removesuffix("/v1")

    @property
    def prefix(self) -> str:
        return self.env.get("RAG_KEY_PREFIX", "rag:")

    def pids(self) -> dict[str, int]:
        assert self.valkey.process is not None
        pids = {"api": self.api.pid, "valkey": self.valkey.process.pid, "llm": self.llm.pid}
        for i, worker in enumerate(self.workers):
            pids[f"worker{i}" if len(self.workers) > 1 else "worker"] = worker.pid
        return pids

    def cpu(self) -> dict[str, float]:
        return {name: cpu_seconds(pid) for name, pid in self.pids().items()}

    def start_worker(self, env: Mapping[str, str] | None = None) -> subprocess.Popen[bytes]:
        """Start one more worker (with `env` on top of the shared environment); returns
        without waiting for it (see `wait_worker_ready`)."""
        n = len(self.workers)
        # Embedded Qdrant is one process per folder: each worker gets its own, with its own
        # copy of the corpus (as read replicas of a Qdrant server would be).
        data_dir = self.data / f"w{n}"
        if self.corpus and not data_dir.exists():
            store = self.env.get("RAG_STORE", "edge")
            dense = self.env.get("RAG_OFFLINE_EMBEDDER", "static")
            shutil.copytree(_indexed_corpus(self.corpus, store, dense), data_dir)
        worker = self._popen(
            f"worker{n}",
            [sys.executable, "-m", "rag_async.client.cli", "worker"],
            {**self.env, "RAG_DATA_DIR": str(data_dir), **(env or {})},
        )
        self.workers.append(worker)
        return worker

    def wait_worker_ready(self, worker: subprocess.Popen[bytes], timeout: float = 60) -> None:
        """Until the worker's first heartbeat is in Valkey (its startup is over)."""
        _wait_heartbeat(self.valkey.url, self.prefix, worker, timeout)

    def _popen(
        self, name: str, command: list[str], env: Mapping[str, str]
    ) -> subprocess.Popen[bytes]:
        return _popen(self._files, self.logs, name, command, env)


def _popen(
    files: ExitStack, logs: Path | None, name: str, command: list[str], env: Mapping[str, str]
) -> subprocess.Popen[bytes]:
    """A service process, its output to `logs/<name>.out|err` if `logs` is set (else ours)."""
    out: IO[bytes] | None = None
    err: IO[bytes] | None = None
    if logs is not None:
        logs.mkdir(parents=True, exist_ok=True)
        out = files.enter_context((logs / f"{name}.out").open("ab"))
        err = files.enter_context((logs / f"{name}.err").open("ab"))
    return subprocess.Popen(command, env=dict(env), stdout=out, stderr=err)


@contextmanager
def services(
    *,
    ttft: float,
    tokens: int,
    tps: float,
    workers: int = 1,
    corpus: str | None = "demo",
    inline: bool = False,
    env: dict[str, str] | None = None,
    worker_env: Sequence[Mapping[str, str]] = (),
    logs: Path | None = None,
) -> Iterator[Services]:
    """The services, stopped on the way out. `env` applies to the API and the workers,
    `worker_env[i]` to worker i only; `logs` collects their output in files."""
    with tempfile.TemporaryDirectory(prefix="rag-bench-") as tmp:
        data = Path(tmp)
        valkey = EmbeddedValkey(data / "valkey", appendonly=True)
        valkey.start()
        llm = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.support.openai_server",
                "--port",
                "0",
                "--ttft",
                str(ttft),
                "--tokens",
                str(tokens),
                "--tps",
                str(tps),
            ],
            cwd=REPO,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert llm.stdout is not None
        llm_url = llm.stdout.readline().split()[-1]
        port = free_port()
        base_env = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")}
        base_env.update(
            {
                "RAG_REDIS_URL": valkey.url,
                "RAG_DATA_DIR": str(data),
                "RAG_PORT": str(port),
                "RAG_LLM_BASE_URL": llm_url,
                "RAG_LLM_API_KEY": "bench",
                "RAG_LOG_LEVEL": "WARNING",
                # One loopback client plays every user: the caps on one client's connections
                # and on the keyless user's streams would measure themselves.
                "RAG_MAX_CONNECTIONS_PER_CLIENT": "0",
                "RAG_MAX_STREAMS_WITHOUT_KEYS": "0",
                **(env or {}),
            }
        )
        api_url = f"http://127.0.0.1:{port}"
        files = ExitStack()
        api: subprocess.Popen[bytes] | None = None
        svc: Services | None = None
        try:
            if inline:  # the replaced design: one process does it all, no worker
                if corpus:
                    store = base_env.get("RAG_STORE", "edge")
                    dense = base_env.get("RAG_OFFLINE_EMBEDDER", "static")
                    asyncio.run(_index_corpus(data, corpus, store, dense))
                command = [sys.executable, str(REPO / "benchmarks" / "inline_app.py")]
                workers = 0
            else:
                command = [sys.executable, "-m", "rag_async.client.cli", "api"]
            api = _popen(files, logs, "api", command, base_env)
            svc = Services(
                valkey, llm, llm_url, api, api_url,
                env=base_env, data=data, corpus=corpus, logs=logs, _files=files,
            )  # fmt: skip
            for i in range(workers):
                svc.start_worker(worker_env[i] if i < len(worker_env) else None)
            _wait_ready(api_url)
            for worker in svc.workers:
                svc.wait_worker_ready(worker)
            if svc.workers:
                _wait_worker(valkey.url, svc.prefix)
            if os.environ.get("BENCH_PIDS"):  # for attaching a profiler (py-spy) to them
                Path(os.environ["BENCH_PIDS"]).write_text(
                    json.dumps({"api": svc.api.pid, "workers": [p.pid for p in svc.workers]})
                )
            yield svc
        finally:
            # Workers started during the run are in `svc.workers` too; a killed one is
            # simply reaped.
            started = [p for p in [api, *(svc.workers if svc else [])] if p is not None]
            for process in [*started, llm]:
                process.terminate()
            for process in [*started, llm]:
                try:
                    process.wait(15)
                except subprocess.TimeoutExpired:
                    process.kill()
            valkey.stop()
            files.close()


# The Python 3.11 documentation as Debian's python3.11-doc installs it: 530 HTML pages.
PYTHON_DOCS = Path("/usr/share/doc/python3.11/html")
_corpora: dict[tuple[str, str, str], Path] = {}


def _indexed_corpus(corpus: str, store: str, dense: str) -> Path:
    """A data folder with `corpus` indexed in `store` (with the offline dense model, or
    lexical only: `dense` is RAG_OFFLINE_EMBEDDER's value), built once per process and copied
    for each worker: indexing takes seconds, copying a moment."""
    if (corpus, store, dense) not in _corpora:
        folder = Path(tempfile.mkdtemp(prefix="rag-bench-corpus-"))
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        asyncio.run(_index_corpus(folder / "data", corpus, store, dense))
        _corpora[corpus, store, dense] = folder / "data"
    return _corpora[corpus, store, dense]


def corpus_documents(corpus: str) -> Iterator[tuple[str, str, str]]:
    """(title, source, text) of each document of `corpus`: "demo" (the bundled tutorial
    pages) or "docs" (the Python documentation, parsed as an upload would be)."""
    if corpus == "demo":
        from rag_async.local.demo_corpus import demo_documents

        yield from demo_documents()
        return
    from rag_async.providers.parsing import parse

    if not PYTHON_DOCS.is_dir():
        raise SystemExit(f"{PYTHON_DOCS}: not found (Debian: apt-get install python3.11-doc)")
    for page in sorted(PYTHON_DOCS.rglob("*.html")):
        source = page.relative_to(PYTHON_DOCS).as_posix()
        document = parse(page.name, page.read_bytes())
        yield document.title or source, source, document.text


async def _index_corpus(data_dir: Path, corpus: str, store: str, dense: str) -> None:
    """Index as a worker would: hybrid with the offline dense model unless `dense` is off."""
    from rag_async.config import Settings
    from rag_async.providers.retrieval import Retriever, open_store, static_embedder

    settings = Settings(_env_file=None, data_dir=data_dir, store=store, offline_embedder=dense)
    chunk_store = await open_store(settings)
    embedder = static_embedder.load_default() if settings.offline_embedder == "static" else None
    retriever = await Retriever.open(chunk_store, settings, embedder=embedder)
    for title, source, text in corpus_documents(corpus):
        await retriever.index(source, title, source, text)
    await chunk_store.close()


def _wait_ready(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"API at {url} not ready")


def _wait_worker(redis_url: str, prefix: str, timeout: float = 60) -> None:
    """Until a worker has finished its startup and polled the question queue (arq's
    health-check key), so that start-up CPU is not counted as load."""
    import redis
    from arq.constants import health_check_key_suffix

    from rag_async.store.keys import Keys

    client = redis.Redis.from_url(redis_url)
    health_check = Keys(prefix).queue("questions") + health_check_key_suffix
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if client.exists(health_check):
                time.sleep(1.0)  # the other workers, if any, are a moment behind
                return
            time.sleep(0.1)
    finally:
        client.close()
    raise RuntimeError("no worker became ready")


def _wait_heartbeat(
    redis_url: str, prefix: str, worker: subprocess.Popen[bytes], timeout: float
) -> None:
    import redis

    client = redis.Redis.from_url(redis_url)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if worker.poll() is not None:
                raise RuntimeError(f"worker {worker.pid} exited ({worker.returncode})")
            beats = client.hkeys(f"{prefix}workers")
            if any(b.decode().endswith(f":{worker.pid}") for b in beats):
                return
            time.sleep(0.1)
    finally:
        client.close()
    raise RuntimeError(f"worker {worker.pid} did not become ready")
