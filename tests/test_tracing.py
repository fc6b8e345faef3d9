"""Traces: a `traceparent` sent with POST /chat is continued by the API's request span, stored
with the job and continued by the worker, so that one trace holds the request, the queue
wait, the retrieval and the LLM call. Spans are caught by the SDK's in-memory exporter; the
API, the worker, Valkey and the LLM server are real.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from redis.asyncio import Redis

from rag_async import tracing
from rag_async.client.api import RagClient
from rag_async.config import Settings
from rag_async.store.jobs import JobStore
from rag_async.store.keys import Keys
from tests.conftest import make_settings, running_stack
from tests.support.openai_server import OpenAIApp
from tests.support.processes import run_python

pytestmark = pytest.mark.timeout(60)

_EXPORTER = InMemorySpanExporter()


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """The process's tracer provider (set once: OpenTelemetry allows no second), its spans
    kept in memory; tracing is turned off again after the test, for the tests that follow."""
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(_EXPORTER))
        trace.set_tracer_provider(provider)
    _EXPORTER.clear()
    yield _EXPORTER
    tracing._tracer = None  # as in a process that never asked for traces


def traced_settings(valkey: Any, tmp_path: Path, llm: OpenAIApp) -> Settings:
    llm.config.ttft, llm.config.tokens, llm.config.tokens_per_second = 0.0, 12, 200
    return make_settings(
        valkey, tmp_path, llm_base_url=llm.base_url, llm_api_key="test-key", otel=True
    )


async def ask(client: RagClient, base_url: str, traceparent: str | None) -> str:
    headers = {"traceparent": traceparent} if traceparent else {}
    async with httpx.AsyncClient(base_url=base_url) as http:
        response = await http.post("/chat", json={"query": "tea?"}, headers=headers)
    assert response.status_code == 202, response.text
    job_id = str(response.json()["job_id"])
    assert (await client.answer(job_id)).final.type == "done"  # type: ignore[union-attr]
    return job_id


def named(finished: tuple[ReadableSpan, ...], name: str) -> ReadableSpan:
    found = [span for span in finished if span.name == name]
    assert len(found) == 1, (name, [span.name for span in finished])
    return found[0]


def parent_of(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent else None


def ancestors(span: ReadableSpan, finished: tuple[ReadableSpan, ...]) -> list[int]:
    """The ids of the span's parent, its parent's, and so on (FastAPI's spans of the route
    lie between the request's and the job's)."""
    by_id = {s.context.span_id: s for s in finished if s.context is not None}
    chain, parent = [], parent_of(span)
    while parent is not None:
        chain.append(parent)
        parent = parent_of(by_id[parent]) if parent in by_id else None
    return chain


async def test_one_trace_from_the_clients_request_to_the_llm_call(
    valkey: Any, tmp_path: Path, llm: OpenAIApp, spans: InMemorySpanExporter
) -> None:
    trace_id, client_span = secrets.token_hex(16), secrets.token_hex(8)
    async with running_stack(traced_settings(valkey, tmp_path, llm)) as stack:
        await ask(stack.client, stack.base_url, f"00-{trace_id}-{client_span}-01")
    finished = spans.get_finished_spans()

    request = named(finished, "POST /chat")
    job = named(finished, "job")
    stages = [named(finished, name) for name in ("queue_wait", "retrieval", "generation")]
    llm_call = named(finished, "llm.chat")
    valkey = [named(finished, name) for name in ("valkey.start_attempt", "valkey.complete")]
    for span in (request, job, *stages, llm_call, *valkey):
        assert span.context is not None and f"{span.context.trace_id:032x}" == trace_id, span
    assert parent_of(request) == int(client_span, 16)
    assert request.context is not None and request.context.span_id in ancestors(job, finished)
    assert job.context is not None
    assert {parent_of(span) for span in (*stages, llm_call, *valkey)} == {job.context.span_id}
    # The stages follow one another, within the job.
    starts = [span.start_time or 0 for span in stages]
    assert starts == sorted(starts) and (job.start_time or 0) <= starts[0]
    assert llm_call.attributes and llm_call.attributes["gen_ai.usage.output_tokens"] == 12


async def test_a_malformed_traceparent_is_ignored_and_the_request_starts_a_trace(
    valkey: Any, tmp_path: Path, llm: OpenAIApp, spans: InMemorySpanExporter
) -> None:
    async with running_stack(traced_settings(valkey, tmp_path, llm)) as stack:
        await ask(stack.client, stack.base_url, "00-not-a-trace-01")
    finished = spans.get_finished_spans()
    request, job = named(finished, "POST /chat"), named(finished, "job")
    assert request.parent is None
    assert request.context is not None and request.context.span_id in ancestors(job, finished)


async def test_without_traces_a_clients_traceparent_is_kept_for_the_worker(
    settings: Settings,
) -> None:
    given = f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"
    async with running_stack(settings) as stack, Redis.from_url(settings.redis_url or "") as r:
        job_id = await ask(stack.client, stack.base_url, given)
        record = await JobStore(r, Keys(settings.key_prefix), settings.result_ttl).get(job_id)
    assert record is not None and record.traceparent == given


async def test_with_traces_off_the_opentelemetry_sdk_is_not_imported() -> None:
    code, out, err = await run_python(
        "import sys\n"
        "from rag_async.api import create_app\n"
        "from rag_async.config import Settings\n"
        "import rag_async.worker.process, rag_async.worker.jobs\n"
        "create_app(Settings(_env_file=None))\n"
        "print(sorted(m for m in sys.modules if m.startswith('opentelemetry.sdk')))\n"
    )
    assert code == 0, err
    # FastAPI itself imports opentelemetry's API (its own telemetry); the SDK is ours alone.
    assert out.strip() == "[]"
