"""Structured logging for every process: readable lines on a terminal, JSON when asked.

Our own lines (structlog) and the libraries' (uvicorn, arq, httpx, openai, qdrant-client:
the standard library's logging) go through the same processors and the same renderer, so
with `RAG_LOG_JSON=true` every line on stderr is one JSON object. Context variables
(request_id, job_id, attempt) bound with `structlog.contextvars` appear on every line logged
while they are bound, a library's included: from the API through the worker.
"""

from __future__ import annotations

import logging
import sys

import structlog

from rag_async.config import LogLevel

# Libraries that install handlers of their own (uvicorn's default config, arq's CLI): their
# lines must reach the root handler, and only it, to be rendered like the rest.
_OWN_HANDLERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "arq")
# A line per HTTP request is noise.
_CHATTY = ("httpx", "httpx2", "httpcore")
_configured = False


def configure_logging(level: LogLevel = "INFO", *, json: bool = False, process: str = "") -> None:
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="%H:%M:%S" if not json else "iso"),
    ]
    if process:
        shared.insert(1, _bind_process(process))
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    global _configured
    _configured = True
    route_library_logs()
    for chatty in _CHATTY:
        logging.getLogger(chatty).setLevel(logging.WARNING)
    arq = logging.getLogger("arq.worker")
    for quiet in [each for each in arq.filters if isinstance(each, QuietArq)]:
        arq.removeFilter(quiet)  # configured again (a test run): one filter, not two
    arq.addFilter(QuietArq())


def route_library_logs() -> None:
    """Send the lines of libraries that set up handlers of their own to the root handler
    alone. Called again once a worker has started: arq's CLI configures its logger after
    importing the worker's settings, that is after `configure_logging`. Nothing to do in a
    process whose logging is someone else's (a test run, an embedding application)."""
    if not _configured:
        return
    for name in _OWN_HANDLERS:
        logger = logging.getLogger(name)
        for old in logger.handlers[:]:
            logger.removeHandler(old)
        logger.propagate = True


class QuietArq(logging.Filter):
    """arq's lines at debug level where they repeat ours or themselves: a job's start and end
    (our "job complete" says it once, with its kind and time), and the start-up lines each
    of a process's arq workers (one per queue) logs again. Retries and aborts stay."""

    _PER_JOB = ("→", "← ")
    _AT_START = ("Starting worker", "redis_version=")

    def __init__(self) -> None:
        super().__init__()
        self._started: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.INFO:
            return True
        template = str(record.msg)
        at_start = next((line for line in self._AT_START if template.startswith(line)), None)
        if at_start is not None and at_start not in self._started:
            self._started.add(at_start)
            return True
        if at_start is None and not _per_job(template, self._PER_JOB):
            return True
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return logging.getLogger().isEnabledFor(logging.DEBUG)


def _per_job(template: str, marks: tuple[str, ...]) -> bool:
    """arq's line of a job starting or ending: `%6.2fs → job(…)`, `%6.2fs ← job ● result`."""
    return any(f"s {mark}" in template for mark in marks)


def _bind_process(name: str) -> structlog.types.Processor:
    def add_process(
        _logger: object, _method: str, event: structlog.types.EventDict
    ) -> structlog.types.EventDict:
        event.setdefault("process", name)
        return event

    return add_process
