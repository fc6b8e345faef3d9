"""What a /v1 request asks beyond its question: honoured, echoed, or refused.

Honoured: instructions (and chat's system messages), the token limit (`max_output_tokens`,
`max_tokens`, `max_completion_tokens`; an answer it cuts is `incomplete`), temperature and
stop sequences, all passed to the LLM; `metadata` and `store`, kept with the job.

Refused with a 400 naming the parameter, because the reply would not keep the contract the
client relies on: a structured output format (`text.format`, `response_format`), tools other
than those run here (tools.py), more than one choice (`n`), and content that is not text
(images, files, audio). So the SDKs' `parse()` and LangChain's `with_structured_output` fail
loudly rather than return nothing.

`store: false` means that once the answer has been delivered nobody can read it again by its
response id (GET, `previous_response_id`, `item_reference`, input items). A background
response exists to be read again, so `background: true` with `store: false` is refused, as
OpenAI does.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rag_async.api.openai_compat.inputs import (
    ChatCompletionsRequest,
    ItemReference,
    Message,
    ResponsesRequest,
)
from rag_async.api.openai_compat.tools import Refused, accepted_tools, check_tool_choice
from rag_async.domain.generation import Generation

_TEXT_FORMATS = frozenset({"text"})


def response_generation(body: ResponsesRequest) -> Generation:
    return Generation(
        instructions=body.instructions,
        max_output_tokens=body.max_output_tokens,
        temperature=body.temperature,
    )


def chat_generation(body: ChatCompletionsRequest, instructions: str | None) -> Generation:
    # `max_completion_tokens` replaced `max_tokens` in OpenAI's API; either may come.
    return Generation(
        instructions=instructions,
        max_output_tokens=body.max_completion_tokens or body.max_tokens,
        temperature=body.temperature,
        stop=body.stops,
    )


def response_echo(body: ResponsesRequest) -> dict[str, Any]:
    """What the response object echoes of the request, kept with the job."""
    return {
        "metadata": body.metadata or {},
        "store": body.store is not False,
        "background": body.background,
        "previous_response_id": body.previous_response_id,
        "text": _text_options(body),
        "truncation": body.truncation or "disabled",
    }


def refuse_unhonoured_response(body: ResponsesRequest) -> None:
    """400 for what a response request asks that cannot be honoured (the module's doc)."""
    if body.text is not None:
        _check_format((body.text.format or {}).get("type"), "text.format")
    check_tool_choice(body.tool_choice, accepted_tools(body.tools))
    if body.background and body.store is False:
        raise Refused(
            "store",
            "a background response is kept to be read again: store false cannot be honoured "
            "with background true",
        )
    if not isinstance(body.input, str):
        _check_text_only(body.input, "input")


def refuse_unhonoured_chat(body: ChatCompletionsRequest) -> None:
    """400 for what a chat completions request asks that cannot be honoured."""
    if body.response_format is not None:
        _check_format(body.response_format.get("type"), "response_format")
    if body.n is not None and body.n > 1:
        raise Refused("n", f"n {body.n} cannot be honoured: one answer is written per question")
    # OpenAI's chat completions have no file_search: only function tools, refused here.
    check_tool_choice(body.tool_choice, accepted_tools(body.tools, runs={}))
    _check_text_only(body.messages, "messages")


def _check_format(kind: Any, param: str) -> None:
    if kind is None or kind in _TEXT_FORMATS:
        return
    raise Refused(
        param,
        f"{param} {str(kind)[:40]!r} cannot be honoured: answers are text with citations, "
        "not structured output",
        code="unsupported_format",
    )


def _check_text_only(messages: Sequence[Message | ItemReference], param: str) -> None:
    for i, message in enumerate(messages):
        if isinstance(message, Message) and message.other_parts:
            raise Refused(
                f"{param}[{i}].content",
                f"content of type {message.other_parts[0]!r} cannot be read: only text is",
                code="unsupported_content",
            )


def _text_options(body: ResponsesRequest) -> dict[str, Any]:
    given = body.text.model_dump(exclude_none=True) if body.text is not None else {}
    return {"format": {"type": "text"}, **given}
