"""What a client asks of the answer's generation, and what the generation reports back.

`Generation` travels in the job record from the API to the worker's LLM: the client's
instructions (a system message after the service's own, which keeps the answer grounded), a
limit on the answer's tokens, the sampling temperature and stop sequences. `Usage` and
`GenerationReport` come back: the tokens the LLM counted (or the offline answerer's
approximate count) and whether the answer was cut by the token limit.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

# The offline answerer's token count: words and punctuation marks, as a model's tokenizer
# roughly splits English. Approximate by design: there is no model to ask.
_TOKEN = re.compile(r"\w+|[^\w\s]")


class Generation(BaseModel):
    """The client's wishes for one answer; None leaves the service's default."""

    model_config = ConfigDict(frozen=True)

    instructions: str | None = None
    max_output_tokens: int | None = None
    temperature: float | None = None
    stop: list[str] = []

    def token_limit(self, max_tokens: int) -> int:
        """The answer's token limit: the client's, within the service's `max_tokens`."""
        if self.max_output_tokens is None:
            return max_tokens
        return min(self.max_output_tokens, max_tokens)


class Usage(BaseModel):
    """Tokens one answer took, in the Responses API's names (chat completions renames them)."""

    model_config = ConfigDict(frozen=True)

    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0

    @classmethod
    def from_chat(cls, usage: dict[str, Any]) -> Usage:
        """From a chat-completions `usage` (its optional details too); junk counts as 0."""
        prompt, completion = _count(usage, "prompt_tokens"), _count(usage, "completion_tokens")
        return cls(
            input_tokens=prompt,
            output_tokens=completion,
            total_tokens=_count(usage, "total_tokens") or prompt + completion,
            cached_tokens=_count(usage.get("prompt_tokens_details"), "cached_tokens"),
            reasoning_tokens=_count(usage.get("completion_tokens_details"), "reasoning_tokens"),
        )

    @classmethod
    def counted(cls, prompt: str, answer: str) -> Usage:
        """The approximate count of the offline answerer (`approximate_tokens`)."""
        given, said = approximate_tokens(prompt), approximate_tokens(answer)
        return cls(input_tokens=given, output_tokens=said, total_tokens=given + said)


def approximate_tokens(text: str) -> int:
    return len(_TOKEN.findall(text))


def _count(values: Any, name: str) -> int:
    value = values.get(name) if isinstance(values, dict) else None
    return value if isinstance(value, int) and value >= 0 else 0


# Why an answer stopped short: the only reason a client can cause here.
Incomplete = Literal["max_output_tokens"]


@dataclass(slots=True)
class GenerationReport:
    """Filled in by an LLM as it answers: what it counted, and whether the token limit cut
    the answer. One per attempt: a retried attempt reports afresh."""

    usage: Usage | None = None
    incomplete: Incomplete | None = None
