"""OpenAI's error shape on /v1: {"error": {"message", "type", "code", "param"}}.

The service's one error handler (api/errors.py) still decides every error and its status;
under /v1 its body is reshaped, so the SDKs read the message where they look for it, and an
error that another try cannot change says so (`x-should-retry: false`): the SDKs otherwise
retry every 409 and 5xx, and a retried POST is a new job (they send no Idempotency-Key).
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

# What may pass if tried again: a timeout, a key's limits and the queue's (429), the store
# unreachable (503) or full (507), an unexpected failure (500). Every other error is final for
# this request: a bad or conflicting one (4xx), an answer that failed after all its job's tries
# (502), or one still being written (504: a retry would ask again, the job id leads to it).
_RETRYABLE = frozenset({408, 429, 500, 503, 507})

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
    if status not in _RETRYABLE:
        headers["x-should-retry"] = "false"
    return json_response(body, status=status, headers=headers)
