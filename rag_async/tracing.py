"""OpenTelemetry traces, optional: one trace per question, from the client's request through
the queue to the worker's retrieval and LLM stream.

Off unless RAG_OTEL=true or an OTLP endpoint is configured (OTEL_EXPORTER_OTLP_ENDPOINT, or
its _TRACES_ variant), and then only with the `otel` extra installed. Off, nothing here
imports opentelemetry and every function is a cheap no-op, so the rest of the code calls them
unconditionally.

The path of a trace:

    POST /chat (FastAPI's own server span, once a tracer provider is set: its parent the
      │         client's `traceparent`, if it sent one; FastAPI's spans of the route within)
      └ job (the worker's; its parent, the route's span, stored with the job record)
          ├ valkey.start_attempt, valkey.complete (the lifecycle's steps in Valkey)
          ├ queue_wait, embedding, retrieval (the Qdrant search), generation: the attempt's
          │   measured stages, recorded as spans once measured
          └ llm.chat (the call to the LLM server, with its token counts)

Without tracing in the API, a valid `traceparent` the client sent is stored as it came, so a
worker with tracing still joins the client's trace. A malformed one is ignored.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import structlog

from rag_async.config import Settings

if TYPE_CHECKING:
    from opentelemetry.trace import Span, Tracer

log = structlog.get_logger(__name__)

# W3C Trace Context: version-trace id-parent id-flags, lower-case hex; version ff is invalid.
_TRACEPARENT = re.compile(
    r"(?!ff)[0-9a-f]{2}-(?!0{32})[0-9a-f]{32}-(?!0{16})[0-9a-f]{16}-[0-9a-f]{2}"
)

_tracer: Tracer | None = None

Attributes = Mapping[str, str | int | float | bool]


def enabled(settings: Settings) -> bool:
    return settings.otel or bool(settings.otel_exporter_endpoint)


def setup_tracing(settings: Settings, service: str) -> None:
    """Turn traces on for this process, if the settings ask and the extra is installed. A
    tracer provider set before (by an embedding application, or a test) is kept."""
    global _tracer
    if not enabled(settings) or _tracer is not None:
        return
    try:
        from opentelemetry import trace
    except ImportError:
        log.warning("traces asked for, but the otel extra is not installed (rag-async[otel])")
        return
    if type(trace.get_tracer_provider()).__name__ == "ProxyTracerProvider":  # none set yet
        trace.set_tracer_provider(_provider(service))
    _tracer = trace.get_tracer("rag_async")


def _provider(service: str) -> Any:
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    # OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES, when set, win over this default.
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: service}))
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    except ImportError:
        log.warning("traces are on but no OTLP exporter is installed: spans are not sent")
        return provider
    # The exporter reads OTEL_EXPORTER_OTLP_* (endpoint, headers, timeout) itself.
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return provider


def active() -> bool:
    return _tracer is not None


def valid_traceparent(value: str | None) -> str | None:
    """`value` if it is a W3C traceparent, else None (ignored, as the standard asks)."""
    value = (value or "").strip()
    return value if _TRACEPARENT.fullmatch(value) else None


def traceparent_for_job(given: str | None) -> str | None:
    """What a new job keeps to continue its trace: the current span (the API's request
    span) when tracing is on, else the client's own traceparent if valid."""
    if _tracer is None:
        return valid_traceparent(given)
    from opentelemetry.propagate import inject

    carrier: dict[str, str] = {}
    inject(carrier)
    return valid_traceparent(carrier.get("traceparent")) or valid_traceparent(given)


def _context(traceparent: str | None) -> Any:
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    if valid_traceparent(traceparent) is None:
        return None
    return TraceContextTextMapPropagator().extract({"traceparent": traceparent or ""})


def _ns(seconds: float | None) -> int | None:
    return None if seconds is None else int(seconds * 1e9)


@contextmanager
def span(
    name: str,
    *,
    parent: str | None = None,
    current: bool = True,
    start: float | None = None,
    server: bool = False,
    attributes: Attributes | None = None,
) -> Iterator[Span | None]:
    """A span around the block (None when tracing is off): a child of `parent` (a stored
    traceparent) if given, else of the current span. `current=False` keeps it out of the
    context, for a block that yields (an async generator), where the context is the
    consumer's. An exception escaping the block marks the span as failed."""
    if _tracer is None:
        yield None
        return
    from opentelemetry.trace import SpanKind, Status, StatusCode, use_span

    kind = SpanKind.SERVER if server else SpanKind.INTERNAL
    opened = _tracer.start_span(
        name, context=_context(parent), kind=kind, attributes=attributes, start_time=_ns(start)
    )
    if current:
        with use_span(opened, end_on_exit=True):
            yield opened
        return
    try:
        yield opened
    except Exception as error:
        opened.record_exception(error)
        opened.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
        raise
    finally:
        opened.end()


def stage_span(name: str, start: float, end: float, attributes: Attributes | None = None) -> None:
    """A span for a stage already measured (wall-clock seconds), a child of the current span."""
    if _tracer is None:
        return
    _tracer.start_span(name, start_time=_ns(start), attributes=attributes).end(end_time=_ns(end))
