#!/usr/bin/env bash
# Every benchmark in docs/benchmarks.md, in one run (about 50 minutes on 2 cores).
# Run it on a quiet machine: the service, the test LLM and the load share the cores.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-../.venv/bin/python}
echo "# $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p')"
echo "== hot path";                       $PY hot_path.py
echo "== first token through the screen"; $PY first_token.py
echo "== one answer at a time";           $PY critical_path.py
echo "== 1,000 SSE streams, one API";     $PY connections.py -n 1000
echo "== load: async, 1 worker";          $PY load.py -c 10 -c 50 -c 200
echo "== load: async, 2 workers";         $PY load.py -c 50 -c 200 --workers 2
echo "== load: inline (replaced design)"; $PY load.py -c 10 -c 50 -c 200 --inline
echo "== load: the old store, local mode";  $PY load.py -c 50 --store local
echo "== load: inline on the old store";    $PY load.py -c 50 --inline --store local
echo "== load: async, 1 worker, no corpus"; $PY load.py -c 50 --corpus none
echo "== poll delay";                     $PY poll_delay.py
echo "== fair share between keys";       $PY fairness.py
echo "== faults (docs/reliability.md)";  $PY reliability.py || echo "!! a job was lost, done twice or a document mixed"
# These two need Debian's python3.11-doc (the 530 pages under /usr/share/doc/python3.11/html).
if [ -d /usr/share/doc/python3.11/html ]; then
  echo "== ingestion: the Python 3.11 docs"; $PY ingest_docs.py
  for design in "" "--inline"; do for store in edge local; do
    echo "== load with the 530 pages: ${design:-async} $store"
    $PY load.py -c 50 --corpus docs --store $store $design
  done; done
  echo "== retrieval evaluation";          $PY eval_retrieval.py
  echo "== metadata filters in Edge";      $PY filtered_search.py
else
  echo "== ingestion and retrieval evaluation: skipped (apt-get install python3.11-doc)"
fi
