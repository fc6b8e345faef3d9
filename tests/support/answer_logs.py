"""The event logs that every reader of "the answer so far" is tested against: /job-status, the
Python client and the web page (the rule: rag_async/transcript.py, web/transcript.js)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "answer_logs.json"


@dataclass(frozen=True)
class AnswerLog:
    name: str
    events: list[dict[str, Any]]  # each as the worker writes it: the event's wire JSON
    answer: str  # the answer so far after the last event
    discarded: list[str]  # the text of each dead attempt that had any, in order


ANSWER_LOGS = [AnswerLog(**case) for case in json.loads(FIXTURE.read_text())]
