"""OpenAI's wire format over the one job lifecycle: the Responses API (background, streaming,
resume, cancel, delete, input items), chat completions, the Conversations API over the
service's conversations and the model list, so OpenAI clients need no glue. Each
request takes the same keys, limits and queue as the native routes; each stream reads the
same event log."""

from rag_async.api.openai_compat import chat_completions, models, responses
from rag_async.api.openai_compat import conversations as v1_conversations
from rag_async.api.openai_compat.errors import install_openai_errors

__all__ = ["chat_completions", "install_openai_errors", "models", "responses", "v1_conversations"]
