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


class BadRequest(RagError):
    status_code = 422
    code = "invalid_request"


class TooLarge(RagError):
    status_code = 413
    code = "payload_too_large"


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

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


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
