"""How closely a strategy reproduces the dense model: next-token KL, top-1 agreement, exact match.

Works on any model an adapter supports (a user's real checkpoint on a GPU included): it needs only
batches of ready model inputs, as the model's processor makes them. Each batch runs greedy
`generate` twice, dense and wrapped, with the per-step logits kept, so the first step is exactly the
prefill the strategy changes and the rest shows whether the answer survives decoding:

- ``kl``: KL(dense || wrapped) of the first generated token's distribution, in nats (float64);
- ``top1_agreement``: share of samples whose first greedy token is the same;
- ``exact_match``: share of samples whose whole generated sequence is the same;
- ``token_agreement``: share of generated positions (up to the first difference in length) that agree.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from ..api import pruned

__all__ = ["fidelity", "compare_logits"]


def compare_logits(dense: torch.Tensor, wrapped: torch.Tensor) -> dict[str, list[float]]:
    """Per-row KL(dense || wrapped) in nats and top-1 agreement of two ``(B, V)`` logit tensors."""
    p = torch.log_softmax(dense.double(), -1)
    q = torch.log_softmax(wrapped.double(), -1)
    kl = (p.exp() * (p - q)).sum(-1).clamp(min=0.0)
    same = dense.argmax(-1) == wrapped.argmax(-1)
    return {"kl": kl.tolist(), "top1": same.double().tolist()}


@torch.inference_mode()
def _generate(model: nn.Module, inputs: dict[str, Any], max_new_tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
    out = model.generate(
        **inputs, max_new_tokens=max_new_tokens, do_sample=False, output_logits=True, return_dict_in_generate=True
    )
    new = out.sequences[:, inputs["input_ids"].shape[1] :]
    return new, out.logits[0]


def fidelity(
    model: nn.Module,
    batches: Iterable[dict[str, Any]],
    strategy: Any = "pyramiddrop",
    options: dict[str, Any] | None = None,
    max_new_tokens: int = 8,
) -> dict[str, Any]:
    """Compare ``strategy`` (with ``options``) to the dense ``model`` on every batch of inputs.

    Args:
        model: an unwrapped supported model (it is wrapped temporarily, then restored).
        batches: dicts of model inputs (``input_ids``, ``attention_mask``, ``pixel_values``, ...).
        strategy: a registered name or a `Strategy` object.
        options: the strategy's options.
        max_new_tokens: greedy tokens per sample.

    Returns:
        Means (``kl``, ``top1_agreement``, ``exact_match``, ``token_agreement``, ``flops_saved``),
        the ``samples`` count, and ``per_sample`` rows (kl, top1, exact, dense/wrapped token ids).
    """
    options = dict(options or {})
    rows: list[dict[str, Any]] = []
    flops = dense_flops = 0.0
    for inputs in batches:
        dense_ids, dense_logits = _generate(model, inputs, max_new_tokens)
        with pruned(model, strategy, **options) as handle:
            wrapped_ids, wrapped_logits = _generate(model, inputs, max_new_tokens)
            stats = handle.stats
        if stats is not None:
            flops += sum(stats.flops)
            dense_flops += sum(stats.dense_flops)
        first = compare_logits(dense_logits, wrapped_logits)
        for b in range(dense_ids.shape[0]):
            d, w = dense_ids[b].tolist(), wrapped_ids[b].tolist()
            agree = sum(x == y for x, y in zip(d, w)) / max(min(len(d), len(w)), 1)
            rows.append({"kl": first["kl"][b], "top1": bool(first["top1"][b]), "exact": d == w,
                         "token_agreement": agree, "dense_ids": d, "wrapped_ids": w})  # fmt: skip
    n = len(rows)
    if n == 0:
        raise ValueError("fidelity() got no inputs: pass at least one batch of model inputs.")
    return {
        "samples": n,
        "kl": sum(r["kl"] for r in rows) / n,
        "kl_max": max(r["kl"] for r in rows),
        "top1_agreement": sum(r["top1"] for r in rows) / n,
        "exact_match": sum(r["exact"] for r in rows) / n,
        "token_agreement": sum(r["token_agreement"] for r in rows) / n,
        "flops_saved": 1.0 - flops / dense_flops if dense_flops else 0.0,
        "max_new_tokens": max_new_tokens,
        "per_sample": rows,
    }
