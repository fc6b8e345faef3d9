"""`create_app(settings)`: the FastAPI app, its lifespan and its routes."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

import structlog
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from rag_async.api.browser import (
    HostCheck,
    OriginCheck,
    SecurityHeaders,
    WriteContentTypes,
    allowed_hosts,
    cors_origins,
)
from rag_async.api.docs import install_docs
from rag_async.api.errors import install_error_handlers
from rag_async.api.middleware import BodySizeLimit, HeaderSizeLimit
from rag_async.api.openai_compat import (
    chat_completions,
    files,
    install_openai_errors,
    models,
    responses,
    v1_conversations,
    vector_store_batches,
    vector_store_files,
    vector_store_search,
    vector_stores,
)
from rag_async.api.request_ids import RequestIds
from rag_async.api.routes import (
    chat,
    conversations,
    deadletters,
    documents,
    health,
    jobs,
    metrics,
    search,
    stats,
)
from rag_async.api.state import AppState
from rag_async.config import Settings
from rag_async.domain.identity import KeyRing
from rag_async.domain.job import JOB_ID_HEADER
from rag_async.domain.schemas import ErrorBody
from rag_async.metrics import ClusterCollector, RequestTimer
from rag_async.redaction import redact
from rag_async.store.pool import connect_redis
from rag_async.tracing import setup_tracing

log = structlog.get_logger(__name__)

# The web page lives in the repository's web/ (a checkout or an editable install), unless
# RAG_WEB_DIR says otherwise.
REPOSITORY_WEB_DIR = Path(__file__).resolve().parents[2] / "web"


# Each router, and the errors any of its routes may answer besides its own (documented, so
# clients and the OpenAPI fuzzing test know them): a key's (401, 429), a write's (409 for a
# reused Idempotency-Key, 413, 415), an admin's (403).
_KEYED, _WRITES = (401, 429), (409, 413, 415)
_ROUTERS = [
    (chat, _KEYED + _WRITES),
    (search, _KEYED + _WRITES),
    (conversations, _KEYED),
    (responses, _KEYED + _WRITES),
    (chat_completions, _KEYED + _WRITES),
    (v1_conversations, _KEYED + _WRITES),
    (models, _KEYED),
    (files, _KEYED + _WRITES),
    (vector_stores, _KEYED + _WRITES),
    (vector_store_files, _KEYED + _WRITES),
    (vector_store_batches, _KEYED + _WRITES),
    (vector_store_search, _KEYED),
    (documents, _KEYED + _WRITES),
    (jobs, _KEYED),
    (deadletters, (*_KEYED, 403)),
    (stats, _KEYED),
    (metrics, (*_KEYED, 403)),
    (health, ()),
]


def create_app(settings: Settings, *, when_ready: Callable[[], None] | None = None) -> FastAPI:
    """The app; `when_ready` is called once it has started, before it serves a request."""
    app = FastAPI(
        title="rag-async",
        summary="Ask questions about your documents; answers are computed by background "
        "workers and streamed back.",
        version="0.1.0",
        lifespan=_lifespan(settings, when_ready),
        docs_url=None,  # FastAPI's pages load Swagger UI and ReDoc from a CDN: api/docs.py's
        redoc_url=None,  # serve them from an installed package instead
    )
    install_error_handlers(app)
    install_openai_errors(app)  # OpenAI's error shape under /v1
    app.add_middleware(
        BodySizeLimit,
        default_limit=64 * 1024 + 4 * settings.max_query_chars,
        limits=_body_limits(settings),
    )
    _browser_safety(app, settings)
    # Added last, so it runs first: nothing reads an oversized header before it is refused.
    app.add_middleware(HeaderSizeLimit, limit=settings.max_header_bytes)
    # Outermost: every request is timed and has its id, refused ones included.
    app.add_middleware(RequestIds)
    app.add_middleware(RequestTimer)
    for module, statuses in _ROUTERS:
        app.include_router(module.router, responses={s: {"model": ErrorBody} for s in statuses})
    install_docs(app)
    web_dir = settings.web_dir or REPOSITORY_WEB_DIR
    if (web_dir / "index.html").is_file():
        app.mount("/static", StaticFiles(directory=web_dir), name="web")

        @app.get("/", include_in_schema=False)
        async def web_page() -> FileResponse:
            return FileResponse(web_dir / "index.html", headers={"Cache-Control": "no-cache"})

    return app


def _lifespan(
    settings: Settings, when_ready: Callable[[], None] | None
) -> Callable[[FastAPI], AbstractAsyncContextManager[dict[str, object]]]:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, object]]:
        setup_tracing(settings, "rag-async-api")
        redis = connect_redis(settings, client_name="rag-api", ride_out_outages=False)
        state = AppState.open(settings, redis)
        log.info("api ready", redis=redact(settings.redis_url or ""))
        if when_ready is not None:
            when_ready()
        try:
            cluster = ClusterCollector(state.cluster_stores(), settings.worker_dead_after)
            yield {"rag": state, "metrics": cluster}
        finally:
            await state.hub.close()
            await redis.aclose(close_connection_pool=True)  # ours: nobody else uses it

    return lifespan


def _body_limits(settings: Settings) -> dict[str, int]:
    """The routes that take files, and how many bytes their bodies may hold."""
    return {
        "/documents": 2 * settings.max_document_bytes + 64 * 1024,
        # One file, and room for its form's other fields and boundaries.
        "/v1/files": settings.max_document_bytes + 64 * 1024,
    }


def _browser_safety(app: FastAPI, settings: Settings) -> None:
    """The middleware of api/browser.py; the last added runs first."""
    app.add_middleware(WriteContentTypes)
    origins = cors_origins(settings)
    if origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "Idempotency-Key", "X-Request-ID"],
            expose_headers=["Retry-After", JOB_ID_HEADER],
            max_age=600,
        )
    app.add_middleware(OriginCheck, origins=origins)
    keyed = KeyRing.from_settings(settings).enabled
    app.add_middleware(HostCheck, hosts=allowed_hosts(settings), keyed=keyed)
    # Around the whole stack, Starlette's outermost ServerErrorMiddleware included, so that its
    # 500 carries the headers too.
    build = app.build_middleware_stack
    app.build_middleware_stack = lambda: SecurityHeaders(build())  # type: ignore[method-assign]
