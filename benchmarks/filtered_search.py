"""What a metadata filter costs a search in Qdrant Edge (the default store), at the size of the
530 pages of the Python 3.11 docs (15k chunks).

Each page gets attributes the way an upload would give them: its `section` (the folder it is
in: library, reference, tutorial, ...), a `year` (a number derived from its name) and `long`
(a boolean). The 100 questions of retrieval_questions.jsonl are then searched as the worker
searches (`Retriever.search`, top_k 4) with no filter and with each filter below, three times
over, interleaved; the report gives each its wall time per search (p50, p99), its CPU time per
search, and checks that every source found matches its filter.

    python benchmarks/filtered_search.py
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any

from harness import corpus_documents, percentile
from pydantic import TypeAdapter

from rag_async.config import Settings
from rag_async.domain.filters import Filter
from rag_async.providers.retrieval import Retriever, open_store

QUESTIONS = Path(__file__).with_name("retrieval_questions.jsonl")
TOP_K = 4
FILTERS: dict[str, dict[str, Any] | None] = {
    "none": None,
    "eq, a small section": {"type": "eq", "key": "section", "value": "tutorial"},
    "eq, the largest section": {"type": "eq", "key": "section", "value": "library"},
    "gte on a number": {"type": "gte", "key": "year", "value": 2020},
    "and(in, ne bool)": {
        "type": "and",
        "filters": [
            {"type": "in", "key": "section", "value": ["howto", "faq", "tutorial"]},
            {"type": "ne", "key": "long", "value": True},
        ],
    },
}
# Which pages each filter keeps, to check what the store returns.
KEEPS = {
    "none": lambda a: True,
    "eq, a small section": lambda a: a["section"] == "tutorial",
    "eq, the largest section": lambda a: a["section"] == "library",
    "gte on a number": lambda a: a["year"] >= 2020,
    "and(in, ne bool)": lambda a: a["section"] in ("howto", "faq", "tutorial") and not a["long"],
}


def attributes_of(source: str, text: str) -> dict[str, Any]:
    section = source.split("/", 1)[0] if "/" in source else "top"
    return {
        "section": section,
        "year": 2000 + zlib.crc32(source.encode()) % 25,
        "long": len(text) > 20_000,
    }


async def main() -> None:
    adapter: TypeAdapter[Filter] = TypeAdapter(Filter)
    filters = {
        name: None if f is None else adapter.validate_python(f) for name, f in FILTERS.items()
    }
    with tempfile.TemporaryDirectory(prefix="rag-filters-") as tmp:
        settings = Settings(_env_file=None, data_dir=Path(tmp), store="edge")
        store = await open_store(settings)
        retriever = await Retriever.open(store, settings)
        pages: dict[str, dict[str, Any]] = {}
        for title, source, text in corpus_documents("docs"):
            pages[source] = attributes_of(source, text)
            await retriever.index(source, title, source, text, attributes=pages[source])
        chunks = await store.count()
        lines = QUESTIONS.read_text().splitlines()
        questions = [json.loads(line)["question"] for line in lines if line.strip()]
        wall: dict[str, list[float]] = {name: [] for name in filters}
        cpu = dict.fromkeys(filters, 0.0)
        wrong = dict.fromkeys(filters, 0)
        for question in questions * 3:
            for name, where in filters.items():
                started, used = time.perf_counter(), time.process_time()
                found = await retriever.search(question, TOP_K, filters=where)
                cpu[name] += time.process_time() - used
                wall[name].append(time.perf_counter() - started)
                wrong[name] += sum(not KEEPS[name](pages[s.document_id]) for s in found)
        await store.close()
    kept = {name: sum(map(KEEPS[name], pages.values())) for name in filters}
    print(f"  {chunks} chunks of {len(pages)} pages, {len(questions) * 3} searches per filter")
    for name, seconds in wall.items():
        p50, p99 = (percentile(seconds, q) * 1000 for q in (50, 99))
        per = cpu[name] / len(seconds) * 1000
        print(
            f"  {name:<24} keeps {kept[name]:>3} pages: p50 {p50:.2f} ms, p99 {p99:.2f} ms, "
            f"CPU {per:.2f} ms/search, sources not matching: {wrong[name]}"
        )


if __name__ == "__main__":
    asyncio.run(main())
