"""The question file of `rag-async eval`: JSON Lines, one question a line.

    {"question": "How long does green tea brew?", "expected": "tea.md"}
    {"question": "Who descales the kettle?", "expected": ["kettle.md", "Kettle manual"]}
    {"question": "...", "expected": "...", "collection": "manuals"}

`expected` names the document (or any of several documents) that answers the question: its
source file name, its document id or its title (scoring.py). `pages` is read as `expected`,
so benchmarks/retrieval_questions.jsonl is such a file; other fields are ignored. Blank lines
are skipped. Whatever is wrong with a line is told with its number, never as a traceback.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rag_async.domain.schemas import COLLECTION_PATTERN

# A line is a question of at most a few thousand characters and a few names: anything far
# longer is not a question file (a binary, a data dump), and is refused before it is parsed.
MAX_LINE_BYTES = 100_000
MAX_QUESTIONS = 100_000
_COLLECTION = re.compile(COLLECTION_PATTERN)


class QuestionFileError(Exception):
    """What is wrong with the file, naming the line."""


@dataclass(frozen=True, slots=True)
class EvalQuestion:
    line: int  # 1-based, as an editor counts
    text: str
    expected: tuple[str, ...]  # any of them answers it
    collection: str | None = None


def read_questions(path: Path) -> list[EvalQuestion]:
    """Every question of the file at `path`; `QuestionFileError` for the first bad line (or
    a file that cannot be read, or holds none)."""
    questions: list[EvalQuestion] = []
    try:
        with path.open("rb") as file:
            number = 0
            while raw := file.readline(MAX_LINE_BYTES + 1):
                number += 1
                if len(raw) > MAX_LINE_BYTES:
                    raise QuestionFileError(
                        f"{path}: line {number} is longer than {MAX_LINE_BYTES} bytes: one "
                        "line holds one question as a JSON object"
                    )
                if (question := _question(path, number, raw)) is not None:
                    questions.append(question)
                if len(questions) > MAX_QUESTIONS:
                    raise QuestionFileError(f"{path}: more than {MAX_QUESTIONS} questions")
    except OSError as error:
        raise QuestionFileError(f"{path}: cannot read it: {error.strerror or error}") from None
    if not questions:
        raise QuestionFileError(f"{path}: no questions in it ({_SHAPE})")
    return questions


_SHAPE = 'each line is {"question": "...", "expected": "a source, document id or title"}'


def _question(path: Path, number: int, raw: bytes) -> EvalQuestion | None:
    where = f"{path}: line {number}"
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise QuestionFileError(
            f"{where} is not UTF-8 text (byte {error.start + 1} of the line)"
        ) from None
    text = text.strip().removeprefix("\ufeff")  # a byte order mark some editors write
    if not text:
        return None
    try:
        row = json.loads(text)
    except (ValueError, RecursionError) as error:
        raise QuestionFileError(f"{where} is not JSON ({_reason(error)}); {_SHAPE}") from None
    if not isinstance(row, dict):
        raise QuestionFileError(f"{where} is not a JSON object; {_SHAPE}")
    return EvalQuestion(
        line=number,
        text=_text(where, row.get("question")),
        expected=_expected(where, row.get("expected", row.get("pages"))),
        collection=_collection(where, row.get("collection")),
    )


def _reason(error: Exception) -> str:
    if isinstance(error, json.JSONDecodeError):
        return f"{error.msg} at column {error.colno}"
    return "nested too deep" if isinstance(error, RecursionError) else str(error)


def _text(where: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise QuestionFileError(f'{where}: "question" must be a non-empty string')
    try:
        value.encode()
    except UnicodeEncodeError:  # a lone surrogate escape, "\ud800": no UTF-8 holds it
        raise QuestionFileError(f'{where}: "question" holds text UTF-8 cannot encode') from None
    return value.strip()


def _expected(where: str, value: Any) -> tuple[str, ...]:
    names = [value] if isinstance(value, str) else value
    if (
        not isinstance(names, list)
        or not names
        or not all(isinstance(name, str) and name.strip() for name in names)
    ):
        raise QuestionFileError(
            f'{where}: "expected" must name the document that answers the question (its '
            "source file name, document id or title), or be a list of such names"
        )
    return tuple(name.strip() for name in names)


def _collection(where: str, value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not _COLLECTION.fullmatch(value):
        raise QuestionFileError(
            f'{where}: "collection" must be a collection name (1 to 64 letters, digits, '
            "'.', '_' or '-')"
        )
    return value
