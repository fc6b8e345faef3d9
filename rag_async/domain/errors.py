"""One error base. Every error the service raises on purpose says its HTTP status, a stable
code for machines, and a message for people; the API turns it into the one JSON error shape."""

from __future__ import annotations


class RagError(Exception):
    """Base of every deliberate error. `retryable` tells a worker whether another try helps."""

    status_code: int = 500
    code: str = "internal_error"
    retryable: bool = False

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def headers(self) -> dict[str, str] | None:
        """HTTP headers the answer to this error carries."""
        return None


class BadRequest(RagError):
    status_code = 422
    code = "invalid_request"


class Unsupported(RagError):
    """400: a well-formed request this service understands but cannot carry out as asked (an
    OpenAI option it cannot honour), as OpenAI answers what it will not do."""

    status_code = 400
    code = "unsupported"


class TooLarge(RagError):
    status_code = 413
    code = "payload_too_large"


class Unauthorized(RagError):
    """No API key, or not a valid one."""

    status_code = 401
    code = "unauthorized"

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": 'Bearer realm="rag-async"'}


class Forbidden(RagError):
    """A valid key that may not do this (an admin's route)."""

    status_code = 403
    code = "forbidden"


class NotFound(RagError):
    status_code = 404
    code = "not_found"


class Conflict(RagError):
    status_code = 409
    code = "conflict"


class Overloaded(RagError):
    """The queue is deeper than the service can finish in good time: shed load."""

    status_code = 429
    code = "overloaded"

    def __init__(self, message: str, *, retry_after: int, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


class StoreFull(RagError):
    """Valkey is at or near its memory limit: new work is refused while the reserve left lets
    running jobs end (and free the uploads they hold). It passes once they have, or once old
    results expire, so the answer says when to try again."""

    status_code = 507
    code = "insufficient_storage"

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


class LimitReached(RagError):
    """A key's own limit (requests a minute, unfinished jobs, open streams; `code` says which):
    429, and when trying again may succeed."""

    status_code = 429
    code = "rate_limited"

    def __init__(self, message: str, *, code: str, retry_after: int) -> None:
        super().__init__(message, code=code)
        self.retry_after = max(1, retry_after)

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


class HeadersTooLarge(RagError):
    status_code = 431
    code = "headers_too_large"


class ProviderError(RagError):
    """An external provider (LLM, embedder) failed; `retryable` says if trying again helps."""

    status_code = 502
    code = "provider_error"

    def __init__(self, message: str, *, retryable: bool, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after  # the provider's Retry-After, in seconds, if it said


class ConfigurationError(RagError):
    """The deployment is set up in a way that cannot work; the message says how to fix it."""

    code = "configuration_error"
