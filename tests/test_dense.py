"""The offline dense model and hybrid retrieval by default: the shipped model loads with no
network, bridges a vocabulary gap that BM25 cannot, and is off (lexical only) when asked or
when a store predates it."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from rag_async.config import Settings
from rag_async.domain.errors import ConfigurationError
from rag_async.providers.retrieval import LexicalEncoder, Retriever, open_store
from rag_async.providers.retrieval.static_embedder import DIMENSION, StaticEmbedder
from tests.conftest import ingest, running_stack

# The vocabulary-gap questions below share no word with the passage that answers them.
PASSAGES = {
    "tea": ("Tea", "Steep black tea for four minutes in water that has just boiled."),
    "car": ("Car care", "Change the engine oil of your car every ten thousand kilometres."),
    "interrupt": (
        "Interrupting",
        "Press Control-C to halt a running program: Python raises KeyboardInterrupt.",
    ),
    "files": ("Files", "Use open() to read a file from disk and iterate over its lines."),
}


def _settings(data_dir: Path, **values: Any) -> Settings:
    return Settings(_env_file=None, data_dir=data_dir, qdrant_url=None, **values)


async def _index(retriever: Retriever) -> None:
    for document_id, (title, text) in PASSAGES.items():
        await retriever.index(document_id, title, None, text)


def test_the_shipped_model_loads_and_encodes_with_no_network(tmp_path: Path) -> None:
    # A fresh home (no download cache) and every request sent to a closed port: a model that
    # is not in the package, or a loader that reaches for the network, fails here.
    code = (
        "import asyncio\n"
        "from rag_async.providers.retrieval.static_embedder import StaticEmbedder\n"
        "vectors = asyncio.run(StaticEmbedder.load().embed(['car', 'automobile']))\n"
        "print(len(vectors), len(vectors[0]))\n"
    )
    closed = "http://127.0.0.1:9"
    env = os.environ | {"HOME": str(tmp_path), "HTTPS_PROXY": closed, "HTTP_PROXY": closed}
    env |= {"HF_HUB_OFFLINE": "1", "NO_PROXY": "", "XDG_CACHE_HOME": str(tmp_path / "xdg")}
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["2", str(DIMENSION)]
    assert not (tmp_path / ".cache").exists() and not (tmp_path / "xdg").exists()


def test_without_the_package_retrieval_is_lexical() -> None:
    # `None` in sys.modules is how Python blocks an import: as if wordllama were not installed.
    code = (
        "import sys\n"
        "sys.modules['wordllama'] = None\n"
        "from rag_async.providers.retrieval.static_embedder import load_default\n"
        "print(load_default())\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.splitlines()[-1] == "None"
    assert "rag-async[dense]" in result.stdout + result.stderr


def test_vectors_are_the_packages_own() -> None:
    """Our pooling (no padding) gives the vectors WordLlama's own `embed` gives."""
    import numpy as np
    import wordllama

    texts = ["How do I stop my script?", "Press Control-C. " * 200, "x"]
    folder = Path(wordllama.__file__).parent
    model = wordllama.WordLlama.load(dim=DIMENSION, cache_dir=folder, disable_download=True)
    expected = model.embed(texts, norm=True)
    assert np.allclose(StaticEmbedder.load().encode(texts), expected, atol=1e-5)


async def test_vectors_are_unit_length_and_near_for_synonyms() -> None:
    embedder = StaticEmbedder.load()
    car, automobile, tea = await embedder.embed(["car", "automobile", "green tea"])
    assert all(math.isclose(sum(x * x for x in v), 1.0, rel_tol=1e-4) for v in (car, tea))

    def cosine(a: list[float], b: list[float]) -> float:
        return sum(x * y for x, y in zip(a, b, strict=True))

    assert cosine(car, automobile) > cosine(car, tea) + 0.2
    assert await embedder.embed([]) == []


@pytest.mark.parametrize(
    ("question", "answer"),
    [("How do I stop my script?", "interrupt"), ("vehicle maintenance", "car")],
)
async def test_hybrid_finds_by_meaning_what_bm25_misses(
    tmp_path: Path, question: str, answer: str
) -> None:
    settings = _settings(tmp_path)
    store = await open_store(settings)
    try:
        retriever = await Retriever.open(store, settings, embedder=StaticEmbedder.load())
        assert retriever.name.startswith("hybrid: lexical-bm25 + wordllama")
        await _index(retriever)
        assert (await retriever.search(question, 2))[0].document_id == answer
    finally:
        await store.close()
    # The same question, lexically: no passage holds any of its terms.
    store = await open_store(settings)
    try:
        retriever = await Retriever.open(store, settings)
        assert answer not in [s.document_id for s in await retriever.search(question, 2)]
    finally:
        await store.close()


async def test_a_store_without_dense_vectors_stays_lexical(tmp_path: Path) -> None:
    """A store written before hybrid was the default keeps answering (lexically) when the
    offline model is the default, and refuses an embedder the user configured."""
    settings = _settings(tmp_path)
    store = await open_store(settings)
    try:
        await _index(await Retriever.open(store, settings))
    finally:
        await store.close()
    store = await open_store(settings)
    try:
        retriever = await Retriever.open(
            store, settings, embedder=StaticEmbedder.load(), dense_optional=True
        )
        assert retriever.name == LexicalEncoder().name and not retriever.embeds_queries
        assert (await retriever.search("black tea minutes", 1))[0].document_id == "tea"
    finally:
        await store.close()
    store = await open_store(settings)
    try:
        with pytest.raises(ConfigurationError, match="RAG_COLLECTION"):
            await Retriever.open(store, settings, embedder=StaticEmbedder.load())
    finally:
        await store.close()


async def test_a_hybrid_store_opens_lexically_when_dense_is_turned_off(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    store = await open_store(settings)
    try:
        await _index(await Retriever.open(store, settings, embedder=StaticEmbedder.load()))
    finally:
        await store.close()
    store = await open_store(settings)
    try:
        retriever = await Retriever.open(store, settings)
        assert (await retriever.search("black tea minutes", 1))[0].document_id == "tea"
    finally:
        await store.close()


async def test_score_threshold_drops_weak_results(tmp_path: Path) -> None:
    settings = _settings(tmp_path, score_threshold=0.5)
    store = await open_store(settings)
    try:
        retriever = await Retriever.open(store, settings, embedder=StaticEmbedder.load())
        await _index(retriever)
        # A fused score is the sum over the lists of 1/(rank + 1) (k = 2): 0.5 is reached
        # by a chunk first in one list, or well placed in both, not by the tail.
        found = await retriever.search("black tea", 4)
        assert found and found[0].document_id == "tea"
        assert all(source.score >= 0.5 for source in found) and len(found) < len(PASSAGES)
    finally:
        await store.close()


@pytest.mark.parametrize(("offline_embedder", "kind"), [("static", "hybrid"), ("off", "lexical")])
async def test_the_worker_default_is_hybrid_and_can_be_turned_off(
    valkey: Any, tmp_path: Path, offline_embedder: str, kind: str
) -> None:
    from tests.conftest import make_settings

    settings = make_settings(valkey, tmp_path, offline_embedder=offline_embedder)
    async with running_stack(settings) as stack:
        await ingest(stack)
        job_id = (await stack.client.ask("How long should black tea brew?"))["job_id"]
        events = [event async for event in stack.client.follow(job_id)]
        done = events[-1]
        assert done.type == "done"
        assert done.data["providers"]["retrieval"].startswith(kind)
        stages = [e.data["stage"] for e in events if e.type == "status"]
        # Encoding the question is a stage of its own, timed, when there is a dense model.
        assert ("embedding" in stages) == (kind == "hybrid")
        assert ("embedding" in done.data["timings"]) == (kind == "hybrid")
        assert "four minutes" in done.data["answer"]


def _rrf(rank: int, weight: float, k: int = 2) -> float:
    """Qdrant's weighted reciprocal rank fusion: the share of a list's `rank`th (from 0)."""
    return 1 / ((rank + 1) / weight + k - 1)


@pytest.mark.parametrize("store", ["edge", "local"])
@pytest.mark.parametrize(("lexical_weight", "dense_weight"), [(3.0, 1.0), (1.0, 3.0)])
async def test_fusion_weights_reach_the_engine(
    tmp_path: Path, store: str, lexical_weight: float, dense_weight: float
) -> None:
    # "water" is a word of the tea passage, "engine" of the car's: BM25 ranks tea before
    # car, the dense model car before tea, and equal weights tie them. The weights decide,
    # the way Qdrant's weighted RRF scores (each backend alike).
    question = "water for the engine"
    settings = _settings(tmp_path, store=store)
    chunks = await open_store(settings)
    try:
        retriever = await Retriever.open(chunks, settings, per_document=None)
        await _index(retriever)
        assert [s.document_id for s in await retriever.search(question, 4)] == ["tea", "car"]
    finally:
        await chunks.close()
    embedder = StaticEmbedder.load()
    query, tea, car = embedder.encode(
        [question, *(f"{t}\n\n{x}" for t, x in (PASSAGES["tea"], PASSAGES["car"]))]
    )
    assert sum(q * c for q, c in zip(query, car, strict=True)) > sum(
        q * t for q, t in zip(query, tea, strict=True)
    )
    tea_score = _rrf(0, lexical_weight) + _rrf(1, dense_weight)
    car_score = _rrf(1, lexical_weight) + _rrf(0, dense_weight)
    expected = ["tea", "car"] if tea_score > car_score else ["car", "tea"]

    settings = _settings(
        tmp_path / "weighted",
        store=store,
        rrf_lexical_weight=lexical_weight,
        rrf_dense_weight=dense_weight,
    )
    chunks = await open_store(settings)
    try:
        retriever = await Retriever.open(chunks, settings, embedder=embedder, per_document=None)
        await _index(retriever)
        found = await retriever.search(question, 2)
        assert [source.document_id for source in found] == expected
    finally:
        await chunks.close()
