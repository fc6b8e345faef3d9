"""Calls to a Qdrant server as provider calls.

qdrant-client raises its own exceptions; here they become `ProviderError`s, retryable when
trying again may help (unreachable, timed out, 429, 5xx), so a job's retries, its backoff and
the "qdrant" circuit breaker treat Qdrant like the LLM and the embedder. Embedded Qdrant runs
in this process and raises none of these.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TypeVar

from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from ..errors import ProviderError

T = TypeVar("T")


async def qdrant_call(call: Awaitable[T]) -> T:
    try:
        return await call
    except UnexpectedResponse as error:
        status = error.status_code
        retryable = status is None or status == 429 or status >= 500
        raise ProviderError(
            f"Qdrant answered {status} {error.reason_phrase}".rstrip(), retryable=retryable
        ) from error
    except ResponseHandlingException as error:  # connect errors and timeouts, wrapped
        reason = error.source
        raise ProviderError(
            f"Qdrant could not be reached: {type(reason).__name__}: {reason}", retryable=True
        ) from error
