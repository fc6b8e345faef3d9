"""What each kind of job asks of its end, whoever ends it (a worker's lifecycle, or the API
cancelling a queued job): the hook run when it ends without doing its work, and whether the
bytes it was given outlive a dead letter.

A table both processes import: it holds no provider (no retrieval, LLM or parser), so the API
can end a job exactly as a worker would.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from rag_async.domain.job import JobRecord
from rag_async.store.queue import Kind

if TYPE_CHECKING:
    from rag_async.worker.ends import Ends

FailureHook = Callable[["Ends", JobRecord, str], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class KindPolicy:
    # Called once when a job of the kind ends failed, dead-lettered or cancelled, with why.
    on_failure: FailureHook | None = None
    # Keep the upload while the job is a dead letter, so that a requeue can still read it
    # (every other end drops it at once).
    keeps_upload: bool = False


async def _document_failed(ends: Ends, record: JobRecord, reason: str) -> None:
    """A document job that ended without doing its work: the registry says why. (A job only
    deferred or retried is not over, and leaves the registry as it is.)"""
    await ends.registry.failed(record.document_id or record.job_id, record.job_id, reason)


KIND_POLICIES: dict[Kind, KindPolicy] = {
    "chat": KindPolicy(),
    "ingest": KindPolicy(on_failure=_document_failed, keeps_upload=True),
    "delete": KindPolicy(on_failure=_document_failed),
}
