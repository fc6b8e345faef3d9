"""What OpenAI clients send, read into a question, its history and its generation wishes.

Each field is honoured (instructions, token limits, temperature, stop, metadata, store),
ignored because it changes nothing a client relies on (reasoning, truncation, top_p,
user, ...: extra fields are ignored too, as OpenAI-compatible servers commonly do), or refused
with a 400 naming it because the reply could not keep its contract (honoured.py). A field of
the wrong type, text that is not text, or no question at all is a 422 that says so. A
`collection` beside them (the SDKs' `extra_body`) picks the collection to search, and a
`multitask` what a response continuing a conversation does to an earlier one still answering.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StringConstraints, field_validator

from rag_async.domain.errors import BadRequest
from rag_async.domain.schemas import (
    COLLECTION_PATTERN,
    CONVERSATION_PATTERN,
    EXAMPLE_QUESTION,
    MULTITASK_DESCRIPTION,
    Multitask,
)
from rag_async.store.conversations import Turn

# OpenAI's limits on metadata, and on chat completions' stop sequences.
_METADATA_KEY, _METADATA_VALUE, _MOST_STOPS = 64, 512, 4
# Instructions go into every prompt of the answer: bounded like a long question.
INSTRUCTIONS_CHARS = 20_000

Role = Literal["system", "developer", "user", "assistant", "tool", "function"]


class Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore")


_TEXT_PARTS = frozenset({"input_text", "output_text", "text", "refusal"})


class ContentPart(Lenient):
    """A part of a message: text (`input_text`/`output_text` in Responses, `text` in chat),
    or another kind (an image, a file, audio) that honoured.py refuses."""

    type: str = Field(max_length=40)
    text: str | None = None

    @property
    def is_text(self) -> bool:
        return self.type in _TEXT_PARTS and self.text is not None


class Message(Lenient):
    type: Literal["message"] = "message"
    role: Role
    content: str | list[ContentPart] | None = None

    @property
    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(part.text or "" for part in self.content if part.is_text)
        return self.content or ""

    @property
    def other_parts(self) -> list[str]:
        """The types of its parts that are not text."""
        if not isinstance(self.content, list):
            return []
        return [part.type for part in self.content if not part.is_text]


class ItemReference(Lenient):
    """An earlier output item by its id (`msg_<job>`: that job's answer), as clients that let
    the server store responses send the previous turns (items.py resolves it)."""

    type: Literal["item_reference"]
    id: str = Field(max_length=200)


Metadata = Annotated[dict[str, str], Field(max_length=16)]


class _Asked(Lenient):
    model: str | None = None
    stream: StrictBool = False
    collection: str | None = Field(default=None, pattern=COLLECTION_PATTERN)
    temperature: float | None = Field(default=None, ge=0, le=2)
    metadata: Metadata | None = None
    store: StrictBool | None = None
    # Judged in one place (tools.py): any other type than the service runs is refused.
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None

    @field_validator("metadata")
    @classmethod
    def _metadata_limits(cls, metadata: dict[str, str] | None) -> dict[str, str] | None:
        """OpenAI's limits: keys up to 64 characters, values up to 512."""
        for key, value in (metadata or {}).items():
            if len(key) > _METADATA_KEY or len(value) > _METADATA_VALUE:
                raise ValueError(
                    f"metadata key {key[:70]!r}: keys may have {_METADATA_KEY} characters "
                    f"and values {_METADATA_VALUE}"
                )
        return metadata


class TextOptions(Lenient):
    """The Responses API's `text`: its `format` (`{"type": "text"}` is what is written)."""

    format: dict[str, Any] | None = None
    verbosity: str | None = None


class StreamOptions(Lenient):
    include_usage: StrictBool = False


ConversationId = Annotated[str, StringConstraints(pattern=CONVERSATION_PATTERN)]


class ConversationRef(Lenient):
    id: ConversationId


class ResponsesRequest(_Asked):
    """POST /v1/responses."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"input": EXAMPLE_QUESTION}]})

    input: str | list[Message | ItemReference] = Field(min_length=1)
    background: StrictBool = False
    instructions: str | None = Field(default=None, max_length=INSTRUCTIONS_CHARS)
    max_output_tokens: int | None = Field(default=None, ge=1)
    # Echoed; `format` other than text is refused (honoured.py).
    text: TextOptions | None = None
    # Echoed only: the history is always trimmed to the prompt's budget ("auto"'s meaning),
    # and "disabled" differs only where a request would overflow, which the trim prevents.
    truncation: Literal["auto", "disabled"] | None = None
    previous_response_id: str | None = Field(default=None, max_length=200)
    # A conversation of POST /chat's (its `conversation_id`), by id or as {"id": ...}.
    conversation: ConversationId | ConversationRef | None = None
    multitask: Multitask = Field(default="enqueue", description=MULTITASK_DESCRIPTION)
    # "file_search_call.results" puts the passages found in the file_search_call item; what
    # else may be asked changes nothing here.
    include: list[str] | None = None

    @property
    def conversation_id(self) -> str | None:
        if isinstance(self.conversation, ConversationRef):
            return self.conversation.id
        return self.conversation


class ChatCompletionsRequest(_Asked):
    """POST /v1/chat/completions."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"messages": [{"role": "user", "content": EXAMPLE_QUESTION}]}]
        }
    )

    messages: list[Message] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    stop: str | list[str] | None = None
    n: int | None = Field(default=None, ge=1)
    response_format: dict[str, Any] | None = None
    stream_options: StreamOptions | None = None

    @field_validator("stop")
    @classmethod
    def _stop_limits(cls, stop: str | list[str] | None) -> str | list[str] | None:
        """OpenAI's limit: up to four stop sequences."""
        if isinstance(stop, list) and len(stop) > _MOST_STOPS:
            raise ValueError(f"at most {_MOST_STOPS} stop sequences")
        return stop

    @property
    def stops(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])


def instructions_of(messages: Sequence[Message]) -> str | None:
    """The system and developer messages, as instructions: they follow the service's own
    system prompt (which keeps answers grounded), never replace it."""
    said = [m.text for m in messages if m.role in ("system", "developer") and m.text.strip()]
    return "\n\n".join(said) if said else None


def conversation_of(messages: Sequence[Message]) -> tuple[str, list[Turn]]:
    """The question (the last message, the user's) and the turns before it: each user
    message (or run of them) with the assistant's answer that follows. System and developer
    messages are instructions (`instructions_of`), not turns."""
    spoken = [(m.role, m.text) for m in messages if m.role in ("user", "assistant")]
    if not spoken or spoken[-1][0] != "user":
        raise BadRequest("the last message must be the user's question", code="no_question")
    return spoken[-1][1], list(_turns(spoken[:-1]))


def _turns(spoken: Iterable[tuple[str, str]]) -> Iterable[Turn]:
    asked: list[str] = []
    for role, text in spoken:
        if role == "user":
            asked.append(text)
        elif asked:
            yield Turn(question="\n".join(asked), answer=text)
            asked = []
