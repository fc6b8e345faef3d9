"""OpenAI's wire format over the one job lifecycle: the Responses API (background, streaming,
resume, cancel), chat completions and the model list, and the Files and Vector Stores APIs
over documents and collections, so OpenAI clients need no glue. Each
request takes the same keys, limits and queue as the native routes; each stream reads the
same event log."""

from rag_async.api.openai_compat import (
    chat_completions,
    files,
    models,
    responses,
    vector_store_batches,
    vector_store_files,
    vector_store_search,
    vector_stores,
)
from rag_async.api.openai_compat.errors import install_openai_errors

__all__ = [
    "chat_completions",
    "files",
    "install_openai_errors",
    "models",
    "responses",
    "vector_store_batches",
    "vector_store_files",
    "vector_store_search",
    "vector_stores",
]
