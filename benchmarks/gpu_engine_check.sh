#!/usr/bin/env bash
# Every GPU measurement of the engine issue (about 10 minutes on one H200 in all; results in
# benchmarks/results/*-cuda-*.json and .png). Run from the repository root on the device machine:
#   bash benchmarks/gpu_engine_check.sh            # everything
#   bash benchmarks/gpu_engine_check.sh prefill    # part 1: eager prefill/decode, compiled selection (~5 min)
#   bash benchmarks/gpu_engine_check.sh modes      # part 2: TTFT/TPOT/generate, eager/static/compiled (~5 min)
# The parts fit a device tool's 10-minute limit per command. Each step is independent: one failing
# (or running past its 280 s) does not stop the others.
set -u
export PYTHONUNBUFFERED=1
part="${1:-all}"
run() { echo "== $*"; timeout 280 "$@" || echo "!! failed ($?): $*"; }
if [ "$part" = all ] || [ "$part" = prefill ]; then
    # eager prefill / decode, comparable with the tables in docs/results/gpu.md
    run python benchmarks/bench_llava.py --device cuda --shape llava-1.5-7b --no-memory --no-train --repeats 7
    run python benchmarks/bench_llava.py --device cuda --shape llava-next-7b --no-memory --no-train --repeats 7
    # the same with the selection step compiled (WrapHandle.compile_selection)
    run python benchmarks/bench_llava.py --device cuda --shape llava-1.5-7b --no-memory --no-train --repeats 7 \
        --compile-selection --name llava-1.5-7b-pyramiddrop-cuda-compiled-selection
fi
if [ "$part" = all ] || [ "$part" = modes ]; then
    # TTFT, TPOT and end-to-end generate of 64 tokens: eager, static cache, compiled decode (CUDA graphs)
    run python benchmarks/bench_engine_modes.py --device cuda --shape llava-1.5-7b --new-tokens 64 --repeats 5
    run python benchmarks/bench_engine_modes.py --device cuda --shape llava-next-7b --new-tokens 64 --repeats 5
fi
