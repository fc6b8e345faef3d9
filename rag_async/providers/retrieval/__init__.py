"""Retrieval: chunking, lexical and dense encoders, the chunk store (Qdrant Edge or
qdrant-client), and the retriever that jobs call. `edge_store` is imported where it is
opened (backend.py): a machine without a Qdrant Edge build can still run the rest."""

from rag_async.providers.parsing.chunking import Chunk, chunk_text
from rag_async.providers.retrieval.backend import open_store
from rag_async.providers.retrieval.embedders import Embedder, OpenAIEmbedder
from rag_async.providers.retrieval.lexical import LexicalEncoder
from rag_async.providers.retrieval.qdrant_store import QdrantChunkStore, open_qdrant
from rag_async.providers.retrieval.retriever import Retriever
from rag_async.providers.retrieval.store import ChunkStore

__all__ = [
    "Chunk",
    "ChunkStore",
    "Embedder",
    "LexicalEncoder",
    "OpenAIEmbedder",
    "QdrantChunkStore",
    "Retriever",
    "chunk_text",
    "open_qdrant",
    "open_store",
]
