#!/usr/bin/env bash
# Hook time of two commits side by side: benchmarks/hook_overhead.py run in alternating processes,
# the older commit from a temporary worktree, the current tree as it is. Machine load drifts; the
# alternation makes both commits see it alike. Prints each run's summary lines (and, like
# hook_overhead.py, rewrites the current tree's benchmarks/results/hook-overhead-*.json).
#   bash benchmarks/hook_overhead_ab.sh BASE_REV [STRATEGY] [RUNS] [ROUNDS]
#   bash benchmarks/hook_overhead_ab.sh 39a55cd fastv 3 11
set -eu
base="$1"; strategy="${2:-pyramiddrop}"; runs="${3:-3}"; rounds="${4:-11}"
root="$(git rev-parse --show-toplevel)"
tree="$(mktemp -d)/base"
git -C "$root" worktree add -q --detach "$tree" "$base"
trap 'git -C "$root" worktree remove --force "$tree"' EXIT
# The base commit's plugins/adapters links point into its own tree; its hook_overhead.py is used as is.
for _ in $(seq "$runs"); do
    for dir in "$tree" "$root"; do
        label=$([ "$dir" = "$root" ] && echo current || echo "$base")
        (cd "$dir" && PYTHONPATH="$dir" OMP_NUM_THREADS=1 python benchmarks/hook_overhead.py \
            --strategy "$strategy" --rounds "$rounds" 2>/dev/null | grep hooks | sed "s|^|$label  |")
    done
done
