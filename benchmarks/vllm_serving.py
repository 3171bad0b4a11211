"""Serving benchmark: vLLM with and without tokenprune's plugin, at concurrency 1, 4 and 16 (not a test).

    # in the vLLM venv (.ci/vllm_venv.sh builds one): starts two servers on localhost, writes JSON
    .venv-vllm/bin/python benchmarks/vllm_serving.py run --out benchmarks/results/vllm_serving.json
    # in any venv with matplotlib: the plot next to it
    python benchmarks/vllm_serving.py plot benchmarks/results/vllm_serving.json

A CPU-sized LLaVA-1.5 with random weights (timing depends on shapes, not on trained weights): CLIP
336 px / patch 14 (576 patches) and a Llama text stack, saved once to ``--model-dir``. Two servers,
one after the other, each answering streamed chat requests, every request with its own random image
(so neither vLLM's prefix cache nor its encoder cache can reuse an earlier request's work):

* ``stock``: vLLM's own LLaVA class, no plugin in the model path;
* ``plugin``: the tokenprune architecture; each request picks ``none`` (the plugin's class, dense),
  ``visionzip`` or ``pooling`` (both keeping ``--ratio`` of the 576 tokens) through
  ``mm_processor_kwargs``.

Both servers run side by side. For every concurrency C, the four configurations take turns for
``--rounds`` rounds; in each turn C client threads send ``--requests * C`` requests back to back.
Per request: TTFT (first streamed token), TPOT (mean gap of the later tokens); per turn: requests
per second. Reported: medians over all requests, mean throughput over the rounds; the JSON keeps
every request.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "vllm_plugin"))

CONCURRENCY = (1, 4, 16)
CONFIGS = ("stock", "plugin-none", "plugin-visionzip", "plugin-pooling")


def build_model(path: Path) -> Path:
    from tiny_checkpoints import build_llava

    if not (path / "config.json").exists():
        build_llava(path, image_size=336, vision=(256, 6, 4), text=(512, 6, 8), max_positions=2048)
    return path


def _image_url(seed: int) -> str:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (336, 336, 3), dtype=np.uint8)).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _start(model: Path, port: int, plugin: bool, log: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model), "--host", "127.0.0.1",
           "--port", str(port), "--dtype", "bfloat16", "--max-model-len", "2048", "--max-num-seqs", "16",
           "--max-num-batched-tokens", "4096", "--enforce-eager", "--limit-mm-per-prompt", json.dumps({"image": 1}),
           ]  # fmt: skip
    if plugin:
        cmd += ["--hf-overrides", json.dumps({"architectures": ["TokenpruneLlavaForConditionalGeneration"]}),
                "--trust-request-mm-kwargs"]  # fmt: skip
    env = {**os.environ, "VLLM_TARGET_DEVICE": "cpu", "VLLM_CPU_KVCACHE_SPACE": "2"}
    server = subprocess.Popen(cmd, stdout=open(log, "w"), stderr=subprocess.STDOUT, env=env, start_new_session=True)
    started = time.perf_counter()
    while True:
        if server.poll() is not None:
            raise RuntimeError(f"the server exited ({server.returncode}); see {log}")
        if time.perf_counter() - started > 600:
            raise RuntimeError("the server did not start within 600 s")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                return server
        except OSError:
            time.sleep(1)


def _one(port: int, model: Path, seed: int, choice: dict | None, tokens: int) -> dict:
    content = [{"type": "text", "text": "w10 w11"}, {"type": "image_url", "image_url": {"url": _image_url(seed)}},
               {"type": "text", "text": "w12 w13 w14 w15"}]  # fmt: skip
    body = {"model": str(model), "messages": [{"role": "user", "content": content}], "max_tokens": tokens,
            "temperature": 0.0, "ignore_eos": True, "stream": True, "stream_options": {"include_usage": True}}  # fmt: skip
    if choice is not None:
        body["mm_processor_kwargs"] = {"tokenprune": choice}
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/chat/completions", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})  # fmt: skip
    start = time.perf_counter()
    stamps, usage = [], None
    with urllib.request.urlopen(req, timeout=600) as r:
        for line in r:
            line = line.strip()
            if not line.startswith(b"data: ") or line == b"data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                usage = chunk["usage"]
            if chunk.get("choices") and chunk["choices"][0]["delta"].get("content"):
                stamps.append(time.perf_counter())
    n = usage["completion_tokens"] if usage else len(stamps)
    ttft = stamps[0] - start
    tpot = (stamps[-1] - stamps[0]) / max(1, n - 1)
    return {"ttft_s": ttft, "tpot_s": tpot, "latency_s": time.perf_counter() - start, "prompt_tokens": usage and usage["prompt_tokens"]}


def _level(port: int, model: Path, choice: dict | None, concurrency: int, requests: int, tokens: int, seed0: int) -> dict:
    seeds = list(range(seed0, seed0 + requests))
    results: list[dict] = []
    lock = threading.Lock()

    def worker():
        while True:
            with lock:
                if not seeds:
                    return
                seed = seeds.pop(0)
            out = _one(port, model, seed, choice, tokens)
            with lock:
                results.append(out)

    start = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    return {
        "concurrency": concurrency, "requests": requests, "wall_s": wall, "requests_per_s": requests / wall,
        "ttft_median_s": statistics.median(r["ttft_s"] for r in results),
        "tpot_median_s": statistics.median(r["tpot_s"] for r in results),
        "prompt_tokens": results[0]["prompt_tokens"], "per_request": results,
    }  # fmt: skip


def _merge(levels: list[dict]) -> dict:
    """One configuration at one concurrency over all rounds: medians over every request, mean throughput."""
    per_request = [r for level in levels for r in level["per_request"]]
    return {
        "concurrency": levels[0]["concurrency"], "requests": len(per_request), "rounds": len(levels),
        "requests_per_s": statistics.mean(level["requests_per_s"] for level in levels),
        "requests_per_s_rounds": [level["requests_per_s"] for level in levels],
        "ttft_median_s": statistics.median(r["ttft_s"] for r in per_request),
        "tpot_median_s": statistics.median(r["tpot_s"] for r in per_request),
        "prompt_tokens": levels[0]["prompt_tokens"], "per_request": per_request,
    }  # fmt: skip


def run(args: argparse.Namespace) -> None:
    from check_serve import _stop, free_port

    model = build_model(Path(args.model_dir))
    choices = {"plugin-none": {"strategy": "none"}, "plugin-visionzip": {"strategy": "visionzip", "ratio": args.ratio},
               "plugin-pooling": {"strategy": "pooling", "ratio": args.ratio}}  # fmt: skip
    out = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform()}, "model": "LLaVA-1.5 layout, CLIP 336px "
           "(576 patches) d=256 x6, Llama d=512 x6, bf16, random weights", "ratio": args.ratio, "new_tokens": args.tokens,
           "rounds": args.rounds, "runs": []}  # fmt: skip
    # Both servers run side by side (an idle server costs no CPU) and the configurations take turns,
    # round after round, so drift on a shared machine hits all of them alike.
    ports = {"stock": free_port(), "plugin": free_port()}
    servers = {}
    try:
        for kind, port in ports.items():
            servers[kind] = _start(model, port, kind == "plugin", Path(args.out).with_suffix(f".{kind}.log"))
            _one(port, model, 1, None, 2)  # warm up
        seed = 1000
        for c in CONCURRENCY:
            levels: dict[str, list[dict]] = {name: [] for name in CONFIGS}
            for _ in range(args.rounds):
                for name in CONFIGS:
                    port = ports["stock" if name == "stock" else "plugin"]
                    requests = args.requests * c
                    levels[name].append(_level(port, model, choices.get(name), c, requests, args.tokens, seed))
                    seed += requests
            for name in CONFIGS:
                merged = _merge(levels[name])
                merged["config"] = name
                out["runs"].append(merged)
                print(f"{name:18s} c={c:2d} rps={merged['requests_per_s']:.2f} ttft={merged['ttft_median_s']*1000:.0f} ms "
                      f"tpot={merged['tpot_median_s']*1000:.1f} ms prompt={merged['prompt_tokens']}", flush=True)  # fmt: skip
    finally:
        for server in servers.values():
            _stop(server)
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(f"wrote {args.out}")


def plot(args: argparse.Namespace) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = json.loads(Path(args.json).read_text())
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    metrics = [("ttft_median_s", "TTFT, median (ms)", 1000), ("tpot_median_s", "TPOT, median (ms)", 1000),
               ("requests_per_s", "throughput (requests/s)", 1)]  # fmt: skip
    for ax, (key, label, scale) in zip(axes, metrics):
        for name in CONFIGS:
            runs = sorted((r for r in data["runs"] if r["config"] == name), key=lambda r: r["concurrency"])
            if runs:
                ax.plot([r["concurrency"] for r in runs], [r[key] * scale for r in runs], marker="o", label=name)
        ax.set_xscale("log", base=2)
        ax.set_xticks(list(CONCURRENCY), [str(c) for c in CONCURRENCY])
        ax.set_xlabel("concurrent requests")
        ax.set_title(label)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"vLLM (CPU) with and without tokenprune's plugin: {data['model']}, keep {data['ratio']:.0%}", fontsize=9)
    fig.tight_layout()
    out = Path(args.json).with_suffix(".png")
    fig.savefig(out, dpi=120)
    print(f"wrote {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run")
    r.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "vllm_serving.json"))
    r.add_argument("--model-dir", default="/tmp/tokenprune-vllm-bench-model")
    r.add_argument("--ratio", type=float, default=0.25)
    r.add_argument("--requests", type=int, default=1, help="requests per concurrent client, per round and level")
    r.add_argument("--rounds", type=int, default=2, help="turns each configuration takes at each level")
    r.add_argument("--tokens", type=int, default=16)
    p = sub.add_parser("plot")
    p.add_argument("json")
    args = parser.parse_args()
    run(args) if args.command == "run" else plot(args)


if __name__ == "__main__":
    main()
