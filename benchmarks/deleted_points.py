"""What a deleted document leaves behind in embedded Qdrant: search time before, with, and
after deleting a 16,384-chunk document (the page tree bomb of tests/support/hostile.py,
indexed here without the limits that now refuse it), and after reopening the store.

Embedded Qdrant marks deleted points as deleted but keeps them in its in-memory arrays: every
search goes on scoring their sparse vectors (and, with a filter, checking their payloads in
Python) until the store is opened again, as a worker's restart does.

    python benchmarks/deleted_points.py               # one collection: searches are unfiltered
    python benchmarks/deleted_points.py --filtered    # a second collection: every search filters
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rag_async.config import Settings
from rag_async.local import demo_corpus
from rag_async.providers.parsing import parse
from rag_async.providers.retrieval import Retriever, open_store
from tests.support.hostile import page_tree_bomb

QUERIES = [
    "How do I create a virtual environment?",
    "What is a list comprehension?",
    "How are exceptions raised?",
    "How do classes inherit?",
    "How do I read a file?",
]
ROUNDS = 5


async def search_ms(retriever: Retriever) -> float:
    """The median time of one search, in ms."""
    samples = []
    for _ in range(ROUNDS):
        for query in QUERIES:
            start = time.perf_counter()
            await retriever.search(query, 4)
            samples.append(time.perf_counter() - start)
    return statistics.median(samples) * 1000


def held(retriever: Retriever) -> int:
    """Points the embedded store keeps in memory, deleted ones included (its private state)."""
    qdrant = retriever._store._client
    collection = qdrant._client.collections[retriever._store._collection]
    return len(collection.payload)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--filtered", action="store_true")
    args = parser.parse_args()
    settings = Settings(
        _env_file=None, data_dir=Path(tempfile.mkdtemp()), demo_corpus=False, max_chunks=10**9
    )

    store = await open_store(settings)
    retriever = await Retriever.open(store, settings)
    chunks = 0
    for path in sorted(Path(demo_corpus.__file__).parent.glob("tutorial-*.md")):
        chunks += await retriever.index(path.stem, path.stem, None, path.read_text())
    if args.filtered:
        await retriever.index("other", "Other", None, "# Other\n\nElsewhere.", collection="other")
    print(f"demo corpus, {chunks} chunks: {await search_ms(retriever):.1f} ms a search")

    bomb = parse("bomb.pdf", page_tree_bomb())
    added = await retriever.index("bomb", "bomb", None, bomb.text, page_starts=bomb.page_starts)
    print(f"+ a document of {added} chunks: {await search_ms(retriever):.1f} ms")
    await retriever.delete("bomb")
    print(
        f"  deleted ({await retriever.count('bomb')} left; {held(retriever)} points held): "
        f"{await search_ms(retriever):.1f} ms"
    )
    await store.close()

    store = await open_store(settings)
    retriever = await Retriever.open(store, settings)
    print(f"reopened ({held(retriever)} points held): {await search_ms(retriever):.1f} ms")
    await store.close()


if __name__ == "__main__":
    asyncio.run(main())
