"""Structured logging for every process: readable lines on a terminal, JSON when asked.

Context variables (request_id, job_id) bound with `structlog.contextvars` appear on every line
logged while they are bound, from the API through the worker.
"""

from __future__ import annotations

import logging
import sys

import structlog

from .config import LogLevel


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
    # Libraries (uvicorn, arq) log through the standard library: same stream, same level.
    logging.basicConfig(
        level=level.upper(),
        stream=sys.stderr,
        format=f"%(asctime)s [{process or 'rag'}] %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        force=True,
    )
    for chatty in ("httpx", "httpx2", "httpcore"):  # a line per HTTP request is noise
        logging.getLogger(chatty).setLevel(logging.WARNING)


def _bind_process(name: str) -> structlog.types.Processor:
    def add_process(
        _logger: object, _method: str, event: structlog.types.EventDict
    ) -> structlog.types.EventDict:
        event.setdefault("process", name)
        return event

    return add_process
