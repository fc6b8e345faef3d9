"""The bundled demo corpus: six pages of the Python 3.11 tutorial (PSF License; see
LICENSE.md), so that a fresh install answers questions with nothing configured."""

from __future__ import annotations

from importlib import resources

# Answered from "Errors and Exceptions › Handling Exceptions" by lexical retrieval alone.
DEMO_QUESTION = "How do I handle exceptions in Python?"

_SUFFIXES = (".md", ".txt")
_NOT_DOCUMENTS = frozenset({"LICENSE.md"})


def demo_documents() -> list[tuple[str, str, str]]:
    """`(title, source name, text)` of each document, in file-name order. The title is the
    document's first Markdown heading; the source name is its file name."""
    documents = []
    files = sorted(resources.files(__name__).iterdir(), key=lambda entry: entry.name)
    for entry in files:
        if not entry.name.endswith(_SUFFIXES) or entry.name in _NOT_DOCUMENTS:
            continue
        text = entry.read_text(encoding="utf-8")
        documents.append((_title(text, default=entry.name), entry.name, text))
    return documents


def _title(text: str, *, default: str) -> str:
    for line in text.splitlines():
        if line.startswith("# "):
            return line[2:].strip()
    return default
