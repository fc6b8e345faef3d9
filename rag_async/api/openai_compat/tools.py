"""The one place where a /v1 request's `tools` and `tool_choice` are judged.

A tool type this service runs is accepted through its entry in `TOOLS` (a checker that
returns the tool as the service keeps it, or raises `Refused`); every other type, a function
tool above all, is refused with a 400 naming it: a client that defines a function expects
the model to call it, and an answer that silently never does would look like a model's choice.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from rag_async.domain.errors import RagError

ToolCheck = Callable[[dict[str, Any], str], dict[str, Any]]

# The tool types that are run here, each with its checker (`param`: where the tool was, for
# the error). None yet: `file_search` comes with the vector stores.
TOOLS: dict[str, ToolCheck] = {}

# What `tool_choice` may say when no tool is given or every given tool is optional.
_FREE_CHOICES = frozenset({"none", "auto"})


class Refused(RagError):
    """What a request asks that would change the reply's contract and cannot be honoured:
    400, naming the parameter, so that a client relying on it fails loudly."""

    status_code = 400
    code = "unsupported_parameter"

    def __init__(self, param: str, message: str, *, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.param = param

    def details(self) -> list[dict[str, str]]:
        return [{"field": self.param, "problem": self.message}]


def accepted_tools(tools: Sequence[Any] | None, param: str = "tools") -> list[dict[str, Any]]:
    """The request's tools, each checked by its type's checker; 400 for any other."""
    accepted: list[dict[str, Any]] = []
    for i, tool in enumerate(tools or ()):
        where = f"{param}[{i}]"
        kind = tool.get("type") if isinstance(tool, dict) else None
        check = TOOLS.get(kind) if isinstance(kind, str) else None
        if check is None:
            runs = ", ".join(sorted(TOOLS)) or "none"
            raise Refused(
                where,
                f"tool type {str(kind)[:40]!r} is not supported here (tools run: {runs}): "
                "this service answers from its documents and calls no client function",
                code="unsupported_tool",
            )
        accepted.append(check(tool, where))
    return accepted


def check_tool_choice(choice: Any, tools: Sequence[dict[str, Any]]) -> None:
    """`none` and `auto` always pass; `required`, or a named tool, only for a tool given."""
    if choice is None or (isinstance(choice, str) and choice in _FREE_CHOICES):
        return
    named = choice.get("type") if isinstance(choice, dict) else choice
    if named == "required" and tools:
        return
    if isinstance(named, str) and any(tool.get("type") == named for tool in tools):
        return
    raise Refused(
        "tool_choice",
        f"tool_choice {str(named)[:40]!r} cannot be honoured: no such tool runs here",
        code="unsupported_tool",
    )
