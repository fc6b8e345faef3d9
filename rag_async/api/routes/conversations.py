"""GET /conversations/{id}: a conversation's turns, for the key that began it."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from rag_async.api.auth import Caller
from rag_async.api.state import State
from rag_async.domain.errors import NotFound
from rag_async.domain.schemas import CONVERSATION_PATTERN, ErrorBody
from rag_async.store.conversations import Conversation

router = APIRouter(tags=["questions"])


@router.get(
    "/conversations/{conversation_id}",
    response_model=Conversation,
    responses={404: {"model": ErrorBody}},
)
async def get_conversation(
    state: State,
    caller: Caller,
    conversation_id: Annotated[str, Path(pattern=CONVERSATION_PATTERN)],
) -> Conversation:
    """Its answered turns, oldest first, each with the search its question made. Another key's
    conversation is not found, exactly like one that never existed or has expired."""
    conversation = await state.conversations.get(conversation_id)
    if conversation is None or not caller.may_see(conversation.owner):
        raise NotFound(f"no conversation {conversation_id}: it never existed, or has expired")
    return conversation
