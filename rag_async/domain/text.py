"""Text that others wrote (a document, its uploader, the LLM), made safe for where it goes.

A terminal acts on the control characters in what it prints: ESC, BEL, CSI and the rest
retitle the window (OSC 0), write the clipboard (OSC 52), plant hyperlinks (OSC 8) and clear
the screen; a page or another client has no use for them. Each reader gets its rule:

- `without_controls` (the server, on an answer as it streams): no C0 or C1 control character
  but newline and tab. Per character, so a sequence a stream splits across two batches cannot
  be reassembled: with its ESC gone, the rest is harmless text (and the same whatever the split).
- `clean` (the server, on whole strings: passages, titles, locations): whole escape sequences
  go first, so none of their residue is shown, then `without_controls`.
- `printable` (the CLI, before printing anything others wrote): `clean`, and also the
  characters that make a terminal show other than what is there: bidi overrides and isolates
  (text that reads backwards) and zero-width characters (words that look alike but are not).
- `fence_view` and `normal_form` (the prompt): what a model reads in a passage, to find what
  looks like the prompt's fences: NFKC (fullwidth and compatibility forms to plain letters),
  format characters (zero-width, bidi, soft hyphens) gone, and look-alike letters and brackets
  folded to ASCII.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from functools import lru_cache
from typing import overload

# Whole escape sequences, so that no residue of them is shown.
_SEQUENCE = re.compile(
    r"\x1b\][^\x07\x1b\x9c\n]*(?:\x07|\x1b\\|\x9c)?"  # OSC (title, hyperlink, clipboard)
    r"|\x1b[PX^_][^\x1b\x9c]*(?:\x1b\\|\x9c)?"  # DCS, SOS, PM, APC strings
    r"|(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]?"  # CSI (cursor, erase, colours)
    r"|\x1b[ -/]*[0-~]?"  # any other escape
)
_KEPT = "\n\t"
_CONTROLS = {
    code: None for code in [*range(0x00, 0x20), *range(0x7F, 0xA0)] if chr(code) not in _KEPT
}
# Bidi embeddings, overrides and isolates, and the marks that steer them.
_BIDI = [*range(0x202A, 0x202F), *range(0x2066, 0x206A), 0x200E, 0x200F, 0x061C]
_ZERO_WIDTH = [0x200B, 0x200C, 0x200D, 0x2060, 0xFEFF]
_UNSEEN = _CONTROLS | dict.fromkeys([*_BIDI, *_ZERO_WIDTH])

# Characters a reader (or a model) takes for the ASCII of a fence, `</source>`, that NFKC leaves
# as they are: Unicode's confusables (TR39) for those characters, the ones in common fonts.
_LOOKALIKES = {
    "<": "\u2039\u00ab\u27e8\u27ea\u3008\u276e\u276c\u1438\u02c2\u29fc\u2991\u25c1\u2329",
    "/": "\u2215\u2044\u29f8\u2571\u27cb\u30ce\u2cc6\u0338",
    "s": "\u0455\u0405\ua731\u01bd\u0282\ua7b6",
    "o": "\u043e\u041e\u03bf\u039f\u1d0f\u0585\u0ce6\u0966\u09e6\u0030\u2c9f\u1040",
    "u": "\u03c5\u057d\u1d1c\u028b\uab4e\u0446",
    "r": "\u0433\u1d26\u0280\u2c85\uab47",
    "c": "\u0441\u0421\u03f2\u03f9\u1d04\u2ca5\u217d",
    "e": "\u0435\u0415\u04bd\u212e\u03b5\u0395\u0454\uab32",
}
_FOLD = {ord(char): ascii_ for ascii_, chars in _LOOKALIKES.items() for char in chars}


def without_controls(text: str) -> str:
    """`text` without C0 and C1 control characters, newline and tab kept."""
    return text.translate(_CONTROLS)


@overload
def clean(text: str) -> str: ...
@overload
def clean(text: None) -> None: ...
def clean(text: str | None) -> str | None:
    """`text` without escape sequences, then without control characters."""
    return None if text is None else _SEQUENCE.sub("", text).translate(_CONTROLS)


def printable(text: str) -> str:
    """`clean` text without bidi controls and zero-width characters: what a terminal shows
    is then what the text says."""
    return _SEQUENCE.sub("", text).translate(_UNSEEN)


def normal_form(text: str) -> str:
    """`text` NFKC-normalised, its format characters (zero-width, bidi, soft hyphens, tags)
    gone: one line of `fence_view` for text that is then escaped as a whole."""
    kept = "".join(char for char in text if unicodedata.category(char) != "Cf")
    return unicodedata.normalize("NFKC", kept)


def fence_view(text: str) -> tuple[str, Sequence[int]]:
    """What `text` reads as, character by character, to a model looking for a fence: each
    character NFKC-normalised, invisible ones (format characters: zero-width, bidi, soft
    hyphens, tags) dropped, look-alikes folded to ASCII, lowercase. Also, for each character
    of that view, the index in `text` of the character it came from. ASCII text is read
    whole (nothing in it to normalise, one character for one), sparing the walk."""
    if text.isascii():
        return text.translate(_FOLD).lower(), range(len(text))
    view: list[str] = []
    origin: list[int] = []
    for index, char in enumerate(text):
        for part in unicodedata.normalize("NFKC", char):
            if unicodedata.category(part) == "Cf":
                continue
            folded = part.translate(_FOLD).lower()
            view.append(folded)
            origin.extend([index] * len(folded))
    return "".join(view), origin


def may_open_fence(text: str) -> bool:
    """Whether any character of `text` reads as `<` (`fence_view`'s reading): a text without
    one holds no fence, and needs no walk character by character. Each distinct character is
    judged once."""
    return any(_reads_as_open(char) for char in set(text))


@lru_cache(maxsize=4096)
def _reads_as_open(char: str) -> bool:
    return "<" in unicodedata.normalize("NFKC", char).translate(_FOLD)


def utf8_problem(text: str) -> str | None:
    """Why `text` cannot be encoded as UTF-8, or None when it can."""
    try:
        text.encode()
    except UnicodeEncodeError as error:
        return (
            f"cannot be encoded as UTF-8: a lone surrogate {text[error.start]!a} at character "
            f"{error.start} (a \\ud800-\\udfff escape must be one half of a pair)"
        )
    return None
