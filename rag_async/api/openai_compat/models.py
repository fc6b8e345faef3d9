"""GET /v1/models: the one model that answers here (the configured LLM, or the offline
answerer), so that clients that pick a model from the list find it."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from rag_async.api.auth import Caller
from rag_async.api.openai_compat.wire import served_model
from rag_async.api.state import State
from rag_async.domain.errors import NotFound
from rag_async.domain.schemas import ErrorBody

router = APIRouter(prefix="/v1", tags=["openai"])


def _model(name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": 0, "owned_by": "rag-async"}


@router.get("/models")
async def list_models(state: State, caller: Caller) -> dict[str, Any]:
    return {"object": "list", "data": [_model(served_model(state.settings))]}


@router.get("/models/{model}", responses={404: {"model": ErrorBody}})
async def get_model(state: State, caller: Caller, model: str) -> dict[str, Any]:
    if model != served_model(state.settings):
        raise NotFound(f"no model {model[:80]!r} here: GET /v1/models lists the one there is")
    return _model(model)
