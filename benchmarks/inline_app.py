"""The design rag-async replaces, for a side-by-side measurement: retrieval and the LLM call
inside the HTTP request, the answer streamed straight back. Same retriever, same LLM client,
same token coalescing; no queue, no event log, nothing survives a crash or scales apart.

    RAG_DATA_DIR=... RAG_LLM_BASE_URL=... python benchmarks/inline_app.py
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import openai
import orjson
import uvicorn
from fastapi import FastAPI
from sse_starlette import EventSourceResponse, ServerSentEvent

from rag_async.config import Settings
from rag_async.domain.schemas import ChatRequest
from rag_async.providers.llm import OpenAIChat
from rag_async.providers.retrieval import Retriever, open_store
from rag_async.worker.jobs.answer import coalesce


def create_inline_app(settings: Settings) -> FastAPI:
    clients: dict[str, object] = {}

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        store = await open_store(settings)
        clients["retriever"] = await Retriever.open(store, settings)  # as a worker does
        http = openai.DefaultAioHttpClient()
        chat = openai.AsyncOpenAI(base_url=settings.llm_base_url, api_key="bench", http_client=http)
        clients["llm"] = OpenAIChat(chat, settings.llm_model, max_tokens=settings.llm_max_tokens)
        yield
        await chat.close()
        await store.close()

    app = FastAPI(lifespan=lifespan)

    @app.get("/readyz")
    async def readyz() -> dict[str, str]:
        return {"status": "ready"}

    @app.post("/chat-inline")
    async def chat_inline(body: ChatRequest) -> EventSourceResponse:
        retriever: Retriever = clients["retriever"]  # type: ignore[assignment]
        llm: OpenAIChat = clients["llm"]  # type: ignore[assignment]

        async def answer() -> AsyncIterator[ServerSentEvent]:
            sources = await retriever.search(body.query, settings.top_k)
            payload = orjson.dumps({"sources": [s.model_dump() for s in sources]}).decode()
            yield ServerSentEvent(data=payload, event="sources")
            parts = []
            async for batch in coalesce(llm.stream(body.query, sources), 0.05):
                parts.append(batch)
                yield ServerSentEvent(data=orjson.dumps({"text": batch}).decode(), event="token")
            yield ServerSentEvent(
                data=orjson.dumps({"answer": "".join(parts)}).decode(), event="done"
            )

        return EventSourceResponse(answer())

    return app


if __name__ == "__main__":
    settings = Settings()
    uvicorn.run(
        create_inline_app(settings), host="127.0.0.1", port=settings.port, log_level="warning"
    )
