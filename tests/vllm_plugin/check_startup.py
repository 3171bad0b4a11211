"""Bad plugin configurations fail when vLLM starts, with tokenprune's own message (run in the vLLM venv).

    python tests/vllm_plugin/check_startup.py CHECKPOINT_DIR OUT.json

Each case builds ``LLM(...)`` with one ``tokenprune`` entry in ``hf_overrides`` and records the
exception's type and message (or that no exception came), and how long it took to fail.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback

os.environ.setdefault("VLLM_TARGET_DEVICE", "cpu")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")

CASES = {
    "bad-option": {"strategy": "visionzip", "ratio": 2},
    "unknown-option": {"strategy": "pooling", "ratioo": 0.5},
    "unknown-strategy": {"strategy": "visionzipp"},
    "in-llm": {"strategy": "pyramiddrop"},
}


def main() -> None:
    from vllm import LLM

    path, out = sys.argv[1], sys.argv[2]
    results = {}
    for name, entry in CASES.items():
        started = time.perf_counter()
        try:
            LLM(model=path, hf_overrides={"architectures": ["TokenpruneLlavaForConditionalGeneration"], "tokenprune": entry},
                dtype="float32", max_model_len=512, max_num_seqs=2, enforce_eager=True, limit_mm_per_prompt={"image": 1})  # fmt: skip
            results[name] = {"raised": None, "seconds": time.perf_counter() - started}
        except Exception as err:
            chain, e = [], err
            while e is not None:
                chain.append(f"{type(e).__name__}: {e}")
                e = e.__cause__ or e.__context__
            results[name] = {"raised": type(err).__name__, "messages": chain, "seconds": time.perf_counter() - started,
                             "traceback": traceback.format_exc()[-3000:]}  # fmt: skip
    with open(out, "w") as f:
        json.dump(results, f, indent=1)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
