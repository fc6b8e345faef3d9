"""Hostile documents, small in bytes and huge once parsed. `python -m tests.support.hostile`
writes the PDF that tests/fixtures ships; the others are made by the tests (a few lines here
rather than hundreds of kilobytes in the repository).
"""

from __future__ import annotations

import zlib
from pathlib import Path

PAGE_TREE_BOMB = Path(__file__).resolve().parent.parent / "fixtures" / "page_tree_bomb.pdf"

_PAGE_TEXT = b"The same page once more, with words enough to make a chunk of its own. " * 3


def page_tree_bomb(levels: int = 14, fanout: int = 2) -> bytes:
    """A PDF whose page tree names its next node `fanout` times at each of `levels` levels,
    down to one page: fanout ** levels pages (16,384) from under 2 KB."""
    first_page = 2 + levels
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>"]
    for level in range(levels):
        kid = 3 + level if level < levels - 1 else first_page
        kids = b" ".join([b"%d 0 R" % kid] * fanout)
        count = fanout ** (levels - level)
        objects.append(b"<< /Type /Pages /Kids [%s] /Count %d >>" % (kids, count))
    stream = b"BT /F1 12 Tf 72 720 Td (" + _PAGE_TEXT + b") Tj ET"
    objects += [
        b"<< /Type /Page /Parent %d 0 R /MediaBox [0 0 612 792] "
        b"/Resources << /Font << /F1 %d 0 R >> >> /Contents %d 0 R >>"
        % (first_page - 1, first_page + 1, first_page + 2),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        b"<< /Length %d >>\nstream\n%s\nendstream" % (len(stream), stream),
    ]
    return assemble_pdf(objects)


def deflate_bomb(size: int = 70_000_000) -> bytes:
    """A one-page PDF whose content stream inflates to `size` bytes (mostly spaces), from
    about a thousandth of that: under pypdf's own cap of 75 MB per stream."""
    stream = zlib.compress(b"BT /F1 12 Tf 72 720 Td (Hello) Tj ET " + b" " * size, 9)
    return assemble_pdf(
        [
            b"<< /Type /Catalog /Pages 2 0 R >>",
            b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
            b"/Resources << /Font << /F1 4 0 R >> >> /Contents 5 0 R >>",
            b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
            b"<< /Length %d /Filter /FlateDecode >>\nstream\n%s\nendstream" % (len(stream), stream),
        ]
    )


def nested_html(depth: int = 30_000) -> bytes:
    """A page of `depth` nested `<div>`s around one paragraph."""
    body = "<div>" * depth + "<p>At the very bottom.</p>" + "</div>" * depth
    return f"<!doctype html><html><body>{body}</body></html>".encode()


def assemble_pdf(objects: list[bytes], *, info: int | None = None) -> bytes:
    """A PDF file of `objects` (numbered from 1, the first the catalog), with its cross-reference
    table; `info` is the number of a document-information object."""
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    info_entry = b" /Info %d 0 R" % info if info is not None else b""
    out += b"trailer\n<< /Size %d /Root 1 0 R%s >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        info_entry,
        xref,
    )
    return bytes(out)


if __name__ == "__main__":
    PAGE_TREE_BOMB.write_bytes(page_tree_bomb())
    print(f"wrote {PAGE_TREE_BOMB} ({PAGE_TREE_BOMB.stat().st_size} bytes)")
