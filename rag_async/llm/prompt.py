"""The grounded prompt: numbered sources, and an instruction to cite them and stay inside them."""

from __future__ import annotations

from collections.abc import Sequence

from ..sources import Source

SYSTEM_PROMPT = (
    "You answer questions using only the numbered sources given. Cite the sources you use "
    "with their numbers in square brackets, like [1] or [2][3]. If the sources do not contain "
    "the answer, say that you could not find it in the documents. Be concise."
)


def build_messages(question: str, sources: Sequence[Source]) -> list[dict[str, str]]:
    if sources:
        context = "\n\n".join(f"[{s.n}] {s.title}\n{s.text}" for s in sources)
    else:
        context = "(no sources were found)"
    user = f"Sources:\n\n{context}\n\nQuestion: {question}"
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]
