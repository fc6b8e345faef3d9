"""What each kind of job asks of its end, whoever ends it (a worker's lifecycle, or the API
cancelling a queued job): the hook run when it ends without doing its work, and whether the
bytes it was given outlive a dead letter.

A table both processes import: it holds no provider (no retrieval, LLM or parser), so the API
can end a job exactly as a worker would.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from rag_async.domain.document import DocumentStatus
from rag_async.domain.job import JobRecord
from rag_async.store.conversations import StoredTurn
from rag_async.store.queue import Kind

if TYPE_CHECKING:
    from rag_async.worker.ends import Ends

# The hook of a job that ended without doing its work: how it ended ("failed",
# "dead_lettered" or "cancelled") and why.
FailureHook = Callable[["Ends", JobRecord, str, str], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class KindPolicy:
    # Called once when a job of the kind ends failed, dead-lettered or cancelled, with why.
    on_failure: FailureHook | None = None
    # Keep the upload while the job is a dead letter, so that a requeue can still read it
    # (every other end drops it at once).
    keeps_upload: bool = False


async def _document_failed(ends: Ends, record: JobRecord, outcome: str, reason: str) -> None:
    """A document job that ended without doing its work: the registry says why, and counts
    the current version's bytes only (the job's own chunks, if it wrote any, were deleted by
    its work on the way out). Nothing changes if a newer job owns the document. (A job only
    deferred or retried is not over, and leaves the registry as it is.)"""
    status = DocumentStatus.CANCELLED if outcome == "cancelled" else DocumentStatus.FAILED
    document_id = record.document_id or record.job_id
    await ends.registry.version_ended(document_id, record.job_id, status, reason)


async def _answer_failed(ends: Ends, record: JobRecord, outcome: str, reason: str) -> None:
    """A question cancelled by the next one of its conversation (`multitask: interrupt`,
    worker/answering.py): the text it had streamed (by the transcript's rule: a dead
    attempt's text is dropped) is kept as its turn, marked `interrupted`."""
    conversation_id = record.conversation_id
    if outcome != "cancelled" or conversation_id is None:
        return
    if await ends.conversations.marked(conversation_id, record.job_id) != "interrupted":
        return
    answer, _ = await ends.events.answer_so_far(record.job_id)
    turn = StoredTurn(
        question=record.query or "",
        answer=answer,
        job_id=record.job_id,
        answered_at=time.time(),
        interrupted=True,
    )
    await ends.conversations.add_turn(conversation_id, turn)


KIND_POLICIES: dict[Kind, KindPolicy] = {
    "answer": KindPolicy(on_failure=_answer_failed),
    "search": KindPolicy(),  # read-only: an end leaves nothing to undo
    "ingest": KindPolicy(on_failure=_document_failed, keeps_upload=True),
    "delete": KindPolicy(on_failure=_document_failed),
}
