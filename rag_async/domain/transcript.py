"""The answer so far: the one rule by which a job's events become the text to show.

Text belongs to the attempt that wrote it. The answer so far is the text of the `token` events
since the `status` event that announced the highest attempt seen so far; a `status` of the
same or a lower attempt (a stage change, or a `requeued` status repeating the attempt) changes
nothing. A `done` event's `answer` replaces the text: it is authoritative.

`/job-status` folds a job's logged events with it, and the Python client's `Answer` folds the
events it follows; the web page has the same rule in web/transcript.js, and
tests/fixtures/answer_logs.json holds the event logs all three are tested against.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class Transcript:
    """The answer so far, folded event by event with `apply`.

    `discarded` keeps the text of each dead attempt that had any, in order.
    """

    def __init__(self) -> None:
        self.attempt = 0
        self.discarded: list[str] = []
        self._parts: list[str] = []

    @property
    def text(self) -> str:
        return "".join(self._parts)

    def apply(self, event_type: str, data: Mapping[str, Any]) -> bool:
        """Take one event (its type and its JSON); True if it dropped text of a dead attempt."""
        if event_type == "status":
            attempt = int(data.get("attempt") or 0)
            if attempt <= self.attempt:
                return False
            self.attempt = attempt
            text = self.text
            self._parts.clear()
            if text:
                self.discarded.append(text)
            return bool(text)
        if event_type == "token":
            self._parts.append(str(data.get("text", "")))
        elif event_type == "done" and "answer" in data:
            self._parts[:] = [str(data["answer"])]
        return False
