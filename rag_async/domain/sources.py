"""A retrieved passage as an answer cites it: what retrieval returns, the prompt numbers, the
`sources` event carries and the job record keeps."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from rag_async.domain.text import clean


class Source(BaseModel):
    """One retrieved chunk, numbered as the answer cites it ([1], [2], ...)."""

    model_config = ConfigDict(frozen=True)

    n: int
    document_id: str
    title: str
    chunk: int
    score: float
    text: str
    source: str | None = None
    heading: str | None = Field(
        default=None, description='Where in the document: "Title › Section › Subsection".'
    )
    page: int | None = Field(default=None, description="The page it starts on (PDF).")
    collection: str | None = None

    # What a document and its uploader wrote reaches the page, the CLI and other clients:
    # without terminal control characters (domain/text.py).
    _clean = field_validator("title", "text", "source", "heading")(clean)
