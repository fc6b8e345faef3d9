"""The per-key storage quota (RAG_MAX_STORED_BYTES_PER_KEY): what a key's documents and its
uploaded files (/v1/files) hold, counted together. The tallies live with what they count
(store/documents.py, store/files.py); the rule that sums them is here, for every route that
stores bytes."""

from __future__ import annotations

from rag_async.api.quotas import held_to_quotas
from rag_async.api.state import AppState
from rag_async.domain.errors import StoreFull, TooLarge
from rag_async.domain.identity import Principal


async def within_storage_quota(
    state: AppState, caller: Principal, size: int, *, replacing: str | None = None
) -> None:
    """413 `quota_exceeded` if the caller's documents and files and `size` bytes more (a
    document that replaces `replacing`, its earlier version, or a file) would pass the key's
    quota. Uploads running at the same moment may each pass it by one: the check and the
    write are two steps."""
    quota = state.settings.max_stored_bytes_per_key
    if not quota or not held_to_quotas(caller):
        return
    documents = await state.registry.stored_bytes(caller.name, besides=replacing)
    stored = documents + await state.files.stored_bytes(caller.name)
    if stored + size > quota:
        raise TooLarge(
            f"this key stores {stored} bytes of documents and files; {size} more would pass "
            f"its quota of {quota}: delete some first",
            code="quota_exceeded",
        )


def store_full() -> StoreFull:
    """The refusal of a record that Valkey, nearly full, does not take (store/memory.py)."""
    return StoreFull(
        "the job store (Valkey) is nearly full, so nothing new is recorded while the jobs "
        "already accepted finish and free memory; try again shortly",
        retry_after=10,
    )
