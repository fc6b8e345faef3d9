"""Shared by the benchmark scripts: start the real services as separate processes (so each
one's CPU can be read from /proc), and a few statistics helpers."""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from rag_async.embedded_valkey import EmbeddedValkey, free_port  # noqa: E402

_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


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

    def pids(self) -> dict[str, int]:
        assert self.valkey.process is not None
        pids = {"api": self.api.pid, "valkey": self.valkey.process.pid, "llm": self.llm.pid}
        for i, worker in enumerate(self.workers):
            pids[f"worker{i}" if len(self.workers) > 1 else "worker"] = worker.pid
        return pids

    def cpu(self) -> dict[str, float]:
        return {name: cpu_seconds(pid) for name, pid in self.pids().items()}


@contextmanager
def services(
    *,
    ttft: float,
    tokens: int,
    tps: float,
    workers: int = 1,
    corpus: bool = True,
    inline: bool = False,
    env: dict[str, str] | None = None,
) -> Iterator[Services]:
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
                **(env or {}),
            }
        )
        started: list[subprocess.Popen[bytes]] = []
        try:
            if inline:  # the replaced design: one process does it all, no worker
                if corpus:
                    asyncio.run(_index_demo_corpus(data))
                command = [sys.executable, str(REPO / "benchmarks" / "inline_app.py")]
                workers = 0
            else:
                command = [sys.executable, "-m", "rag_async.cli", "api"]
            api = subprocess.Popen(command, env=base_env)
            started.append(api)
            procs = []
            for i in range(workers):
                # Embedded Qdrant is one process per folder: each worker gets its own, with
                # its own copy of the corpus (as read replicas of a Qdrant server would be).
                worker_env = dict(base_env, RAG_DATA_DIR=str(data / f"w{i}"))
                if corpus:
                    asyncio.run(_index_demo_corpus(data / f"w{i}"))
                procs.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "rag_async.cli", "worker"], env=worker_env
                    )
                )
            started += procs
            api_url = f"http://127.0.0.1:{port}"
            _wait_ready(api_url)
            if procs:
                _wait_worker(valkey.url, base_env.get("RAG_KEY_PREFIX", "rag:"))
            if os.environ.get("BENCH_PIDS"):  # for attaching a profiler (py-spy) to them
                Path(os.environ["BENCH_PIDS"]).write_text(
                    json.dumps({"api": api.pid, "workers": [p.pid for p in procs]})
                )
            yield Services(valkey, llm, llm_url, api, api_url, procs)
        finally:
            for process in [*started, llm]:
                process.terminate()
            for process in [*started, llm]:
                try:
                    process.wait(15)
                except subprocess.TimeoutExpired:
                    process.kill()
            valkey.stop()


async def _index_demo_corpus(data_dir: Path) -> None:
    from rag_async.config import Settings
    from rag_async.demo_corpus import demo_documents
    from rag_async.retrieval import Retriever, open_qdrant

    settings = Settings(_env_file=None, data_dir=data_dir)
    qdrant = await open_qdrant(settings)
    retriever = await Retriever.open(qdrant, settings)
    for title, source, text in demo_documents():
        await retriever.index(source, title, source, text)
    await qdrant.close()


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
    """Until a worker has finished its startup and polled the queue (arq's health-check key),
    so that start-up CPU is not counted as load."""
    import redis

    client = redis.Redis.from_url(redis_url)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if client.exists(f"{prefix}queue:health-check"):
                time.sleep(1.0)  # the other workers, if any, are a moment behind
                return
            time.sleep(0.1)
    finally:
        client.close()
    raise RuntimeError("no worker became ready")
