"""What a worker process holds: the clients, built once at startup and closed at shutdown."""

from __future__ import annotations

import asyncio
import os
import socket
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any, TypedDict

import httpx2
import openai
from pydantic import SecretStr

from rag_async.config import Settings
from rag_async.metrics import ProcessMetricsServer
from rag_async.providers.breaker import CircuitBreaker
from rag_async.providers.llm import LLM, ExtractiveAnswerer, OpenAIChat, StreamTimeouts
from rag_async.providers.parsing.isolated import ParserPool
from rag_async.providers.retrieval import (
    ChunkStore,
    Embedder,
    LexicalEncoder,
    OpenAIEmbedder,
    Retriever,
    open_store,
    static_embedder,
)
from rag_async.store.conversations import Conversations
from rag_async.store.documents import DocumentRegistry
from rag_async.store.keys import Keys
from rag_async.store.pool import Connection
from rag_async.store.queue import Lane
from rag_async.store.workers import RunningJobs
from rag_async.webhooks import Courier
from rag_async.worker.ends import Ends, HoldsEnds
from rag_async.worker.heartbeat import Heartbeat


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass(slots=True)
class Services(HoldsEnds):
    settings: Settings
    keys: Keys
    ends: Ends  # the stores a job's end writes, shared with the API (worker/ends.py)
    retriever: Retriever
    llm: LLM
    store: ChunkStore  # where the retriever's chunks live; closed with the worker
    http: httpx2.AsyncClient
    running: RunningJobs
    parser: ParserPool  # uploaded files are parsed in its processes
    courier: Courier | None  # delivers webhooks (None: no RAG_WEBHOOK_SECRET)
    conversations: Conversations  # where an answered question adds its turn
    # Who runs a job, as its record and logs tell it: "hostname:pid".
    worker: str = field(default_factory=worker_name)
    breakers: dict[str, CircuitBreaker] = field(default_factory=dict)

    def report(self) -> dict[str, Any]:
        """What this worker's heartbeat tells: jobs running, and its breakers' states."""
        return {
            "in_flight": len(self.running),
            "breakers": {name: breaker.state for name, breaker in self.breakers.items()},
        }

    @property
    def providers(self) -> dict[str, str]:
        return {"retrieval": self.retriever.name, "llm": self.llm.name}

    @classmethod
    async def open(cls, settings: Settings, redis: Connection) -> Services:
        """Open every client the worker's jobs use; if one fails to open, close the ones
        opened before it (a worker that cannot start must not leave a shard locked)."""
        opened = AsyncExitStack()
        try:
            # One pooled HTTP client for every provider call this process makes: the SDK's
            # client on its aiohttp transport, which reads a streamed answer with less CPU
            # than the default one (docs/benchmarks.md).
            http = openai.DefaultAioHttpClient()
            opened.push_async_callback(http.aclose)
            store = await open_store(settings)
            opened.push_async_callback(store.close)
            lexical = LexicalEncoder()
            embedder: Embedder | None = None
            if settings.embed_model:
                embed_client = _openai_client(
                    settings, http, settings.embed_base_url, settings.embed_api_key
                )
                embedder = OpenAIEmbedder(embed_client, settings.embed_model)
            elif settings.offline_embedder == "static":
                # Reads the model's files: a blocking quarter of a second, off the loop.
                embedder = await asyncio.to_thread(static_embedder.load_default)
            retriever = await Retriever.open(
                store,
                settings,
                lexical=lexical,
                embedder=embedder,
                dense_optional=not settings.embed_model,
            )
            keys = Keys(settings.key_prefix)
            worker = worker_name()
            ends = Ends.open(redis, keys, settings)
            return cls(
                worker=worker,
                breakers=_breakers(settings),
                settings=settings,
                keys=keys,
                ends=ends,
                retriever=retriever,
                llm=_llm(settings, http, lexical, ends.registry),
                store=store,
                http=http,
                running=RunningJobs(redis, keys, worker),
                parser=ParserPool.from_settings(settings),
                courier=Courier.from_settings(settings),
                conversations=ends.conversations,
            )
        except BaseException:
            await opened.aclose()
            raise

    async def close(self) -> None:
        await self.parser.close()
        await self.http.aclose()
        if self.courier is not None:
            await self.courier.aclose()
        await self.store.close()


def _breakers(settings: Settings) -> dict[str, CircuitBreaker]:
    return {
        name: CircuitBreaker(name, settings.breaker_threshold, settings.breaker_reset)
        for name in ("llm", "embedder", "qdrant")
    }


def _llm(
    settings: Settings,
    http: httpx2.AsyncClient,
    lexical: LexicalEncoder,
    registry: DocumentRegistry,
) -> LLM:
    """The configured OpenAI-compatible LLM, or the offline extractive answerer (which tells
    how many documents a collection holds when it finds nothing relevant there)."""
    if not settings.llm_configured:
        return ExtractiveAnswerer(lexical.terms, documents=registry.count)
    timeouts = StreamTimeouts(
        total=settings.llm_timeout,
        first_token=settings.llm_first_token_timeout,
        idle=settings.llm_idle_timeout,
    )
    return OpenAIChat(
        _openai_client(settings, http),
        settings.llm_model,
        max_tokens=settings.llm_max_tokens,
        timeouts=timeouts,
    )


def _openai_client(
    settings: Settings,
    http: httpx2.AsyncClient,
    base_url: str | None = None,
    api_key: SecretStr | None = None,
) -> openai.AsyncOpenAI:
    """An SDK client on the process's pooled HTTP client: the LLM's base URL and key unless
    others are given. Every call connects within llm_connect_timeout and ends within
    llm_timeout (a streamed answer also has first-token and idle limits, llm/)."""
    key = api_key or settings.llm_api_key
    return openai.AsyncOpenAI(
        base_url=base_url or settings.llm_base_url,
        api_key=key.get_secret_value() if key else "not-needed",
        http_client=http,
        max_retries=settings.llm_max_retries,
        timeout=httpx2.Timeout(settings.llm_timeout, connect=settings.llm_connect_timeout),
    )


class WorkerContext(TypedDict, total=False):
    """arq's per-job `ctx`, with what our startup adds."""

    redis: Connection
    settings: Settings
    lanes: tuple[Lane, ...]  # the queues this process serves
    services: Services
    heartbeat: Heartbeat
    metrics_server: ProcessMetricsServer | None
    job_id: str
    job_try: int
