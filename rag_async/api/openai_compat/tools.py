"""The one place where a /v1 request's `tools` and `tool_choice` are judged.

A tool type this service runs is accepted through its entry in `TOOLS` (a checker that
returns the tool as the service keeps it, or raises `Refused`); every other type, a function
tool above all, is refused with a 400 naming it: a client that defines a function expects
the model to call it, and an answer that silently never does would look like a model's choice.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from rag_async.api.openai_compat.vector_store_search import RankingOptions
from rag_async.domain.errors import RagError
from rag_async.domain.filters import Filter

ToolCheck = Callable[[dict[str, Any], str], dict[str, Any]]

# OpenAI's limit on the vector stores one file_search tool searches.
MAX_VECTOR_STORES = 2
_StoreId = Annotated[str, StringConstraints(min_length=1, max_length=200)]

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


class FileSearchTool(BaseModel):
    """The Responses API's `file_search` tool: the answer's sources are searched for in these
    vector stores (each the caller's: api/openai_compat/file_search.py checks it)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["file_search"]
    vector_store_ids: list[_StoreId] = Field(min_length=1, max_length=MAX_VECTOR_STORES)
    filters: Filter | None = None
    max_num_results: int | None = Field(default=None, strict=True, ge=1, le=50)
    ranking_options: RankingOptions | None = None


def _file_search(tool: dict[str, Any], param: str) -> dict[str, Any]:
    try:
        checked = FileSearchTool.model_validate(tool)
    except ValidationError as error:
        problem = error.errors()[0]
        where = ".".join(str(part) for part in (param, *problem["loc"]))
        raise Refused(
            where, f"file_search tool: {where}: {problem['msg']}", code="invalid_tool"
        ) from None
    return checked.model_dump(mode="json", exclude_none=True)


# The tool types that are run here, each with its checker (`param`: where the tool was, for
# the error).
TOOLS: dict[str, ToolCheck] = {"file_search": _file_search}


def accepted_tools(
    tools: Sequence[Any] | None, param: str = "tools", runs: Mapping[str, ToolCheck] = TOOLS
) -> list[dict[str, Any]]:
    """The request's tools, each checked by its type's checker (those of `runs`: chat
    completions run none); 400 for any other."""
    accepted: list[dict[str, Any]] = []
    for i, tool in enumerate(tools or ()):
        where = f"{param}[{i}]"
        kind = tool.get("type") if isinstance(tool, dict) else None
        check = runs.get(kind) if isinstance(kind, str) else None
        if check is None:
            names = ", ".join(sorted(runs)) or "none"
            raise Refused(
                where,
                f"tool type {str(kind)[:40]!r} is not supported here (tools run: {names}): "
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
