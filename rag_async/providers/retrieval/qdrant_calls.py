"""Calls to a Qdrant server as provider calls.

qdrant-client raises its own exceptions; here they become `ProviderError`s, retryable when
trying again may help (unreachable, timed out, or a status in `retry.RETRYABLE_STATUSES`), so a
job's retries, its backoff and the "qdrant" circuit breaker treat Qdrant like the LLM and the
embedder. Embedded Qdrant runs in this process and raises none of these.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TypeVar

from qdrant_client.common.client_exceptions import QdrantException, ResourceExhaustedResponse
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from rag_async.domain.errors import ProviderError
from rag_async.providers.retry import status_error

T = TypeVar("T")


async def qdrant_call(call: Awaitable[T]) -> T:
    try:
        return await call
    except UnexpectedResponse as error:
        if error.status_code is None:  # qdrant-client's type allows it; no answer to judge
            raise ProviderError("Qdrant answered without a status", retryable=True) from error
        raise status_error(
            "Qdrant", error.status_code, error.reason_phrase, error.headers
        ) from error
    except ResourceExhaustedResponse as error:  # qdrant-client's own for a 429 with Retry-After
        headers = {"retry-after": str(error.retry_after_s)}
        raise status_error("Qdrant", 429, str(error), headers) from error
    except QdrantException as error:  # its only other: a 429 whose Retry-After it could not read
        raise status_error("Qdrant", 429, str(error)) from error
    except ResponseHandlingException as error:  # connect errors and timeouts, wrapped
        reason = error.source
        raise ProviderError(
            f"Qdrant could not be reached: {type(reason).__name__}: {reason}", retryable=True
        ) from error
