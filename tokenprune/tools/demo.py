"""The `tokenprune demo` workload: a strategy on a tiny random LLaVA-1.5, end to end, on CPU.

The demo shows what the library does without a model hub or a GPU: a stock
`LlavaForConditionalGeneration` with LLaVA-1.5's visual geometry (one 336 px image = 576 visual
tokens) but tiny widths, random weights and 8 decoder layers. It measures what a user would check
first: visual tokens per layer, paper-convention FLOPs (for the demo model and for the real
LLaVA-1.5-7B shape under the same schedule), prefill wall time, and that a keep-everything
schedule generates exactly what the unwrapped model generates.

`run` returns plain JSON-ready data; `tokenprune.tools.reports.render_demo` renders it.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import torch
from torch import nn

from .. import __version__
from ..api import pruned
from ..cost import stack_flops
from ..registry import get_registry
from .tiny_llava import LlavaDims, build_llava, llava_config

__all__ = ["build_model", "build_inputs", "run", "LLAVA_7B", "DEMO_DIMS", "DEMO_LLAVA"]

# Vocabulary: text ids first, special ids at the end, all inside the embedding table.
PAD_ID, BOS_ID, EOS_ID, IMAGE_ID = 0, 1, 2, 255
VOCAB_SIZE = 256
TEXT_IDS = (3, 250)
SPECIAL_IDS = (PAD_ID, BOS_ID, EOS_ID, IMAGE_ID)

DEMO_LLAVA = LlavaDims(
    layers=8, hidden=128, intermediate=344, heads=4, kv_heads=2, vocab=VOCAB_SIZE,
    vision_layers=2, vision_hidden=32, vision_intermediate=64, vision_heads=2, image_size=336, patch_size=14,
)  # fmt: skip
"""The demo's random LLaVA: LLaVA-1.5's visual geometry (336 px, 14 px patches: 576 visual tokens), tiny widths."""
DEMO_DIMS = dict(layers=DEMO_LLAVA.layers, hidden=DEMO_LLAVA.hidden, heads=DEMO_LLAVA.heads,
                 kv_heads=DEMO_LLAVA.kv_heads, intermediate=DEMO_LLAVA.intermediate, vocab=VOCAB_SIZE)  # fmt: skip
"""Shape of the demo's random LLaVA as the report prints it: small enough to run on a laptop CPU in seconds."""
LLAVA_7B = dict(name="LLaVA-1.5-7B", layers=32, hidden=4096, intermediate=11008, visual_tokens=576)
"""LLaVA-1.5-7B's dimensions, to report what the demo's schedule would save at full size."""
IMAGE_PX = DEMO_LLAVA.image_size  # (336 / 14)^2 = 576 patches; the CLS feature is dropped ("default")
INIT_STD = 0.2
PROMPT_TEXT = ((3, 5), (6, 8))  # per sample: text tokens before and after the image


def build_config():
    """LLaVA-1.5 layout (CLIP tower, CLS dropped, Llama text stack) with tiny widths.

    Only the geometry that decides token counts is real (336 px, 14 px patches); widths are tiny so
    the whole demo runs in seconds on a laptop CPU.
    """
    return llava_config(DEMO_LLAVA, image_token_id=IMAGE_ID, max_positions=1024, pad_id=PAD_ID, bos_id=BOS_ID,
                        eos_id=EOS_ID)  # fmt: skip


def build_model(seed: int = 0) -> nn.Module:
    """The demo model: stock `LlavaForConditionalGeneration`, float32, SDPA, eval mode.

    Weights are redrawn from N(0, `INIT_STD`) (`tokenprune.tools.tiny_llava.redraw_weights`), so
    attention is peaky and the strategies' scores mean something even on random weights.
    """
    model = build_llava(build_config(), seed=seed, init_std=INIT_STD)
    # Greedy decoding on random weights must neither stop early nor emit a placeholder id.
    model.generation_config.suppress_tokens = list(SPECIAL_IDS)
    return model


def build_inputs(model: nn.Module, seed: int = 0) -> dict[str, torch.Tensor]:
    """A left-padded batch of 2 prompts (text, one image, text) of different lengths, as a processor would."""
    gen = torch.Generator().manual_seed(seed)
    n_image = model.config.image_seq_length
    rows = [_prompt_ids(before, after, n_image, gen) for before, after in PROMPT_TEXT]
    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), PAD_ID, dtype=torch.long)
    attention_mask = torch.zeros_like(input_ids)
    for b, row in enumerate(rows):
        input_ids[b, width - len(row) :] = torch.tensor(row)
        attention_mask[b, width - len(row) :] = 1
    pixels = torch.randn((len(rows), 3, IMAGE_PX, IMAGE_PX), generator=gen)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "pixel_values": pixels}


def _prompt_ids(before: int, after: int, n_image: int, gen: torch.Generator) -> list[int]:
    text = torch.randint(*TEXT_IDS, (before + after,), generator=gen).tolist()
    return [BOS_ID, *text[:before], *[IMAGE_ID] * n_image, *text[before:]]


def check_options(strategy: str, options: dict[str, Any]) -> None:
    """Validate the strategy name and options before the (slower) model build, so errors come first."""
    get_registry().build(strategy, **options)


def keep_all_options(options: dict[str, Any]) -> dict[str, Any]:
    """The same stage layers with every ratio 1.0: the schedule that must change nothing."""
    out = dict(options)
    if "image_token_ratio_list" in out:
        out["image_token_ratio_list"] = [1.0] * len(out["image_token_ratio_list"])
    else:
        out["ratio"] = 1.0
    return out


def with_positions(inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Add the position ids `generate` derives from the mask (0 on padding) for a bare forward.

    Without them a bare forward numbers left-padded rows from the first pad slot, so it would
    not be the prefill that `generate` runs.
    """
    mask = inputs["attention_mask"]
    return {**inputs, "position_ids": (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)}


@torch.inference_mode()
def prefill(model: nn.Module, inputs: dict[str, torch.Tensor]) -> float:
    """Seconds of one prefill forward (what the stats describe), as `generate`'s first step runs it."""
    start = time.perf_counter()
    model(**with_positions(inputs), use_cache=False)
    return time.perf_counter() - start


def time_prefills(model: nn.Module, inputs: dict, strategy: str, options: dict, repeats: int) -> dict[str, float]:
    """Median prefill seconds, dense vs. wrapped, alternating so drift hits both alike."""
    prefill(model, inputs)  # warm-up: first-call allocations and kernel selection
    dense, wrapped = [], []
    for _ in range(repeats):
        dense.append(prefill(model, inputs))
        with pruned(model, strategy, **options):
            wrapped.append(prefill(model, inputs))
    return {"dense": statistics.median(dense), "wrapped": statistics.median(wrapped), "repeats": repeats}


@torch.inference_mode()
def generate(model: nn.Module, inputs: dict, max_new_tokens: int) -> list[list[int]]:
    """Greedy new token ids per sample."""
    out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    return out[:, inputs["input_ids"].shape[1] :].tolist()


def wrapped_generate(model: nn.Module, inputs: dict, strategy: str, options: dict, n: int) -> tuple[list, list | None]:
    """Generated ids under a temporary wrap, and the visual tokens its prefill left per layer.

    The token counts come from the handle (``None`` when the wrapped prefill never engaged), so the
    demo reports what `generate` really did rather than what the schedule promised.
    """
    with pruned(model, strategy, **options) as handle:
        ids = generate(model, inputs, n)
        stats = handle.stats
    return ids, None if stats is None else [list(row) for row in stats.visual_tokens]


def generations(model: nn.Module, inputs: dict, strategy: str, options: dict, n: int) -> dict[str, Any]:
    """Dense, keep-all and pruned generations, and whether keep-all reproduced dense exactly."""
    dense = generate(model, inputs, n)
    keep_all, keep_all_tokens = wrapped_generate(model, inputs, strategy, keep_all_options(options), n)
    pruned_ids, pruned_tokens = wrapped_generate(model, inputs, strategy, options, n)
    num_visual = [int(v) for v in (inputs["input_ids"] == IMAGE_ID).sum(1)]
    return {
        "max_new_tokens": n, "dense": dense, "keep_all": keep_all, "pruned": pruned_ids,
        "keep_all_equals_dense": keep_all == dense, "pruned_equals_dense": pruned_ids == dense,
        "keep_all_engaged": keep_all_tokens is not None,
        "pruned_reduced": pruned_tokens is not None and pruned_tokens[-1] != num_visual,
        "pruned_visual_tokens_last_layer": None if pruned_tokens is None else pruned_tokens[-1],
    }  # fmt: skip


def demo_flops(stats) -> dict[str, float]:
    """Paper-convention visual-token FLOPs of the demo prefill, summed over the batch."""
    return {"dense": sum(stats.dense_flops), "pruned": sum(stats.flops), "saved_percent": 100.0 * stats.flops_saved}


def llava_7b_flops(scheduler) -> dict[str, Any]:
    """The same schedule resolved on LLaVA-1.5-7B's 32 layers, costed with the paper's formula.

    This is the number comparable to the paper's table (3.82 dense vs. 1.78 TFLOPs for the
    default schedule); the demo model's own FLOPs are tiny and only show the same saving share.
    """
    n, d, m, layers = LLAVA_7B["visual_tokens"], LLAVA_7B["hidden"], LLAVA_7B["intermediate"], LLAVA_7B["layers"]
    schedule = scheduler.plan(layers, [n])
    tokens = [row[0] for row in schedule.tokens_per_layer()]
    dense, flops = stack_flops([n] * layers, d, m), stack_flops(tokens, d, m)
    return {
        "model": LLAVA_7B["name"], "num_layers": layers, "hidden": d, "intermediate": m, "visual_tokens": n,
        "layers": list(schedule.layers),
        "keep": [row[0] for row in schedule.keep],
        "dense_tflops": dense / 1e12, "pruned_tflops": flops / 1e12, "saved_percent": 100.0 * (1.0 - flops / dense),
    }  # fmt: skip


def pruned_prefill(model: nn.Module, inputs: dict, strategy: str, options: dict) -> dict[str, Any]:
    """One wrapped prefill: the handle's stats and the schedule's layers, plus the 7B projection."""
    with pruned(model, strategy, **options) as handle:
        prefill(model, inputs)
        stats = handle.stats
        return {
            "layers": list(handle.layers),
            "config": handle.config.model_dump() if handle.config is not None else None,
            "visual_tokens": {"dense": [list(stats.num_visual)] * len(stats.visual_tokens),
                              "pruned": [list(row) for row in stats.visual_tokens]},
            "flops_demo": demo_flops(stats),
            "flops_llava_1_5_7b": llava_7b_flops(handle.strategy.scheduler),
        }  # fmt: skip


def run(
    strategy: str = "pyramiddrop",
    options: dict[str, Any] | None = None,
    max_new_tokens: int = 8,
    repeats: int = 5,
    seed: int = 0,
    threads: int | None = 1,
    trained_questions: int = 64,
    picture: str | None = None,
) -> dict[str, Any]:
    """Everything the demo reports, as JSON-ready data (`tokenprune.tools.reports.render_demo` renders it).

    ``threads`` (torch intra-op threads, ``None`` = leave as is) defaults to 1: the demo's matrices
    are too small to gain much from threads, while threads spin-waiting for a core on a busy machine
    (CI, shared boxes) made the run up to 10x slower. The previous setting is restored afterwards.
    ``trained_questions`` > 0 adds the trained tiny VQA LLaVA part (`tokenprune.tools.vqa.demo`): that many
    test questions per dataset answered dense and wrapped, and the kept-patch picture at ``picture``.
    """
    options = dict(options or {})
    check_options(strategy, options)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads or previous)
    try:
        result = _measure(strategy, options, max_new_tokens, repeats, seed)
        if trained_questions:
            from .vqa.demo import run_trained

            result["trained"] = run_trained(strategy, options, trained_questions, picture)
        return result
    finally:
        torch.set_num_threads(previous)


def _measure(strategy: str, options: dict[str, Any], max_new_tokens: int, repeats: int, seed: int) -> dict[str, Any]:
    import transformers

    model = build_model(seed)
    inputs = build_inputs(model, seed)
    result: dict[str, Any] = {
        "strategy": get_registry().strategy(strategy).name,
        "options": options,
        "model": {"class": type(model).__name__, **DEMO_DIMS, "dtype": "float32", "attention": "sdpa",
                  "batch": int(inputs["input_ids"].shape[0]), "sequence_length": int(inputs["input_ids"].shape[1]),
                  "padding": "left", "weights": f"random N(0, {INIT_STD}), seed {seed}"},
        "versions": {"tokenprune": __version__, "torch": torch.__version__, "transformers": transformers.__version__},
    }  # fmt: skip
    result.update(pruned_prefill(model, inputs, strategy, options))
    result["prefill_seconds"] = time_prefills(model, inputs, strategy, options, repeats)
    result["threads"] = torch.get_num_threads()
    result["generation"] = generations(model, inputs, strategy, options, max_new_tokens)
    return result
