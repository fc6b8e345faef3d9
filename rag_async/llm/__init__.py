"""LLM providers behind one small protocol: stream answer text for a question and its sources."""

from .base import LLM
from .extractive import ExtractiveAnswerer
from .openai_chat import OpenAIChat, StreamTimeouts
from .prompt import build_messages
from .safety import screen

__all__ = ["LLM", "ExtractiveAnswerer", "OpenAIChat", "StreamTimeouts", "build_messages", "screen"]
