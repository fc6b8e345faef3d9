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

from rag_async.domain.events import DoneEvent, Event, StatusEvent, TokenEvent


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

    def apply(self, event: Event) -> bool:
        """Take one event; True if it dropped text of a dead attempt."""
        if isinstance(event, StatusEvent):
            if event.attempt <= self.attempt:
                return False
            self.attempt = event.attempt
            text = self.text
            self._parts.clear()
            if text:
                self.discarded.append(text)
            return bool(text)
        if isinstance(event, TokenEvent):
            self._parts.append(event.text)
        elif isinstance(event, DoneEvent):
            self._parts[:] = [event.answer]
        return False
