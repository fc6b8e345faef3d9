"""Per-key quotas: who is held to them, and the open event streams of this process.

The other per-key limits live with what they count: unfinished jobs in store/jobs.py (a sorted set
per owner, kept by create, end and cancel in the same Redis step), stored bytes in
store/documents.py (a tally per owner, kept by put and remove), the bytes of stored results in
store/results.py. The request rate is a token bucket in
Valkey (store/rate.py). Open event streams are counted here, per process.

Every key is held to them, admins' too: a script holding an admin key can run away like any
other. The local user of an instance without keys is not. Such an instance has one user and
listens on loopback (or, with RAG_ALLOW_ANONYMOUS, sits behind a proxy that authenticates and
should limit); limits that share a service fairly between keys would there only throttle its
owner's own bulk ingestion or page. The global limits (queue depth, body and header sizes,
connections) still hold for it, and so does a generous stream limit of its own
(RAG_MAX_STREAMS_WITHOUT_KEYS): each stream holds a connection, and a runaway script of its
own must still leave some for the page and the probes.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from rag_async.domain.errors import LimitReached
from rag_async.domain.identity import LOCAL, held_to_quotas

__all__ = ["StreamSlots", "held_to_quotas"]


class StreamSlots:
    """The event streams each owner holds open, counted in this API process: a stream lives
    and dies with its process, so no count can outlive it, as one kept in Valkey could after a
    crash. With several API processes, a key may hold the limit's worth in each. `noun` names
    the streams counted in the refusal (the API keeps the ones opened by an events token apart,
    state.py)."""

    def __init__(self, limit: int, local_limit: int = 0, *, noun: str = "event streams") -> None:
        self._limit = limit
        self._local_limit = local_limit
        self._noun = noun
        self._open: Counter[str] = Counter()

    def take(self, owner: str) -> Callable[[], None]:
        """Count one more stream of `owner`, or raise `LimitReached` (429 `too_many_streams`)
        if it has as many as it may: a key `limit`, the local user of an instance without
        keys `local_limit`. Returns what gives the slot back; calling it
        more than once gives back one slot."""
        limit = self._local_limit if owner == LOCAL.name else self._limit
        if limit and self._open[owner] >= limit:
            who = "this instance's user" if owner == LOCAL.name else "this key"
            raise LimitReached(
                f"{who} has {limit} {self._noun} open, as many as it may; close one, or "
                "poll GET /jobs/{id}",
                code="too_many_streams",
                retry_after=5,
            )
        self._open[owner] += 1
        given_back = False

        def give_back() -> None:
            nonlocal given_back
            if not given_back:
                given_back = True
                self._open[owner] -= 1
                if not self._open[owner]:
                    del self._open[owner]

        return give_back
