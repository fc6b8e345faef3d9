"""What a worker process holds: the clients, built once at startup and closed at shutdown."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from typing import Any, TypedDict

import httpx2
import openai
from qdrant_client import AsyncQdrantClient
from redis.asyncio import Redis

from ..activity import Heartbeat
from ..breaker import CircuitBreaker
from ..config import Settings
from ..eventlog import EventLog
from ..jobstore import JobStore
from ..keys import Keys
from ..llm import LLM, ExtractiveAnswerer, OpenAIChat, StreamTimeouts
from ..recovery import RunningJobs
from ..retrieval import LexicalEncoder, OpenAIEmbedder, Retriever, open_qdrant


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass(slots=True)
class Services:
    settings: Settings
    keys: Keys
    jobs: JobStore
    events: EventLog
    retriever: Retriever
    llm: LLM
    qdrant: AsyncQdrantClient
    http: httpx2.AsyncClient
    running: RunningJobs
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
    async def open(cls, settings: Settings, redis: Redis) -> Services:
        keys = Keys(settings.key_prefix)
        # One pooled HTTP client for every provider call this process makes: the SDK's client
        # on its aiohttp transport, which reads a streamed answer with about a quarter less
        # CPU than the default one (docs/benchmarks.md).
        http = openai.DefaultAioHttpClient()
        qdrant = await open_qdrant(settings)
        lexical = LexicalEncoder()
        # Every provider call: connect within llm_connect_timeout, the whole call within
        # llm_timeout (a streamed answer also has first-token and idle limits, llm/).
        timeout = httpx2.Timeout(settings.llm_timeout, connect=settings.llm_connect_timeout)
        embedder = None
        if settings.embed_model:
            embed_client = openai.AsyncOpenAI(
                base_url=settings.embed_base_url or settings.llm_base_url,
                api_key=settings.embed_api_key or settings.llm_api_key or "not-needed",
                http_client=http,
                max_retries=settings.llm_max_retries,
                timeout=timeout,
            )
            embedder = OpenAIEmbedder(embed_client, settings.embed_model)
        retriever = await Retriever.open(qdrant, settings, lexical=lexical, embedder=embedder)
        llm: LLM
        if settings.llm_configured:
            chat_client = openai.AsyncOpenAI(
                base_url=settings.llm_base_url,
                api_key=settings.llm_api_key or "not-needed",
                http_client=http,
                max_retries=settings.llm_max_retries,
                timeout=timeout,
            )
            timeouts = StreamTimeouts(
                total=settings.llm_timeout,
                first_token=settings.llm_first_token_timeout,
                idle=settings.llm_idle_timeout,
            )
            llm = OpenAIChat(
                chat_client,
                settings.llm_model,
                max_tokens=settings.llm_max_tokens,
                timeouts=timeouts,
            )
        else:
            llm = ExtractiveAnswerer(lexical.terms)
        breakers = {
            name: CircuitBreaker(name, settings.breaker_threshold, settings.breaker_reset)
            for name in ("llm", "embedder", "qdrant")
        }
        worker = worker_name()
        return cls(
            worker=worker,
            breakers=breakers,
            settings=settings,
            keys=keys,
            jobs=JobStore(redis, keys, settings.result_ttl),
            events=EventLog(redis, keys, settings.result_ttl),
            retriever=retriever,
            llm=llm,
            qdrant=qdrant,
            http=http,
            running=RunningJobs(redis, keys, worker),
        )

    async def close(self) -> None:
        await self.http.aclose()
        await self.qdrant.close()


class WorkerContext(TypedDict, total=False):
    """arq's per-job `ctx`, with what our startup adds."""

    redis: Redis
    settings: Settings
    services: Services
    heartbeat: Heartbeat
    job_id: str
    job_try: int
    attempt: int  # our count of the job's attempts, the event log's fence (eventlog.py)
    enqueue_time: object
    score: int
