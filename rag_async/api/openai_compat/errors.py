"""OpenAI's error shape on /v1: {"error": {"message", "type", "code", "param"}}.

The service's one error handler (api/errors.py) still decides every error and its status;
under /v1 its body is reshaped, so the SDKs read the message where they look for it.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response

from rag_async.api.errors import json_response

PREFIX = "/v1/"

_TYPES = {
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    409: "invalid_request_error",
    429: "rate_limit_error",
}

Handler = Callable[[Request, Any], Awaitable[Response] | Response]


def install_openai_errors(app: FastAPI) -> None:
    """Reshape the body of every error handler's answer to a /v1 request. Call after the
    service's handlers are installed."""
    for exception, handler in list(app.exception_handlers.items()):
        app.exception_handlers[exception] = _reshaping(handler)


def _reshaping(handler: Handler) -> Handler:
    async def handle(request: Request, error: Any) -> Response:
        response = handler(request, error)
        if inspect.isawaitable(response):
            response = await response
        if not request.url.path.startswith(PREFIX):
            return response
        return openai_error(response)

    return handle


def openai_error(response: Response) -> Response:
    """The same error, status and headers, in OpenAI's shape."""
    ours = orjson.loads(bytes(response.body)).get("error", {})
    details = ours.get("details") or [{}]
    status = response.status_code
    kind = _TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    body = {
        "error": {
            "message": ours.get("message", ""),
            "type": kind,
            "code": ours.get("code"),
            "param": details[0].get("field"),
        }
    }
    headers = {
        name: value
        for name, value in response.headers.items()
        if name not in ("content-length", "content-type")
    }
    return json_response(body, status=status, headers=headers)
