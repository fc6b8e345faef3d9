"""Ingestion throughput, worker memory and search time at size: the Python 3.11 HTML
documentation (530 pages, as Debian's `python3.11-doc` installs it) through the real service
path, for each embedded store side by side (Qdrant Edge, the default, and qdrant-client's
local mode, the store before it).

Valkey, the API and one worker run as processes (harness.py); the pages are uploaded and
followed to the end the way `rag-async ingest` does it (one upload per file, 16 in flight),
offline: hybrid retrieval with the static dense model (`--offline-embedder off`: lexical),
embedded Qdrant. Reported: pages/s and chunks/s from the first
upload to the last job's end, the worker's RSS after startup and its peak (VmHWM); the
retrieval stage of the 100 questions of retrieval_questions.jsonl asked one at a time, as
the worker times it (the job's `timings.retrieval`: encoding the query and the search); then the
same for one large document on a fresh worker; then that document indexed in a process of
its own (the library path, no service) with the retriever's batches of `INDEX_BATCH` chunks
and with one batch of everything, as indexing was before batching, to show what it saves.

    python benchmarks/ingest_docs.py                # both stores, then one 4.5 MB document
    python benchmarks/ingest_docs.py --store edge --no-big
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import httpx
from harness import REPO, percentile, rss_mib, services

from rag_async.client.ingest import Found, find_documents, ingest_files
from rag_async.providers.parsing import parse

DOCS = Path("/usr/share/doc/python3.11/html")
BIG_BYTES = 4_500_000  # under the default 5 MB document limit


def ingest(
    files: Sequence[Found | Path],
    store: str = "edge",
    questions: Sequence[str] = (),
    offline_embedder: str = "static",
) -> None:
    env = {"RAG_DEMO_CORPUS": "false", "RAG_LOG_LEVEL": "WARNING", "RAG_STORE": store}
    env["RAG_OFFLINE_EMBEDDER"] = offline_embedder
    with services(ttft=0.0, tokens=1, tps=0, corpus=None, env=env) as svc:
        worker = svc.workers[0].pid
        idle = rss_mib(worker, "VmRSS")
        cpu_before = svc.cpu()
        started = time.perf_counter()
        report = ingest_files(svc.api_url, files, show_progress=False)
        chunks, failures = report.chunks, report.failures
        elapsed = time.perf_counter() - started
        cpu = {name: svc.cpu()[name] - cpu_before[name] for name in ("api", "worker", "valkey")}
        peak, end = rss_mib(worker, "VmHWM"), rss_mib(worker, "VmRSS")
        searches, encodings = retrieval_times(svc.api_url, questions)
    paths = [file.path if isinstance(file, Found) else file for file in files]
    size = sum(path.stat().st_size for path in paths) / 1e6
    print(f"  {len(files)} files, {size:.1f} MB, {chunks} chunks in {elapsed:.1f} s")
    print(f"  {len(files) / elapsed:.1f} pages/s, {chunks / elapsed:.0f} chunks/s")
    print("  CPU seconds: " + ", ".join(f"{name} {seconds:.1f}" for name, seconds in cpu.items()))
    print(f"  worker RSS: {idle:.0f} MiB after startup, peak {peak:.0f} MiB, {end:.0f} at the end")
    if searches:
        p50, p99 = (percentile(searches, q) * 1000 for q in (50, 99))
        print(
            f"  retrieval in the worker, {len(searches)} questions: p50 {p50:.2f}, p99 {p99:.2f} ms"
        )
    if encodings:
        p50, p99 = (percentile(encodings, q) * 1000 for q in (50, 99))
        print(f"  query encoding (the embedding stage): p50 {p50:.2f}, p99 {p99:.2f} ms")
    for failure in failures:
        print(f"  FAILED {failure}")


def retrieval_times(api_url: str, questions: Sequence[str]) -> tuple[list[float], list[float]]:
    """Each question asked and answered in turn; the worker's own retrieval time for each,
    and its query encoding's (the embedding stage, when there is a dense model)."""
    times, encodings = [], []
    with httpx.Client(base_url=api_url, timeout=60) as http:
        for question in questions:
            job_id = (
                http.post("/chat", json={"query": question}).raise_for_status().json()["job_id"]
            )
            with http.stream("GET", f"/jobs/{job_id}/events") as events:
                for _ in events.iter_lines():
                    pass  # to the stream's end: the job is over
            view = http.get(f"/jobs/{job_id}").raise_for_status().json()
            times.append(view["timings"]["retrieval"])
            if "embedding" in view["timings"]:
                encodings.append(view["timings"]["embedding"])
    return times, encodings


def big_document(root: Path, folder: Path) -> Path:
    """One Markdown file of about BIG_BYTES: the text of the library reference, end to end."""
    parts: list[str] = []
    size = 0
    for page in sorted((root / "library").glob("*.html")):
        text = parse(page.name, page.read_bytes()).text
        parts.append(text)
        size += len(text.encode())
        if size >= BIG_BYTES:
            break
    path = folder / "big.md"
    path.write_text("\n\n".join(parts).encode()[:BIG_BYTES].decode(errors="ignore"))
    return path


# Run in a fresh interpreter per measurement, so that its peak RSS is this indexing's alone.
_INDEX_ONE = """
import asyncio, sys, tempfile
from pathlib import Path
from rag_async.config import Settings
from rag_async.providers.retrieval import Retriever, open_store, retriever

async def main(path, batch):
    retriever.INDEX_BATCH = batch
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(_env_file=None, data_dir=Path(tmp))
        store = await open_store(settings)
        index = await Retriever.open(store, settings)
        before = rss("VmRSS")
        text = Path(path).read_text()
        chunks = await index.index("big", "Big", None, text)
        print(chunks, before, rss("VmHWM"))
        await store.close()

def rss(field):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024

asyncio.run(main(sys.argv[1], int(sys.argv[2])))
"""


def batching(big: Path) -> None:
    for label, batch in (("in batches of 256 chunks", 256), ("all at once (before)", 10**9)):
        output = subprocess.run(
            [sys.executable, "-c", _INDEX_ONE, str(big), str(batch)],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        chunks, before, peak = int(output[0]), float(output[1]), float(output[2])
        print(
            f"  {label}: {chunks} chunks, RSS {before:.0f} MiB before, peak {peak:.0f} MiB "
            f"(+{peak - before:.0f} MiB)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=Path, default=DOCS)
    parser.add_argument("--no-big", action="store_true", help="skip the one-big-document run")
    parser.add_argument("--store", choices=["edge", "local"], action="append")
    parser.add_argument(
        "--offline-embedder",
        choices=["static", "off"],
        default="static",
        help="hybrid with the static dense model (the default), or lexical only",
    )
    args = parser.parse_args()
    if not args.docs.is_dir():
        raise SystemExit(f"{args.docs}: not found (Debian: apt-get install python3.11-doc)")
    files, _ = find_documents([args.docs], include=["*.html"])
    questions = [
        json.loads(line)["question"]
        for line in (Path(__file__).parent / "retrieval_questions.jsonl").read_text().splitlines()
        if line.strip()
    ]
    for store in args.store or ["edge", "local"]:
        print(
            f"== the Python 3.11 docs: {len(files)} HTML pages, one worker, store: {store}, "
            f"offline embedder: {args.offline_embedder}"
        )
        ingest(files, store, questions, args.offline_embedder)
    if not args.no_big:
        with tempfile.TemporaryDirectory(prefix="rag-big-") as tmp:
            big = big_document(args.docs, Path(tmp))
            print(f"== one big document: {big.stat().st_size / 1e6:.1f} MB of Markdown")
            ingest([big])
            print("== the same document indexed in one process, without the service")
            batching(big)


if __name__ == "__main__":
    main()
