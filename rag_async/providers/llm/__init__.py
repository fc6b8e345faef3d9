"""LLM providers behind one small protocol: stream answer text for a question and its sources."""

from rag_async.providers.llm.base import LLM
from rag_async.providers.llm.extractive import ExtractiveAnswerer
from rag_async.providers.llm.openai_chat import OpenAIChat, StreamTimeouts
from rag_async.providers.llm.prompt import build_messages
from rag_async.providers.llm.safety import screen

__all__ = ["LLM", "ExtractiveAnswerer", "OpenAIChat", "StreamTimeouts", "build_messages", "screen"]
