"""Items of a response: the `item_reference` inputs that name earlier answers, and a
response's input items as GET /v1/responses/{id}/input_items lists them.

An answer's output message is `msg_<job>` (wire.py): a reference to it is that job's answer,
read with the same ownership as the response itself, so another key's id is not found.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rag_async.api.openai_compat.answers import owned_answer
from rag_async.api.openai_compat.inputs import ItemReference, Message
from rag_async.api.openai_compat.wire import MESSAGE_PREFIX, response_status
from rag_async.api.state import AppState
from rag_async.domain.errors import Conflict, NotFound
from rag_async.domain.identity import Principal
from rag_async.domain.job import JobRecord, JobStatus


async def resolved_items(
    state: AppState, caller: Principal, items: Sequence[Message | ItemReference]
) -> list[Message]:
    """The input with each reference replaced by the message it names."""
    resolved: list[Message] = []
    for item in items:
        if isinstance(item, Message):
            resolved.append(item)
            continue
        record = await _referenced(state, caller, item.id)
        resolved.append(Message(role="assistant", content=record.answer or ""))
    return resolved


async def _referenced(state: AppState, caller: Principal, item_id: str) -> JobRecord:
    """The job whose answer the item is: the caller's, and answered."""
    if not item_id.startswith(MESSAGE_PREFIX):
        raise NotFound(f"no item {item_id[:80]!r}: only answers (msg_...) can be referred to")
    try:
        record = await owned_answer(state, caller, item_id.removeprefix(MESSAGE_PREFIX))
    except NotFound:
        raise NotFound(f"no item {item_id[:80]!r}: it never existed, or has expired") from None
    if record.status is not JobStatus.COMPLETE:
        raise Conflict(
            f"item {item_id[:80]} is the answer of a response that is "
            f"{response_status(record.status)}: only a completed answer can be referred to",
            code="item_not_completed",
        )
    return record


def input_items(record: JobRecord) -> list[dict[str, Any]]:
    """The response's input as messages, the latest first (OpenAI's default order): the
    turns it was given in its own input, then its question. Turns that came with the
    previous response or the conversation are theirs, not its input."""
    own = int(record.v1.get("input_turns", 0))
    turns = record.history[len(record.history) - own :] if own else []
    said: list[tuple[str, str]] = []
    for turn in turns:
        said += [("user", turn.question), ("assistant", turn.answer)]
    said.append(("user", record.query or ""))
    items = [
        {
            "id": f"{MESSAGE_PREFIX}{record.job_id}_in{i}",
            "type": "message",
            "role": role,
            "status": "completed",
            "content": [{"type": "input_text" if role == "user" else "output_text", "text": text}],
        }
        for i, (role, text) in enumerate(said)
    ]
    return items[::-1]
