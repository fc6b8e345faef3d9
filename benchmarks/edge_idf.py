"""What counting IDF over live points only costs a Qdrant Edge search, at the size of the 530
pages of the Python 3.11 docs (15k chunks).

Edge keeps deleted points in its segments, and in its IDF statistics, until they are rebuilt;
edge_store.py therefore asks every lexical search to compute IDF over the points an empty
filter matches (the live ones). This indexes the corpus into Edge the way a worker does, then
searches the 100 questions of retrieval_questions.jsonl three times over, each with and
without that option (the same query vector, the same shard, interleaved), and reports both
times and whether the results differ (with no point deleted, they must not).

    python benchmarks/edge_idf.py
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
from pathlib import Path

import qdrant_edge as edge
from harness import corpus_documents, percentile

from rag_async.config import Settings
from rag_async.providers.retrieval import LexicalEncoder, Retriever, open_store
from rag_async.providers.retrieval.edge_store import LIVE_IDF, EdgeChunkStore
from rag_async.providers.retrieval.store import LEXICAL_VECTOR

QUESTIONS = Path(__file__).with_name("retrieval_questions.jsonl")
LIMIT = 16  # what the worker asks for: top_k (4) x the per-document cap's candidates


async def main() -> None:
    with tempfile.TemporaryDirectory(prefix="rag-idf-") as tmp:
        settings = Settings(_env_file=None, data_dir=Path(tmp), store="edge")
        store = await open_store(settings)
        lexical = LexicalEncoder()
        retriever = await Retriever.open(store, settings, lexical=lexical)
        for title, source, text in corpus_documents("docs"):
            await retriever.index(source, title, source, text)
        assert isinstance(store, EdgeChunkStore)
        lines = QUESTIONS.read_text().splitlines()
        questions = [json.loads(line)["question"] for line in lines if line.strip()]
        times: dict[str, list[float]] = {"live IDF (shipped)": [], "stored IDF": []}
        differ = 0
        for question in questions * 3:
            sparse = lexical.query(question)
            if not sparse.indices:
                continue
            vector = edge.SparseVector(sparse.indices, sparse.values)
            found = []
            for name, params in (("live IDF (shipped)", LIVE_IDF), ("stored IDF", None)):
                request = edge.QueryRequest(
                    limit=LIMIT,
                    query=edge.Query.Nearest(vector, using=LEXICAL_VECTOR),
                    with_payload=True,
                    params=params,
                )
                started = time.perf_counter()
                points = store.shard.query(request)
                times[name].append(time.perf_counter() - started)
                found.append([str(point.id) for point in points])
            differ += found[0] != found[1]
        chunks = await store.count()
        await store.close()
    print(f"  {chunks} chunks, {len(times['stored IDF'])} searches of {LIMIT} each")
    for name, seconds in times.items():
        p50, p99 = (percentile(seconds, q) * 1000 for q in (50, 99))
        print(f"  {name:<20} p50 {p50:.3f} ms, p99 {p99:.3f} ms")
    print(f"  searches whose results differ: {differ}")


if __name__ == "__main__":
    asyncio.run(main())
