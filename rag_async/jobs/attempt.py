"""The events of one attempt of a job, fenced so that an attempt superseded by a newer one
(its worker was taken for dead, recovery.py) can write nothing more to the job's log."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ..eventlog import EventLog
from ..events import _Event


@dataclass(frozen=True, slots=True)
class AttemptEvents:
    log: EventLog
    job_id: str
    attempt: int

    async def append(
        self, event: _Event, record: Mapping[str, str | int | float] | None = None
    ) -> int:
        """Append to the job's log while this is its latest attempt; else raise `Superseded`."""
        return await self.log.append(self.job_id, event, record, attempt=self.attempt)
