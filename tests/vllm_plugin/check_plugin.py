"""The vLLM plugin against `tokenprune.wrap` on one tiny checkpoint (run inside the vLLM venv).

    python tests/vllm_plugin/check_plugin.py FAMILY CHECKPOINT_DIR OUT.json

For every projector-side strategy and every prompt (one image, two images of different sizes, text
only), it records what the transformers path does (`tokenprune.wrap`: the kept patch indices of each
image, greedy tokens and their log-probabilities) and what vLLM does with the plugin (each request
choosing its strategy through ``mm_processor_kwargs``), first one request at a time, then all
requests in one batch. It writes every number to OUT.json; ``tests/test_vllm_plugin.py`` asserts on
them. Kept indices and tokens must be equal; log-probabilities agree to float32 rounding.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("VLLM_TARGET_DEVICE", "cpu")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # the model lives in this process (apply_model)
os.environ.setdefault("VLLM_ALLOW_INSECURE_SERIALIZATION", "1")

import numpy as np
import torch
from PIL import Image

NEW_TOKENS = 6
BATCHED_TOKENS = int(os.environ.get("TOKENPRUNE_CHECK_BATCHED_TOKENS", "1024"))
"""vLLM's token budget per step; below a prompt's length, its prefill runs in chunks (and an image's
placeholder run may straddle two chunks)."""
STRATEGIES = [
    {"strategy": "visionzip", "ratio": 0.5},
    {"strategy": "divprune", "ratio": 0.25},
    {"strategy": "pooling", "ratio": 0.25},
    {"strategy": "downsample", "ratio": 0.25},
]
ARCH = {
    "llava": "TokenpruneLlavaForConditionalGeneration",
    "qwen2_vl": "TokenpruneQwen2VLForConditionalGeneration",
    "qwen2_5_vl": "TokenpruneQwen2_5_VLForConditionalGeneration",
}


def image(seed: int, size: tuple[int, int]) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def prompts(family: str) -> list[dict]:
    """Prompts as (text, images): one image, two images of different sizes, text only."""
    mark = "<image>" if family == "llava" else "<|vision_start|><|image_pad|><|vision_end|>"
    second = (112, 112) if family == "llava" else (168, 112)
    return [
        {"name": "one-image", "text": f"w10 w11 {mark} w12 w13 w14", "images": [image(1, (224, 224))]},
        {"name": "two-images", "text": f"w20 {mark} w21 {mark} w22 w23", "images": [image(2, (224, 224)), image(3, second)]},
        {"name": "text-only", "text": "w30 w31 w32 w33", "images": []},
    ]


# -- transformers --------------------------------------------------------------------------------
def transformers_side(family: str, path: Path, cases: list[dict], items: list[dict]) -> list[dict]:
    from transformers import AutoModelForImageTextToText, AutoProcessor, GenerationConfig

    import tokenprune

    model = AutoModelForImageTextToText.from_pretrained(path, dtype=torch.float32).eval()
    model.generation_config.eos_token_id = None  # generate falls back to it
    processor = AutoProcessor.from_pretrained(path)
    # no stop token (vLLM runs with ignore_eos) and raw logits (vLLM's logprobs are the model's own)
    greedy = GenerationConfig(max_new_tokens=NEW_TOKENS, do_sample=False, eos_token_id=None, pad_token_id=3,
                              output_logits=True, return_dict_in_generate=True)  # fmt: skip
    results = []
    for case in cases:
        for item in items:
            kwargs = {"text": item["text"], "return_tensors": "pt"}
            if item["images"]:
                kwargs["images"] = item["images"]
            inputs = processor(**kwargs)
            options = {k: v for k, v in case.items() if k != "strategy"}
            dense = case["strategy"] == "none"
            if not dense:
                tokenprune.wrap(model, case["strategy"], **options)
            try:
                kept = _kept_transformers(model, inputs, family) if (item["images"] and not dense) else []
                out = model.generate(**inputs, generation_config=greedy)
            finally:
                if not dense:
                    tokenprune.unwrap(model)
            tokens = out.sequences[0, inputs["input_ids"].shape[1]:].tolist()
            logprobs = [float(torch.log_softmax(s[0].float(), -1)[t]) for s, t in zip(out.logits, tokens)]
            results.append({"case": case, "prompt": item["name"], "kept": kept, "tokens": tokens, "logprobs": logprobs})
    return results


def _kept_transformers(model, inputs, family: str) -> list[list[int]]:
    """Kept patch indices of every image in the transformers path's prefill."""
    handle = model.tokenprune
    with torch.no_grad():
        model(**inputs)
    if family == "llava":
        selection = handle._engine.bridge._local.selection  # (images, 1 + kept): [CLS] first
        return [(row[1:] - 1).tolist() for row in selection]
    columns = handle.input_columns()
    ids = inputs["input_ids"][0]
    image_id = model.config.image_token_id
    kept_cols = set(columns[0].tolist()) if columns is not None else set(range(ids.shape[0]))
    runs, start = [], None
    for i, t in enumerate(ids.tolist() + [-1]):
        if t == image_id and start is None:
            start = i
        elif t != image_id and start is not None:
            runs.append((start, i))
            start = None
    return [[c - a for c in range(a, b) if c in kept_cols] for a, b in runs]


# -- vLLM ----------------------------------------------------------------------------------------
def vllm_side(family: str, path: Path, cases: list[dict], items: list[dict]) -> dict:
    from vllm import LLM, SamplingParams

    started = time.perf_counter()
    llm = LLM(
        model=str(path), hf_overrides={"architectures": [ARCH[family]]}, dtype="float32", max_model_len=512,
        max_num_seqs=4, max_num_batched_tokens=BATCHED_TOKENS, enforce_eager=True, limit_mm_per_prompt={"image": 2},
        seed=0,
    )  # fmt: skip
    startup = time.perf_counter() - started
    params = SamplingParams(temperature=0.0, max_tokens=NEW_TOKENS, ignore_eos=True, logprobs=0)

    def request(case, item):
        req = {"prompt": item["text"], "mm_processor_kwargs": {"tokenprune": case}}
        if item["images"]:
            req["multi_modal_data"] = {"image": item["images"] if len(item["images"]) > 1 else item["images"][0]}
        return req

    def records():
        return llm.apply_model(lambda model: list(model.tokenprune_records))[0]

    def unpack(output):
        seq = output.outputs[0]
        return list(seq.token_ids), [float(lp[t].logprob) for lp, t in zip(seq.logprobs, seq.token_ids)]

    single = []
    for case in cases:
        for item in items:
            before = len(records())
            out = llm.generate([request(case, item)], params, use_tqdm=False)[0]
            after = records()
            new = after[before:] if len(after) > before else []
            tokens, logprobs = unpack(out)
            single.append({"case": case, "prompt": item["name"], "kept": [r["kept"] for r in new], "tokens": tokens,
                           "logprobs": logprobs, "prompt_tokens": len(out.prompt_token_ids)})  # fmt: skip
    batch_requests = [request(case, item) for case in cases for item in items]
    order = list(reversed(range(len(batch_requests))))  # a different order than the single runs
    outs = llm.generate([batch_requests[i] for i in order], params, use_tqdm=False)
    mixed: list[dict | None] = [None] * len(batch_requests)
    for i, out in zip(order, outs):
        tokens, logprobs = unpack(out)
        mixed[i] = {"tokens": tokens, "logprobs": logprobs}
    return {"startup_s": startup, "single": single, "mixed": mixed}


def main() -> None:
    family, path, out = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    torch.set_num_threads(1)
    cases = [{"strategy": "none"}, *STRATEGIES]
    items = prompts(family)
    started = time.perf_counter()
    hf = transformers_side(family, path, cases, items)
    hf_s = time.perf_counter() - started
    vl = vllm_side(family, path, cases, items)
    out.write_text(json.dumps({"family": family, "transformers": hf, "vllm": vl, "transformers_s": hf_s,
                               "total_s": time.perf_counter() - started}, indent=1))  # fmt: skip
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
