"""When a provider's failure is worth another try, and how long to wait before it.

One rule for every provider (the LLM, the embedder, Qdrant) and one backoff for every retry: a
call's own quick retries (llm/openai_chat.py) and a job's retries by the worker (jobs/).
"""

from __future__ import annotations

import email.utils
import math
import random
import time
from collections.abc import Mapping

from rag_async.domain.errors import ProviderError

# The HTTP statuses that another try may mend, the same for every provider: 408 (the server
# timed the request out), 409 (a lock or a concurrent change; Qdrant's only 409 is "already
# exists" on creating a collection, which retrieval/store.py handles before any retry rule),
# 429 (rate limited) and every 5xx (the server, or a proxy before it, failed). It is the
# openai SDK's own rule, so its retries inside a call (the embedder's) and ours agree. Any
# other status says the request itself is wrong (the key, the model, the body): it would fail
# again, and a retry would only delay telling someone.
RETRYABLE_STATUSES = frozenset({408, 409, 429, *range(500, 600)})


def status_error(
    provider: str, status: int, detail: str, headers: Mapping[str, str] | None = None
) -> ProviderError:
    """A provider's error answer as a `ProviderError`: retryable if `status` is in
    `RETRYABLE_STATUSES`, carrying the wait the provider asked for in its headers."""
    return ProviderError(
        f"{provider} answered HTTP {status}: {detail}",
        retryable=status in RETRYABLE_STATUSES,
        retry_after=retry_after(headers) if headers is not None else None,
    )


def retry_after(headers: Mapping[str, str]) -> float | None:
    """How long the server asked us to wait, in seconds: Retry-After-Ms (OpenAI's), or
    Retry-After as seconds or as an HTTP date; None if it did not say (or said nonsense)."""
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            seconds = float(value) * scale
        except ValueError:
            continue
        if math.isfinite(seconds):
            return max(0.0, seconds)
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def backoff(
    failures: int, retry_after: float | None = None, *, first: float = 2.0, cap: float = 60.0
) -> float:
    """Seconds to wait after the `failures`-th failure in a row: a step of `first` seconds,
    doubling with each failure up to `cap`, jittered between half and all of the step, and
    never sooner than the provider's Retry-After.

    The defaults are a job's retries (1-2 s, then 2-4 s, ... at most a minute); a call's own
    retries pass shorter ones. The jitter keeps half the step ("equal jitter") rather than
    drawing from zero ("full jitter"): retries still spread over the other half, and none comes
    at once, which would spend one of a job's few tries on a provider that has not had a
    moment to recover.
    """
    step = min(cap, first * 2.0 ** min(max(failures - 1, 0), 32))
    return max(random.uniform(step / 2, step), retry_after or 0.0)
