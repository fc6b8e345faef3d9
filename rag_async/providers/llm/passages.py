"""A retrieved passage read as Markdown blocks, for quoting: prose paragraphs (as list items
and flat text), code blocks (fenced, indented, doctests), API signatures, headings.

A passage is a chunk: an exact slice of its document, so it may start or end inside a
paragraph or a code block; what the chunk's edges may have cut is marked.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# A code example is quoted whole or not at all.
LONGEST_CODE_LINES, LONGEST_CODE = 20, 800

_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_HEADING = re.compile(r"^ {0,3}#{1,6}(\s|$)")
_LIST_MARKER = re.compile(r"^\s{0,3}(?:[-*+]|\d{1,3}[.)])\s+")
_QUOTE_MARKER = re.compile(r"^\s{0,3}>\s?")
# An API entry's signature line, as the HTML of Sphinx documentation gives it:
# "classmethod datetime.now(tz=None)", "json.dump(obj, fp, *, skipkeys=False, ...)".
_SIGNATURE = re.compile(
    r"^(?:(?:abstractmethod|async|await|class|classmethod|coroutine|staticmethod)\s+)*"
    r"[A-Za-z_][\w.]*\(.*\)(?:\s*->\s*\S.*)?$"
)


@dataclass(frozen=True, slots=True)
class Block:
    kind: str  # "prose", "code", "signature", "heading", "other"
    text: str
    # False for a block that the chunk's end may have cut: an open fence, or the last block
    # (the chunker ends a chunk between paragraphs, and a code block may hold blank lines).
    complete: bool = True
    fenced: bool = False


def blocks(text: str) -> list[Block]:
    """A passage's Markdown blocks: prose paragraphs, code (fenced, indented or a doctest),
    API signatures, headings and the rest (tables)."""
    found: list[Block] = []
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.strip():
            i += 1
            continue
        fence = _FENCE.match(line)
        if fence:
            end = next(
                (j for j in range(i + 1, len(lines)) if lines[j].strip().startswith(fence[1])),
                None,
            )
            stop = len(lines) if end is None else end + 1
            inner = lines[i + 1 : stop - 1 if end is not None else stop]
            found.append(Block("code", "\n".join(inner), complete=end is not None, fenced=True))
            i = stop
            continue
        if line.startswith(("    ", "\t")) and not _LIST_MARKER.match(line):
            j = i
            while j < len(lines) and (lines[j].startswith(("    ", "\t")) or not lines[j].strip()):
                j += 1
            body = [row[4:] if row.startswith("    ") else row.lstrip("\t") for row in lines[i:j]]
            found.append(Block("code", "\n".join(body).strip("\n"), complete=j < len(lines)))
            i = j
            continue
        j = i
        while j < len(lines) and lines[j].strip() and not _FENCE.match(lines[j]):
            j += 1
            if j < len(lines) and _HEADING.match(lines[j]):
                break  # a heading ends a paragraph
        paragraph = "\n".join(lines[i:j])
        stripped = paragraph.strip()
        if _HEADING.match(line):
            kind = "heading"
        elif stripped.startswith((">>>", "$ ", "...")):
            kind = "code"
        elif stripped.startswith("|"):
            kind = "other"
        elif "\n" not in stripped and _SIGNATURE.match(stripped):
            kind = "signature"
        else:
            kind = "prose"
        found.append(Block(kind, paragraph, complete=j < len(lines)))
        i = j
    return found


def items(paragraph: str) -> list[str]:
    """A prose paragraph as flat text, one string per list item (markers and block quote
    marks off)."""
    items: list[list[str]] = [[]]
    for line in paragraph.split("\n"):
        line = _QUOTE_MARKER.sub("", line)
        marker = _LIST_MARKER.match(line)
        if marker and items[-1]:
            items.append([])
        items[-1].append(line[marker.end() :] if marker else line)
    return [" ".join(" ".join(item).split()) for item in items if item]


def code_quote(block: Block, sentence: str) -> str | None:
    """The code example after a sentence that introduces it (ending with a colon), fenced,
    if it is short and whole in the passage: closed, or a few lines of indented code that
    end the passage (where the chunker ends one, between paragraphs)."""
    if block.kind != "code" or not sentence.rstrip("*_`").endswith(":"):
        return None
    code = block.text.strip("\n")
    if not block.complete and (block.fenced or code.count("\n") < 2):
        return None
    if not code.strip() or len(code) > LONGEST_CODE or code.count("\n") >= LONGEST_CODE_LINES:
        return None
    longest = max((len(run) for run in re.findall(r"`+", code)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}\n{code}\n{fence}"
