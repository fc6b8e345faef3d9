"""Retrieval: chunking, lexical and dense encoders, the Qdrant store, and the retriever that
jobs call."""

from rag_async.retrieval.chunking import Chunk, chunk_text
from rag_async.retrieval.embedders import Embedder, OpenAIEmbedder
from rag_async.retrieval.lexical import LexicalEncoder
from rag_async.retrieval.retriever import Retriever
from rag_async.retrieval.store import ChunkStore, open_qdrant

__all__ = [
    "Chunk",
    "ChunkStore",
    "Embedder",
    "LexicalEncoder",
    "OpenAIEmbedder",
    "Retriever",
    "chunk_text",
    "open_qdrant",
]
