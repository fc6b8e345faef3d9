"""A conversation's questions in turn: what a second message does while the first is still
answering (double-texting), for the API that accepts it and the worker that runs it.

    asked ── joins the answering set (conversations.py), after the questions still in it
      ├─ reject ──── any still answering ─► 409, and it leaves the set
      ├─ enqueue ─── queued; its worker defers it (no try spent) until they have ended
      ├─ interrupt ─ they are marked and cancelled; each cancelled one's end keeps the text it
      │              had streamed as its turn (`interrupted`), then this one runs, as enqueue
      └─ rollback ── they are marked and cancelled; no turn of theirs is kept
    ended, however (worker/ends.py `ended`) ─► it leaves the set: the next one may start

A question "still answering" is one in the set whose job has not ended; an ended one still in
the set has its end's bookkeeping under way (the turn it keeps is written before it leaves),
unless that end is older than `grace`: its process died, and a heartbeat settles it later.
A job whose record has expired is not waited for. So a killed worker never blocks a
conversation for longer than its job takes to end (arq runs it again elsewhere) or expire.
Its worker reads the history when the answer starts, so it holds the answers before it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from rag_async.domain.errors import Conflict
from rag_async.domain.job import JobRecord, JobStatus
from rag_async.domain.schemas import Multitask
from rag_async.store.conversations import Mark, Turn
from rag_async.worker.ends import Ends, cancel

# How often a question waiting for the one before it looks again (worker/lifecycle.py defers
# it this long, without spending a try).
WAIT_POLL = 0.5


class ConversationBusy(Conflict):
    code = "conversation_busy"


async def still_answering(
    ends: Ends, conversation_id: str, job_ids: Sequence[str], *, grace: float
) -> list[JobRecord]:
    """The records of the jobs of `job_ids` still answering, in order; the others leave the
    conversation's answering set (expired, or ended longer than `grace` seconds ago)."""
    records: list[JobRecord] = []
    now = time.time()
    for job_id in job_ids:
        record = await ends.jobs.get(job_id)
        ended_long_ago = (
            record is not None and record.status.ended and now - (record.finished_at or 0.0) > grace
        )
        if record is None or ended_long_ago:
            await ends.conversations.finished(conversation_id, job_id)
            continue
        records.append(record)
    return records


def refuse_if_busy(conversation_id: str, answering: Sequence[JobRecord]) -> None:
    """`multitask: reject`: 409 naming the job still answering."""
    if answering:
        ids = ", ".join(record.job_id for record in answering)
        raise ConversationBusy(
            f"conversation {conversation_id} is still answering job {ids}: ask again when it "
            "has ended, or send multitask 'enqueue', 'interrupt' or 'rollback'"
        )


async def stop_earlier(
    ends: Ends, conversation_id: str, answering: Sequence[JobRecord], how: Multitask
) -> None:
    """`interrupt` or `rollback`: mark the questions still answering (so that their ends keep
    or drop their turns accordingly, whichever comes first), then cancel them."""
    if how not in ("interrupt", "rollback"):
        return
    mark: Mark = "interrupted" if how == "interrupt" else "rolled_back"
    for record in answering:
        await ends.conversations.mark(conversation_id, record.job_id, mark)
        if not record.status.ended:
            await cancel(ends, record)


def refuse_if_follows_busy(previous: JobRecord, multitask: Multitask) -> None:
    """`multitask: reject` of a /v1 response that follows one still answering: 409."""
    if multitask == "reject":
        raise ConversationBusy(
            f"response {previous.job_id} is still answering: ask again when it has ended, or "
            "send multitask 'enqueue', 'interrupt' or 'rollback'"
        )


async def waits_for_earlier(ends: Ends, record: JobRecord, *, grace: float) -> bool:
    """Whether the question of `record` must wait for an earlier one: of its conversation,
    or the /v1 response it follows."""
    if record.follows is not None:
        followed = await ends.jobs.get(record.follows)
        return followed is not None and not followed.status.ended
    if record.conversation_id is None:
        return False
    before = await ends.conversations.answering_before(record.conversation_id, record.job_id)
    return bool(await still_answering(ends, record.conversation_id, before, grace=grace))


async def followed_turns(ends: Ends, record: JobRecord) -> list[Turn]:
    """The turns before a /v1 response asked while the one it follows was still answering,
    read once that one has ended: its own history, then its turn (whole if it completed, what
    it had streamed if this one interrupted it, none if rolled back, failed or cancelled by
    someone else), then the turns this one was given."""
    followed = await ends.jobs.get(record.follows) if record.follows else None
    if followed is None:
        return record.history
    turns = list(followed.history)
    question = followed.query or ""
    if followed.status is JobStatus.COMPLETE:
        turns.append(Turn(question=question, answer=followed.answer or ""))
    elif followed.status is JobStatus.CANCELLED and record.multitask == "interrupt":
        answer, _ = await ends.events.answer_so_far(followed.job_id)
        turns.append(Turn(question=question, answer=answer))
    return [*turns, *record.history]
