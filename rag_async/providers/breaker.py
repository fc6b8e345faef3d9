"""A circuit breaker per external provider.

After `threshold` failures in a row the breaker opens: calls are refused at once for
`reset_after` seconds, so jobs wait (deferred, not failed) instead of burning their tries on a
provider that is down. Then it is half-open: one job goes through as the probe; its success
closes the breaker, its failure opens it again, and every other job waits meanwhile.

The probe belongs to the task that claimed it (a job runs in one task, from its first check to
its provider call), so a probe whose job ends any other way, cancelled or failed before it
reached the provider, frees the half-open breaker for the next job instead of wedging it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

import structlog

from rag_async.domain.errors import ProviderError, RagError

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
    _probe: asyncio.Task[Any] | None = field(default=None, repr=False)

    @property
    def state(self) -> State:
        if self.opened_at is None:
            return "closed"
        if time.monotonic() - self.opened_at < self.reset_after:
            return "open"
        return "half_open"

    @property
    def probing(self) -> bool:
        """A probe is out: a half-open breaker lets nobody else through until it ends."""
        return self._probe is not None and not self._probe.done()

    def check(self) -> None:
        """Raise BreakerOpen unless the current task may call the provider now: always while
        closed; while half-open, only the task that is (or now becomes) the probe."""
        state = self.state
        if state == "closed":
            return
        if state == "half_open":
            task = _current_task()
            if not self.probing or self._probe is task:
                if self._probe is not task:
                    log.info("breaker half-open, probing", provider=self.provider)
                self._probe = task
                return
        raise BreakerOpen(self.provider, self._remaining())

    def before_call(self) -> None:
        """Raise BreakerOpen unless a call may go through now (the same rule as `check`)."""
        self.check()

    def succeeded(self) -> None:
        if self.opened_at is not None:
            log.info("breaker closed", provider=self.provider)
        self.failures, self.opened_at, self._probe = 0, None, None

    def failed(self) -> None:
        self.failures += 1
        if self.opened_at is None and self.failures < self.threshold:
            return
        if self.opened_at is None or self.probing:
            log.warning("breaker open", provider=self.provider, failures=self.failures)
        # Open, or open again: a failed probe (or a call already under way when the breaker
        # opened) starts a new pause.
        self.opened_at, self._probe = time.monotonic(), None

    def released(self) -> None:
        """The current task's call ended without a verdict on the provider's health (it was
        cancelled, or refused as a bad request): if it was the probe, let another job probe."""
        if self._probe is not None and self._probe is _current_task():
            self._probe = None

    def _remaining(self) -> float:
        if self.opened_at is None:
            return 1.0
        return max(1.0, self.reset_after - (time.monotonic() - self.opened_at))


def _current_task() -> asyncio.Task[Any] | None:
    try:
        return asyncio.current_task()
    except RuntimeError:  # no running event loop
        return None


async def guarded(breaker: CircuitBreaker, call: Awaitable[T]) -> T:
    """Await a provider call through its breaker."""
    try:
        breaker.before_call()
    except BreakerOpen:
        if isinstance(call, Coroutine):
            call.close()  # never to be awaited: say so, rather than warn "never awaited"
        raise
    try:
        result = await call
    except ProviderError as error:
        if error.retryable:
            breaker.failed()
        else:  # a refusal (HTTP 400, 401) says nothing about the provider's health
            breaker.released()
        raise
    except BaseException:
        breaker.released()
        raise
    breaker.succeeded()
    return result


async def guarded_stream(breaker: CircuitBreaker, stream: AsyncIterator[T]) -> AsyncIterator[T]:
    """Iterate a provider's stream through its breaker. The stream is closed with this one,
    so a consumer that stops early hangs up on the provider at once."""
    breaker.before_call()
    try:
        async for item in stream:
            yield item
    except ProviderError as error:
        if error.retryable:
            breaker.failed()
        else:
            breaker.released()
        raise
    except BaseException:  # cancelled, or closed early by the consumer (GeneratorExit)
        breaker.released()
        raise
    finally:
        aclose = getattr(stream, "aclose", None)
        if aclose is not None:
            await aclose()
    breaker.succeeded()
