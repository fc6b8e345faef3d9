"""What OpenAI clients send, read into a question and its history.

Fields this service has no use for (temperature, tools, instructions, metadata, ...) are
ignored, as OpenAI-compatible servers commonly do, so that clients' defaults do not fail; a
field of the wrong type, text that is not text, or no question at all is a 422 that says so.
A `collection` beside them (the SDKs' `extra_body`) picks the collection to search, and a
`multitask` what a response continuing a conversation does to an earlier one still answering.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StringConstraints

from rag_async.domain.errors import BadRequest
from rag_async.domain.schemas import (
    COLLECTION_PATTERN,
    CONVERSATION_PATTERN,
    EXAMPLE_QUESTION,
    MULTITASK_DESCRIPTION,
    Multitask,
)
from rag_async.store.conversations import Turn

Role = Literal["system", "developer", "user", "assistant", "tool", "function"]


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore")


class TextPart(_Lenient):
    """A text part of a message: `input_text`/`output_text` (Responses) or `text` (chat)."""

    type: Literal["input_text", "output_text", "text"]
    text: str


class Message(_Lenient):
    type: Literal["message"] = "message"
    role: Role
    content: str | list[TextPart] | None = None

    @property
    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(part.text for part in self.content)
        return self.content or ""


class _Asked(_Lenient):
    model: str | None = None
    stream: StrictBool = False
    collection: str | None = Field(default=None, pattern=COLLECTION_PATTERN)


ConversationId = Annotated[str, StringConstraints(pattern=CONVERSATION_PATTERN)]


class ConversationRef(_Lenient):
    id: ConversationId


class ResponsesRequest(_Asked):
    """POST /v1/responses."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"input": EXAMPLE_QUESTION}]})

    input: str | list[Message] = Field(min_length=1)
    background: StrictBool = False
    previous_response_id: str | None = Field(default=None, max_length=200)
    # A conversation of POST /chat's (its `conversation_id`), by id or as {"id": ...}.
    conversation: ConversationId | ConversationRef | None = None
    multitask: Multitask = Field(default="enqueue", description=MULTITASK_DESCRIPTION)

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


def conversation_of(messages: Sequence[Message]) -> tuple[str, list[Turn]]:
    """The question (the last message, the user's) and the turns before it: each user
    message (or run of them) with the assistant's answer that follows. System and developer
    messages are left out: this service's own instructions keep its answers grounded."""
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
