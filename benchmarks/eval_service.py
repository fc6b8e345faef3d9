"""`rag-async eval` end to end: the Python 3.11 documentation (530 HTML pages, as Debian's
`python3.11-doc` installs it) ingested through the service as `rag-async ingest` does it
(harness.py: Valkey, the API and one worker as processes, offline), then the project's 100
questions (retrieval_questions.jsonl) asked with `rag-async eval`, which searches each through
POST /search. Reported: its JSON report's scores, the number of misses, and the wall time and
CPU seconds (API, worker, Valkey) of the 100 searches.

    python benchmarks/eval_service.py                 # --top-k 20, the CLI's default
    python benchmarks/eval_service.py --top-k 50 --misses
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from harness import PYTHON_DOCS, REPO, services

from rag_async.client.ingest import find_documents, ingest_files

QUESTIONS = Path(__file__).with_name("retrieval_questions.jsonl")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=Path, default=PYTHON_DOCS)
    parser.add_argument("--top-k", default="20")
    parser.add_argument("--misses", action="store_true", help="list the misses too")
    args = parser.parse_args()
    if not args.docs.is_dir():
        raise SystemExit(f"{args.docs}: not found (Debian: apt-get install python3.11-doc)")
    files, _ = find_documents([args.docs], include=["*.html"])
    env = {"RAG_DEMO_CORPUS": "false"}
    with services(ttft=0.0, tokens=1, tps=0, corpus=None, env=env) as svc:
        started = time.perf_counter()
        report = ingest_files(svc.api_url, files, show_progress=False)
        took = time.perf_counter() - started
        print(f"ingested {len(files)} pages, {report.chunks} chunks in {took:.1f} s")
        for failure in report.failures:
            print(f"  FAILED {failure}")
        before, started = svc.cpu(), time.perf_counter()
        command = [sys.executable, "-m", "rag_async.client.cli", "eval", str(QUESTIONS)]
        result = subprocess.run(
            [*command, "--json", "--top-k", args.top_k],
            env={**os.environ, "RAG_API_URL": svc.api_url},
            cwd=REPO,
            capture_output=True,
            text=True,
            check=False,
        )
        elapsed = time.perf_counter() - started
        cpu = {name: svc.cpu()[name] - before[name] for name in ("api", "worker", "valkey")}
    if result.returncode != 0:
        raise SystemExit(f"rag-async eval failed ({result.returncode}): {result.stderr}")
    scores = json.loads(result.stdout)
    recall = ", ".join(f"recall@{k} {v:.2f}" for k, v in scores["recall"].items())
    print(
        f"{scores['questions']} questions, top-k {scores['top_k']}: {recall}, "
        f"MRR@10 {scores['mrr@10']:.3f}; {len(scores['misses'])} misses, {scores['errors']} errors"
    )
    print(
        f"  {elapsed:.1f} s for the searches (the CLI's start included); CPU seconds: "
        + ", ".join(f"{name} {seconds:.2f}" for name, seconds in cpu.items())
    )
    if args.misses:
        for miss in scores["misses"]:
            print(f"    rank {miss['rank']}: {miss['question']}  -> want {miss['expected'][0]}")
            print(f"        got {', '.join(miss['found'])}")


if __name__ == "__main__":
    main()
