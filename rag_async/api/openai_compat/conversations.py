"""OpenAI's Conversations API over the service's conversations (store/conversations.py):
create, retrieve, update (metadata), delete, and the items: list, add, retrieve, delete.

A conversation here is a series of turns, each a question and its answer; its items are the
two messages of each turn, oldest first: the question (`msg_<job>_q`) and the answer
(`msg_<job>`, the id of the answer's message in its response, so an `item_reference` names
it). Items added by a client come in question-and-answer pairs, kept as turns like answered
ones. `POST /v1/responses` with `conversation` asks within one, as POST /chat does. Another
key's conversation is not found, like one that never existed.
"""

from __future__ import annotations

import secrets
import time
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query
from pydantic import ConfigDict, Field

from rag_async.api.auth import Caller
from rag_async.api.openai_compat.inputs import ItemReference, Lenient, Message, Metadata
from rag_async.api.openai_compat.items import resolved_items
from rag_async.api.openai_compat.pages import PageQuery, list_object, page
from rag_async.api.openai_compat.tools import Refused
from rag_async.api.openai_compat.wire import MESSAGE_PREFIX
from rag_async.api.state import AppState, State
from rag_async.domain.errors import NotFound
from rag_async.domain.identity import Principal
from rag_async.domain.job import new_job_id
from rag_async.domain.schemas import CONVERSATION_PATTERN, ErrorBody
from rag_async.store.conversations import Conversation, StoredTurn

router = APIRouter(prefix="/v1", tags=["openai"])
_ERRORS: dict[int | str, dict[str, Any]] = {s: {"model": ErrorBody} for s in (400, 404, 422)}
ConversationPath = Annotated[str, Path(pattern=CONVERSATION_PATTERN)]
_QUESTION = "_q"
# Items added at once, as OpenAI allows.
_MOST_ITEMS = 20


class NewConversation(Lenient):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "metadata": {"topic": "tea"},
                    "items": [
                        {"role": "user", "content": "How long do I brew green tea?"},
                        {"role": "assistant", "content": "Two minutes [1]."},
                    ],
                }
            ]
        }
    )

    metadata: Metadata | None = None
    items: list[Message | ItemReference] = Field(default=[], max_length=_MOST_ITEMS)


class ConversationUpdate(Lenient):
    model_config = ConfigDict(json_schema_extra={"examples": [{"metadata": {"topic": "tea"}}]})

    metadata: Metadata


class NewItems(Lenient):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "items": [
                        {"role": "user", "content": "And black tea?"},
                        {"role": "assistant", "content": "Four minutes [1]."},
                    ]
                }
            ]
        }
    )

    items: list[Message | ItemReference] = Field(min_length=1, max_length=_MOST_ITEMS)


@router.post("/conversations", responses=_ERRORS)
async def create_conversation(
    body: NewConversation, state: State, caller: Caller
) -> dict[str, Any]:
    conversation_id = f"conv_{secrets.token_hex(24)}"
    turns = _turns(await resolved_items(state, caller, body.items), "items")
    conversation = await state.conversations.join(conversation_id, caller)
    if conversation is None:  # a fresh random id is nobody's: cannot happen
        raise NotFound(f"no conversation {conversation_id}")
    await state.conversations.set_metadata(conversation_id, body.metadata or {})
    for turn in turns:
        await state.conversations.add_turn(conversation_id, turn)
    return _conversation(await _owned(state, caller, conversation_id))


@router.get("/conversations/{conversation_id}", responses=_ERRORS)
async def get_conversation(
    state: State, caller: Caller, conversation_id: ConversationPath
) -> dict[str, Any]:
    return _conversation(await _owned(state, caller, conversation_id))


@router.post("/conversations/{conversation_id}", responses=_ERRORS)
async def update_conversation(
    body: ConversationUpdate, state: State, caller: Caller, conversation_id: ConversationPath
) -> dict[str, Any]:
    await _owned(state, caller, conversation_id)
    await state.conversations.set_metadata(conversation_id, body.metadata)
    return _conversation(await _owned(state, caller, conversation_id))


@router.delete("/conversations/{conversation_id}", responses=_ERRORS)
async def delete_conversation(
    state: State, caller: Caller, conversation_id: ConversationPath
) -> dict[str, Any]:
    await _owned(state, caller, conversation_id)
    await state.conversations.delete(conversation_id)
    return {"id": conversation_id, "object": "conversation.deleted", "deleted": True}


@router.get("/conversations/{conversation_id}/items", responses=_ERRORS)
async def list_items(
    state: State,
    caller: Caller,
    conversation_id: ConversationPath,
    order: Literal["asc", "desc"] = "desc",
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    after: Annotated[str | None, Query(max_length=200)] = None,
) -> dict[str, Any]:
    """Its items, the latest first unless `order=asc`, paged by `after` an item id."""
    items = _items(await _owned(state, caller, conversation_id))
    data, more = page(items, PageQuery(limit, order, after, None), _item_id)
    return list_object(data, more)


@router.post("/conversations/{conversation_id}/items", responses=_ERRORS)
async def add_items(
    body: NewItems, state: State, caller: Caller, conversation_id: ConversationPath
) -> dict[str, Any]:
    """Add question-and-answer pairs as turns; the items added, as a list."""
    await _owned(state, caller, conversation_id)
    turns = _turns(await resolved_items(state, caller, body.items), "items")
    for turn in turns:
        await state.conversations.add_turn(conversation_id, turn)
    return list_object([item for turn in turns for item in _turn_items(turn)], False)


@router.get("/conversations/{conversation_id}/items/{item_id}", responses=_ERRORS)
async def get_item(
    state: State, caller: Caller, conversation_id: ConversationPath, item_id: str
) -> dict[str, Any]:
    for item in _items(await _owned(state, caller, conversation_id)):
        if item["id"] == item_id:
            return item
    raise NotFound(f"no item {item_id[:80]!r} in conversation {conversation_id}")


@router.delete("/conversations/{conversation_id}/items/{item_id}", responses=_ERRORS)
async def delete_item(
    state: State, caller: Caller, conversation_id: ConversationPath, item_id: str
) -> dict[str, Any]:
    """Delete an item: its whole turn (a question without its answer, or the reverse, is
    no turn); the conversation as it then stands."""
    job_id = item_id.removeprefix(MESSAGE_PREFIX).removesuffix(_QUESTION)
    await _owned(state, caller, conversation_id)
    if not await state.conversations.remove_turn(conversation_id, job_id):
        raise NotFound(f"no item {item_id[:80]!r} in conversation {conversation_id}")
    return _conversation(await _owned(state, caller, conversation_id))


async def _owned(state: AppState, caller: Principal, conversation_id: str) -> Conversation:
    conversation = await state.conversations.get(conversation_id)
    if conversation is None or not caller.may_see(conversation.owner):
        raise NotFound(f"no conversation {conversation_id}: it never existed, or has expired")
    return conversation


def _conversation(conversation: Conversation) -> dict[str, Any]:
    return {
        "id": conversation.conversation_id,
        "object": "conversation",
        "created_at": int(conversation.created_at or 0),
        "metadata": conversation.metadata,
    }


def _turns(messages: list[Message], param: str) -> list[StoredTurn]:
    """Question-and-answer pairs as turns (a system message is no turn: refused)."""
    spoken = [(m.role, m.text) for m in messages]
    pairs = list(zip(spoken[::2], spoken[1::2], strict=False))
    unpaired = any(q[0] != "user" or a[0] != "assistant" for q, a in pairs)
    if len(spoken) % 2 or unpaired or any(m.other_parts for m in messages):
        raise Refused(
            param,
            "items are kept as turns: each user message (text) followed by the assistant's answer",
            code="unsupported_items",
        )
    now = time.time()
    # Apart by a microsecond each: a conversation's turns are ordered by when answered.
    return [
        StoredTurn(question=q[1], answer=a[1], job_id=new_job_id(), answered_at=now + i * 1e-6)
        for i, (q, a) in enumerate(pairs)
    ]


def _item_id(item: dict[str, Any]) -> str:
    return str(item["id"])


def _items(conversation: Conversation) -> list[dict[str, Any]]:
    return [item for turn in conversation.turns for item in _turn_items(turn)]


def _turn_items(turn: StoredTurn) -> list[dict[str, Any]]:
    answer_id = f"{MESSAGE_PREFIX}{turn.job_id}"
    return [
        _message(f"{answer_id}{_QUESTION}", "user", "input_text", turn.question),
        _message(answer_id, "assistant", "output_text", turn.answer),
    ]


def _message(item_id: str, role: str, kind: str, text: str) -> dict[str, Any]:
    part: dict[str, Any] = {"type": kind, "text": text}
    if kind == "output_text":
        part["annotations"] = []
    return {
        "id": item_id,
        "type": "message",
        "role": role,
        "status": "completed",
        "content": [part],
    }
