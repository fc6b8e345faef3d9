"""What a question asks for, read from its shape, for the offline answerer: a document by its
title ("What is “Garden notes” about?", "Give me an overview of Bread recipe."), or one
attribute of a subject ("What is the price of the Brewmaster 3000?").

These shapes matter because the words that carry them never appear in the text that answers
them: a document's sentences rarely name the document, and a missing price is visible only as
a word that no passage holds.
"""

from __future__ import annotations

import re

_QUOTES = "\"'“”‘’«»"
# "What is X about?", "What does X say / cover?", "(Give me | Write) an overview / a summary /
# the key points of X", "Summarise X", "Tell me about X".
_ABOUT = (
    re.compile(r"^\W*what(?:'s|\s+is|\s+are)\s+(?P<subject>.+?)\s+about\W*$", re.IGNORECASE),
    re.compile(
        r"^\W*what\s+(?:does|do)\s+(?P<subject>.+?)\s+(?:say|cover|contain|describe)\W*$",
        re.IGNORECASE,
    ),
    re.compile(
        r"^\W*(?:(?:please\s+)?(?:give|show|tell|write)\s+(?:me\s+|us\s+)?)?"
        r"(?:what\s+(?:is|are)\s+)?(?:an?\s+|the\s+)?"
        r"(?:(?:short|brief|quick)\s+)?(?:overview|summary|gist|outline|"
        r"(?:key|main)\s+(?:points|ideas|facts|takeaways))"
        r"\s+(?:of|for|from)\s+(?P<subject>.+?)\W*$",
        re.IGNORECASE,
    ),
    re.compile(
        r"^\W*(?:please\s+)?(?:summari[sz]e|outline|tell\s+me\s+about)\s+(?P<subject>.+?)\W*$",
        re.IGNORECASE,
    ),
)
# "What is the price of X?", "What's the weight of X?": the attribute, then its subject.
_ATTRIBUTE = re.compile(
    r"^\W*what(?:'s|\s+is|\s+are|\s+was|\s+were)\s+the\s+(?P<attribute>\w+(?:\s+\w+)?)"
    r"\s+of\s+(?P<subject>.+?)\W*$",
    re.IGNORECASE,
)


def document_asked_about(question: str) -> str | None:
    """The name a question asks about as a whole ("Garden notes"), its quotes off; None for
    any other question. Whether a document bears that name is for the caller to see."""
    for shape in _ABOUT:
        found = shape.match(question.strip())
        if found:
            subject = _unquoted(found["subject"])
            if subject:
                return subject
    return None


def attribute_asked(question: str) -> tuple[str, str] | None:
    """`(attribute, subject)` of "What is the price of the Brewmaster 3000?"."""
    found = _ATTRIBUTE.match(question.strip())
    if found is None:
        return None
    return found["attribute"], _unquoted(found["subject"])


def _unquoted(text: str) -> str:
    text = text.strip().rstrip("?.!").strip()
    if len(text) >= 2 and text[0] in _QUOTES and text[-1] in _QUOTES:
        text = text[1:-1]
    return text.strip(_QUOTES + " ").rstrip("…").strip()
