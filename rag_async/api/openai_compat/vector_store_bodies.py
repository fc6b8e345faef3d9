"""The request bodies of /v1/vector_stores and its files, in OpenAI's shape and within its
bounds (16 metadata pairs and attributes, names of 64 characters, values of 512), and the one
rule for what a `chunking_strategy` becomes here."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StringConstraints,
    model_validator,
)

from rag_async.config import Settings
from rag_async.domain.errors import Unsupported

_Name = Annotated[str, StringConstraints(min_length=1, max_length=64)]
_Value = Annotated[str, StringConstraints(max_length=512)]
Metadata = Annotated[dict[_Name, _Value], Field(max_length=16)]
# Booleans first: a JSON `true` stays a boolean, never becomes 1.0.
AttributeValues = Annotated[
    dict[_Name, StrictBool | StrictFloat | StrictInt | _Value], Field(max_length=16)
]
FileId = Annotated[str, StringConstraints(min_length=1, max_length=64)]

# A chunk's characters are capped too (RAG_CHUNK_MAX_CHARS): a size in tokens whose chunks
# would need more than this many characters a token is cut shorter than asked, so refused.
CHARS_PER_TOKEN = 4


# What "Try it out" in /docs shows: an id of OpenAI's shape (upload a file for a real one).
_FILE = "file-0123456789abcdef01234567"


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StaticSizes(_Body):
    max_chunk_size_tokens: int = Field(strict=True, ge=100, le=4096)
    chunk_overlap_tokens: int = Field(strict=True, ge=0)

    @model_validator(mode="after")
    def _overlap_within_half(self) -> StaticSizes:
        if self.chunk_overlap_tokens > self.max_chunk_size_tokens // 2:
            raise ValueError("chunk_overlap_tokens may be at most half of max_chunk_size_tokens")
        return self


class AutoChunking(_Body):
    type: Literal["auto"]


class StaticChunking(_Body):
    type: Literal["static"]
    static: StaticSizes


ChunkingStrategy = Annotated[AutoChunking | StaticChunking, Field(discriminator="type")]


class VectorStoreCreate(_Body):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"name": "Handbook", "metadata": {"team": "support"}}]},
    )

    name: Annotated[str, StringConstraints(max_length=256)] | None = None
    file_ids: Annotated[list[FileId], Field(max_length=500)] = []
    metadata: Metadata | None = None
    chunking_strategy: ChunkingStrategy | None = None
    expires_after: dict[str, Any] | None = None


class VectorStoreUpdate(_Body):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"name": "Handbook 2"}]}
    )

    name: Annotated[str, StringConstraints(max_length=256)] | None = None
    metadata: Metadata | None = None
    expires_after: dict[str, Any] | None = None


class VectorStoreFileCreate(_Body):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"file_id": _FILE, "attributes": {"topic": "tea"}}]},
    )

    file_id: FileId
    attributes: AttributeValues | None = None
    chunking_strategy: ChunkingStrategy | None = None


class VectorStoreFileUpdate(_Body):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"attributes": {"topic": "tea"}}]}
    )

    attributes: AttributeValues | None


class BatchFile(_Body):
    file_id: FileId
    attributes: AttributeValues | None = None
    chunking_strategy: ChunkingStrategy | None = None


class FileBatchCreate(_Body):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"file_ids": [_FILE]}]}
    )

    """`file_ids` sharing `attributes` and `chunking_strategy`, or `files` each with its own."""

    file_ids: Annotated[list[FileId], Field(max_length=500)] | None = None
    files: Annotated[list[BatchFile], Field(max_length=500)] | None = None
    attributes: AttributeValues | None = None
    chunking_strategy: ChunkingStrategy | None = None

    @model_validator(mode="after")
    def _one_list(self) -> FileBatchCreate:
        if (self.file_ids is None) == (self.files is None):
            raise ValueError("give either file_ids or files, not both")
        if not (self.file_ids or self.files):
            raise ValueError("the batch names no file")
        return self

    def each(self) -> list[BatchFile]:
        if self.files is not None:
            return self.files
        return [
            BatchFile(
                file_id=file_id,
                attributes=self.attributes,
                chunking_strategy=self.chunking_strategy,
            )
            for file_id in self.file_ids or []
        ]


def refuse_expiry(expires_after: dict[str, Any] | None) -> None:
    """Vector stores here last until deleted: an expiry would not be honoured."""
    if expires_after is not None:
        raise Unsupported(
            "expires_after is not supported: vector stores here last until deleted",
            code="expiry_unsupported",
        )


def chunk_sizes(
    settings: Settings, strategy: AutoChunking | StaticChunking | None
) -> tuple[int, int, bool]:
    """The chunk size and overlap in tokens that a strategy gets here, and whether they are
    the document's own (static) or the service's (auto: RAG_CHUNK_TOKENS and
    RAG_CHUNK_OVERLAP). 400 for a static size that the character cap would cut short."""
    if not isinstance(strategy, StaticChunking):
        return settings.chunk_tokens, settings.chunk_overlap, False
    sizes = strategy.static
    most = settings.chunk_max_chars // CHARS_PER_TOKEN
    if sizes.max_chunk_size_tokens > most:
        raise Unsupported(
            f"max_chunk_size_tokens {sizes.max_chunk_size_tokens} cannot be honoured: chunks "
            f"here hold at most {settings.chunk_max_chars} characters (RAG_CHUNK_MAX_CHARS), "
            f"so at most {most} tokens",
            code="chunking_unsupported",
        )
    return sizes.max_chunk_size_tokens, sizes.chunk_overlap_tokens, True
