#!/usr/bin/env bash
# The load benchmark on an earlier commit and on this checkout, interleaved in one run, so that
# the machine's drift falls on both alike (docs/benchmarks.md, "Issue 18's store and lifecycle"):
#
#   benchmarks/compare_commits.sh c5ddf12            # 2 rounds of load.py -c 10 -c 50
#   ROUNDS=3 benchmarks/compare_commits.sh c5ddf12 -c 50 -d 30
#   INLINE=1 benchmarks/compare_commits.sh c5ddf12 -c 50 -c 200   # and the inline design too
#   SCRIPT=poll_delay.py benchmarks/compare_commits.sh ae5f932 --delays 0.01 0.1
#   BENCH=this benchmarks/compare_commits.sh ae5f932 -c 10   # this checkout's load.py on both
#
# The earlier commit is checked out beside this one as a git worktree and run with this
# checkout's environment (.venv, or $PYTHON), its own code first on PYTHONPATH. Prints the
# script's output (load.py's JSON lines), each round's trees marked with a "== tree round" line.
set -euo pipefail
base=${1:?usage: compare_commits.sh COMMIT [load.py options]}
shift
options=("$@")
script=${SCRIPT:-load.py}
if [ "$script" = load.py ]; then
  [ ${#options[@]} -eq 0 ] && options=(-c 10 -c 50)
  options+=(--json)
fi
here=$(cd "$(dirname "$0")/.." && pwd)
py=${PYTHON:-$here/.venv/bin/python}
base_tree=$(mktemp -d /tmp/rag-compare-XXXX)
git -C "$here" worktree add -q --detach "$base_tree" "$base"
trap 'git -C "$here" worktree remove --force "$base_tree"' EXIT
for round in $(seq "${ROUNDS:-2}"); do
  for tree in "$base_tree" "$here"; do
    name=$([ "$tree" = "$here" ] && echo this || echo "$base")
    echo "== $name round $round"
    # BENCH=this: this checkout's scripts (newer columns) against either tree's code.
    bench=$([ "${BENCH:-own}" = this ] && echo "$here/benchmarks" || echo "$tree/benchmarks")
    (cd "$bench" && PYTHONPATH=$tree "$py" "$script" "${options[@]}")
  done
  if [ -n "${INLINE:-}" ]; then  # the replaced design (inline_app.py), this checkout's
    echo "== inline round $round"
    (cd "$here/benchmarks" && PYTHONPATH=$here "$py" load.py "${options[@]}" --inline --json)
  fi
done
