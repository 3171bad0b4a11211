"""The text reports of ``tokenprune demo``, ``flops`` and ``bench``, from the JSON-ready data they compute.

Rendering is kept apart from measuring (`tokenprune.tools.demo.run`, `tokenprune.tools.cli.flops_report`,
`tokenprune.tools.bench.run` return plain data), so the same numbers go to ``--json`` and the terminal.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from .tables import format_bytes, format_ms, format_speedup, format_table, layers_text, plural

__all__ = ["render_demo", "render_flops", "render_bench"]


def render_demo(result: dict[str, Any]) -> str:
    """The whole demo report: header, then one block per measurement."""
    sections = [_header(result), _tokens_section(result), _flops_section(result)]
    sections += [_timing_section(result), _generation_section(result)]
    if "trained" in result:
        from .vqa.demo import render_trained

        sections.append(render_trained(result["trained"], result["strategy"]))
    return "\n\n".join(sections)


def _header(r: dict[str, Any]) -> str:
    m, opts = r["model"], r["options"]
    shown = " ".join(f"{k}={json.dumps(v)}" for k, v in opts.items()) or "default options"
    return (
        f"tokenprune {r['versions']['tokenprune']} demo: {r['strategy']} on a tiny random-weight {m['class']}\n"
        f"  model     {m['layers']} layers, hidden {m['hidden']}, {m['heads']} heads / {m['kv_heads']} KV heads, "
        f"MLP {m['intermediate']}, {m['dtype']}, {m['attention']}, {m['weights']}\n"
        f"  batch     {m['batch']} prompts, {m['padding']}-padded to {m['sequence_length']} tokens, "
        f"{r['visual_tokens']['dense'][0][0]} visual tokens each (one 336x336 image)\n"
        f"  strategy  {r['strategy']} ({shown}): tokens drop before layers {layers_text(r['layers'])}"
    )


def _tokens_section(r: dict[str, Any]) -> str:
    dense, pruned = r["visual_tokens"]["dense"], r["visual_tokens"]["pruned"]
    digits = len(str(max(max(row) for row in dense)))
    rows: list[list[Any]] = [["layer", "dense", r["strategy"]]]
    for i, (d, p) in enumerate(zip(dense, pruned)):
        note = "<- reduced from this layer on" if i in r["layers"] else ""
        rows.append([i, _per_sample(d, digits), _per_sample(p, digits), note])
    samples = " / ".join(str(b) for b in range(len(dense[0])))
    return f"Visual tokens per decoder layer (samples {samples})\n" + format_table(rows)


def _per_sample(counts: Sequence[int], digits: int) -> str:
    """One cell for a batch: equal-width numbers, so the column lines up sample by sample."""
    return " / ".join(str(n).rjust(digits) for n in counts)


def _flops_section(r: dict[str, Any]) -> str:
    demo, big = r["flops_demo"], r["flops_llava_1_5_7b"]
    rows = [
        ["model", "layers", "drop before", "dense", r["strategy"], "saved"],
        [f"this demo model (batch of {r['model']['batch']})", r["model"]["layers"], layers_text(r["layers"]),
         f"{demo['dense'] / 1e9:.2f} GFLOPs", f"{demo['pruned'] / 1e9:.2f} GFLOPs", f"{demo['saved_percent']:.1f}%"],
        [f"{big['model']} (1 image)", big["num_layers"], layers_text(big["layers"]),
         f"{big['dense_tflops']:.2f} TFLOPs", f"{big['pruned_tflops']:.2f} TFLOPs", f"{big['saved_percent']:.1f}%"],
    ]  # fmt: skip
    title = "Visual-token prefill FLOPs (paper convention: sum over layers of 4nd^2 + 2n^2d + 3ndm)"
    note = (
        f"  ({big['model']} row: the same schedule resolved on its {big['num_layers']} layers, "
        f"d={big['hidden']}, m={big['intermediate']}, {big['visual_tokens']} visual tokens)"
    )
    return f"{title}\n{format_table(rows)}\n{note}"


def _timing_section(r: dict[str, Any]) -> str:
    t = r["prefill_seconds"]
    rows = [
        ["run", "prefill"],
        ["dense", f"{t['dense'] * 1e3:.1f} ms"],
        [r["strategy"], f"{t['wrapped'] * 1e3:.1f} ms", f"({t['dense'] / t['wrapped']:.2f}x)"],
    ]
    title = (
        f"Prefill wall time, median of {t['repeats']} runs: tiny random model on CPU "
        f"({plural(r['threads'], 'thread', 'threads')}), an illustration, not a benchmark"
    )
    return f"{title}\n{format_table(rows)}"


def _generation_section(r: dict[str, Any]) -> str:
    g = r["generation"]
    runs = [("dense", g["dense"]), ("keep-all (ratio=1.0)", g["keep_all"]), (r["strategy"], g["pruned"])]
    rows = [["run", *[f"sample {b} new ids" for b in range(len(g["dense"]))]]]
    rows += [[name, *(" ".join(map(str, ids)) for ids in batch)] for name, batch in runs]
    lines = [f"Greedy generation, {g['max_new_tokens']} new tokens", format_table(rows), ""]
    lines.append(f"keep-all generation == dense generation: {g['keep_all_equals_dense']}")
    lines.append(
        f"{r['strategy']} generation == dense generation: {g['pruned_equals_dense']} "
        "(may differ: random weights, fewer visual tokens)"
    )
    if not g["pruned_reduced"]:
        lines.append(f"WARNING: the wrapped generate() did not reduce visual tokens (prefill stats: "
                     f"{g['pruned_visual_tokens_last_layer']}); its ids are the dense model's.")  # fmt: skip
    return "\n".join(lines)


def render_flops(d: dict[str, Any]) -> str:
    """The ``tokenprune flops`` report: shape, per-stage table, totals in both conventions."""
    dims, s = d["dims"], d["strategy"]
    opts = " ".join(f"{k}={json.dumps(v)}" for k, v in d["options"].items()) or "default options"
    gqa = f"{dims['num_heads']} heads / {dims['num_kv_heads']} KV heads x {dims['head_dim']}"
    vocab = f", vocab {dims['vocab_size']}" if dims["vocab_size"] else ""
    counts = " -> ".join(str(v) for v in [d["visual_tokens"], *d["keep"]])
    header = (
        f"tokenprune flops: {s} on {d['model']} ({d['source']})\n"
        f"  model     {dims['num_layers']} layers, hidden {dims['hidden_size']}, MLP {dims['intermediate_size']}, {gqa}{vocab}\n"
        f"  prompt    {d['visual_tokens']} visual + {d['text_tokens']} text tokens; {d['new_tokens']} new tokens; "
        f"KV cache in {d['kv_cache_bytes']['dtype']}\n"
        f"  strategy  {s} ({opts}): tokens drop before layers {layers_text(d['layers'])}; visual tokens {counts}"
    )
    stage_rows: list[list[Any]] = [["layers", "visual tokens", "all tokens", "paper TFLOPs", "full TFLOPs"]]
    for st in d["stages"]:
        span = f"{st['first_layer']}-{st['last_layer']}" if st["layers"] > 1 else str(st["first_layer"])
        stage_rows.append(
            [span, st["visual_tokens"], st["tokens"], f"{st['paper_tflops']:.3f}", f"{st['full_tflops']:.3f}"]
        )
    stages = (
        f"Stages (layers that hold the same tokens)\n{format_table(stage_rows)}\n"
        f"  average visual tokens per layer: {d['avg_visual_tokens']:.1f} (dense {d['visual_tokens']})"
    )
    full, vis, dec, kv = d["full"], d["with_vision"], d["decode"], d["kv_cache_bytes"]
    paper_speedup = d["dense_tflops"] / d["pruned_tflops"] if d["pruned_tflops"] else None
    head = "last position" if full["lm_head_tokens"] == 1 else f"{full['lm_head_tokens']} positions"
    rows: list[list[Any]] = [["convention", "dense", s, "saving", "ideal speedup"]]
    rows.append(["paper: prefill, visual tokens only", f"{d['dense_tflops']:.2f}", f"{d['pruned_tflops']:.2f}",
                 f"{100 * d['saving']:.1f}%", format_speedup(paper_speedup)])  # fmt: skip
    rows.append([f"full: LLM prefill, all tokens, LM head on the {head}", f"{full['dense_tflops']:.2f}",
                 f"{full['pruned_tflops']:.2f}", f"{100 * full['saving']:.1f}%", format_speedup(full["ideal_speedup"])])  # fmt: skip
    if d["vision_tflops"]:
        rows.append(["full + vision encoder and projector", f"{vis['dense_tflops']:.2f}", f"{vis['pruned_tflops']:.2f}",
                     f"{100 * vis['saving']:.1f}%", format_speedup(vis["ideal_speedup"])])  # fmt: skip
    if d["new_tokens"]:
        rows.append([f"full: decode, {d['new_tokens']} new tokens", f"{dec['dense_tflops']:.4f}",
                     f"{dec['pruned_tflops']:.4f}", f"{100 * dec['saving']:.1f}%", format_speedup(dec["ideal_speedup"])])  # fmt: skip
    totals = "TFLOPs (1e12 multiply-accumulates, as the papers count; x2 for hardware FLOPs)\n" + format_table(rows)
    notes = (
        "  paper: sum over layers of 4nd^2 + 2n^2d + 3ndm, n = visual tokens (PyramidDrop Sec. 4.1).\n"
        "  full: q/k/v/o projections at their real widths, QK^T and AV over all keys, the MLP, for text and visual tokens."
    )
    when = "after prefill" + (f" and {d['new_tokens']} new tokens" if d["new_tokens"] else "")
    cache = (
        f"KV cache ({kv['dtype']}, batch 1) {when}: {format_bytes(kv['dense'])} dense, {format_bytes(kv['pruned'])} with {s} "
        f"({100 * kv['saving']:.1f}% less)"
    )
    return "\n\n".join([header, stages, totals + "\n" + notes, cache])


def render_bench(r: dict[str, Any]) -> str:
    """The ``tokenprune bench`` report."""
    sh, env, p = r["shape"], r["environment"], r["prefill"]
    opts = " ".join(f"{k}={json.dumps(v)}" for k, v in r["options"].items()) or "default options"
    header = (
        f"tokenprune bench: {r['strategy']} ({opts}) on a random-weight {sh['class']} '{sh['name']}'\n"
        f"  model     {sh['layers']} layers, hidden {sh['hidden']}, MLP {sh['intermediate']}, {sh['heads']} heads / "
        f"{sh['kv_heads']} KV heads, vision {sh['vision_layers']} x {sh['vision_hidden']}, {sh['parameters'] / 1e6:.0f}M "
        f"parameters, {sh['dtype']}, {sh['attention']}\n"
        f"  prompt    batch {sh['batch']} x ({sh['visual_tokens']} visual + {sh['text_tokens']} text tokens), "
        f"training adds {sh['answer_tokens']} answer tokens\n"
        f"  schedule  drop before layers {layers_text(r['layers'])}: visual tokens "
        f"{' -> '.join(str(v) for v in [sh['visual_tokens'], *r['schedule']['keep']])} "
        f"(avg {r['schedule']['avg_visual_tokens']:.1f})\n"
        f"  machine   {env['device']}: {env.get('gpu') or env.get('cpu')}, {env['cpu_count']} CPUs, "
        f"{plural(env['torch_threads'], 'torch thread', 'torch threads')} "
        f"(OMP_NUM_THREADS={env['OMP_NUM_THREADS']}); torch {env['torch']}, transformers {env['transformers']}\n"
        f"  protocol  {r['protocol']['warmup_pairs']} warm-up pair(s), then {r['protocol']['repeats']} alternating "
        "dense/wrapped pairs per phase; medians"
    )
    rows: list[list[Any]] = [["metric", "dense", "wrapped", "speedup", "pair median", "FLOPs-ideal", "of ideal"]]

    def timed(name: str, dense: float, wrapped: float, speedup: float, pair: float | None, ideal: float) -> None:
        rows.append([name, format_ms(dense), format_ms(wrapped), format_speedup(speedup), format_speedup(pair), format_speedup(ideal),
                     f"{100 * speedup / ideal:.0f}%"])  # fmt: skip

    timed("prefill, whole forward", p["dense_s"], p["wrapped_s"], p["speedup"], p.get("pair_speedup_median"),
          p["ideal_speedup"])  # fmt: skip
    timed("prefill, language model only", p["llm_dense_s"], p["llm_wrapped_s"], p["llm_speedup"],
          p.get("llm_pair_speedup_median"), p["llm_ideal_speedup"])  # fmt: skip
    if "decode" in r:
        d = r["decode"]
        timed(f"decode, per token ({d['new_tokens']} new)", d["dense_s_per_token"], d["wrapped_s_per_token"],
              d["speedup"], d.get("pair_speedup_median"), d["ideal_speedup"])  # fmt: skip
    if "train" in r:
        t = r["train"]
        timed("training step (fwd + bwd)", t["dense_s"], t["wrapped_s"], t["speedup"], t.get("pair_speedup_median"),
              t["ideal_speedup"])  # fmt: skip
    kv = r["kv_cache_bytes"]
    rows.append(["KV cache after prefill", format_bytes(kv["dense"]), format_bytes(kv["wrapped"]), format_speedup(kv["ratio"]), "-",
                 format_speedup(kv["model_ratio"]), f"{100 * kv['ratio'] / kv['model_ratio']:.0f}%"])  # fmt: skip
    for phase, mem in r.get("memory", {}).items():
        if isinstance(mem, dict) and mem.get("dense_bytes"):
            rows.append([f"peak memory, {phase}", format_bytes(mem["dense_bytes"]), format_bytes(mem["wrapped_bytes"]),
                         format_speedup(mem["ratio"]), "-", "-", "-"])  # fmt: skip
            grads = mem.get("parameter_grad_bytes")
            if grads:
                rows.append([f"  without parameter grads ({format_bytes(grads)})", format_bytes(mem["dense_bytes"] - grads),
                             format_bytes(mem["wrapped_bytes"] - grads), format_speedup(mem["activation_ratio"]), "-", "-", "-"])  # fmt: skip
    o = r["overhead"]
    overhead = (
        f"Engine overhead (time inside tokenprune's hooks, wrapped prefill): {format_ms(o['hook_s'])} = "
        f"{100 * o['fraction_of_dense_prefill']:.2f}% of the dense prefill "
        f"({100 * o['fraction_of_dense_llm_prefill']:.2f}% of the dense language-model prefill); "
        f"reduction layers {format_ms(o['by_group_s'].get('reduction_layers', 0.0))}"
    )
    title = "Dense vs. wrapped (speedup = dense / wrapped; FLOPs-ideal from tokenprune.cost, full convention)"
    lines = [header, "", title, format_table(rows), "", overhead]
    if "length_scaling" in r:
        ls = r["length_scaling"]
        per_token = ", ".join(f"{n}: {1e3 * t:.3g} ms" for n, t in ls["seconds_per_token"].items())
        lines.append(
            f"Length scaling (dense language model alone, time per token at each stage length: {per_token}): "
            f"achievable LLM prefill speedup {ls['achievable_speedup']:.2f}x; measured "
            f"{p['llm_speedup']:.2f}x = {100 * p['llm_speedup'] / ls['achievable_speedup']:.0f}% of it"
        )
    if "train" in r:
        lines.append(f"Training step time reduced by {100 * r['train']['time_reduction']:.1f}%")
    return "\n".join(lines)
