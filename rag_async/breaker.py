"""A circuit breaker per external provider.

After `threshold` failures in a row the breaker opens: calls are refused at once for
`reset_after` seconds, so jobs wait (deferred, not failed) instead of burning their tries on a
provider that is down. Then it is half-open: one call goes through as a probe; its success
closes the breaker, its failure opens it again.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass, field
from typing import Literal, TypeVar

import structlog

from .errors import ProviderError, RagError

log = structlog.get_logger(__name__)

State = Literal["closed", "open", "half_open"]
T = TypeVar("T")


class BreakerOpen(RagError):
    """The provider's breaker is open; try again after `retry_after` seconds."""

    status_code = 503
    code = "provider_unavailable"
    retryable = True

    def __init__(self, provider: str, retry_after: float) -> None:
        super().__init__(f"the {provider} is failing; paused for {retry_after:.0f} s")
        self.retry_after = retry_after


@dataclass
class CircuitBreaker:
    provider: str
    threshold: int = 5
    reset_after: float = 30.0
    failures: int = 0
    opened_at: float | None = None
    probing: bool = field(default=False)

    @property
    def state(self) -> State:
        if self.opened_at is None:
            return "closed"
        if time.monotonic() - self.opened_at < self.reset_after:
            return "open"
        return "half_open"

    def check(self) -> None:
        """Raise BreakerOpen while open (a half-open breaker lets the caller try its luck)."""
        if self.state == "open":
            assert self.opened_at is not None
            remaining = max(1.0, self.reset_after - (time.monotonic() - self.opened_at))
            raise BreakerOpen(self.provider, remaining)

    def before_call(self) -> None:
        """Raise BreakerOpen unless a call may go through now."""
        state = self.state
        if state == "closed":
            return
        if state == "half_open" and not self.probing:
            self.probing = True  # this call is the probe; others wait for its outcome
            return
        assert self.opened_at is not None
        remaining = max(1.0, self.reset_after - (time.monotonic() - self.opened_at))
        raise BreakerOpen(self.provider, remaining)

    def succeeded(self) -> None:
        if self.opened_at is not None:
            log.info("breaker closed", provider=self.provider)
        self.failures, self.opened_at, self.probing = 0, None, False

    def failed(self) -> None:
        self.failures += 1
        if self.probing or self.failures >= self.threshold:
            if self.opened_at is None or self.probing:
                log.warning("breaker open", provider=self.provider, failures=self.failures)
            self.opened_at, self.probing = time.monotonic(), False


async def guarded(breaker: CircuitBreaker, call: Awaitable[T]) -> T:
    """Await a provider call through its breaker."""
    breaker.before_call()
    try:
        result = await call
    except ProviderError as error:
        if error.retryable:  # a refusal (HTTP 400, 401) says nothing about the provider's health
            breaker.failed()
        raise
    breaker.succeeded()
    return result


async def guarded_stream(breaker: CircuitBreaker, stream: AsyncIterator[T]) -> AsyncIterator[T]:
    """Iterate a provider's stream through its breaker."""
    breaker.before_call()
    try:
        async for item in stream:
            yield item
    except ProviderError as error:
        if error.retryable:
            breaker.failed()
        raise
    breaker.succeeded()
