"""The events of one attempt of a job, fenced so that an attempt superseded by a newer one
(its worker was taken for dead, recovery.py) can write nothing more to the job's log, and
numbered so that an append resent after a lost reply is logged once (eventlog.py)."""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field

from ..eventlog import EventLog
from ..events import _Event


@dataclass(frozen=True, slots=True)
class AttemptEvents:
    log: EventLog
    job_id: str
    attempt: int
    _writes: itertools.count[int] = field(default_factory=itertools.count)

    async def append(
        self, event: _Event, record: Mapping[str, str | int | float] | None = None
    ) -> int:
        """Append to the job's log while this is its latest attempt; else raise `Superseded`."""
        write_id = f"{self.attempt}:{next(self._writes)}"
        return await self.log.append(
            self.job_id, event, record, attempt=self.attempt, write_id=write_id
        )
