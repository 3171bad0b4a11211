"""More exactness cells for the LLM-side zoo: eager attention in float32, and training.

`test_exactness_zoo.py` runs every strategy in SDPA float64 (identity, cache, batch invariance,
masked reference). Here every dropping strategy of that matrix also runs

1. with eager attention in float32 (the masked reference within the float32 tolerance of the
   PyramidDrop matrix), so scores computed for eager kernels and its float32 softmax are covered;
2. in training mode (labels, SDPA float64): the loss and every gradient equal the full-length model
   with the dropped tokens masked as keys, on the same selection, and gradients reach the tower.
"""

from __future__ import annotations

import pytest
import torch

import tiny_models as tm
import tokenprune
from exactness import masked_reference_hooks, record
from test_exactness import BACKENDS, _loss_and_grads, _masked_reference, _model, max_diff
from test_exactness_zoo import DROP_CELLS, _wrap


@pytest.fixture
def model_for():
    used = []

    def get(family: str, attn: str):
        model = _model(family, attn)
        used.append(model)
        return model

    yield get
    for model in used:
        if isinstance(getattr(model, "tokenprune", None), tokenprune.WrapHandle):
            tokenprune.unwrap(model)
        model.eval()


@pytest.mark.parametrize("name, family", DROP_CELLS)
def test_eager_float32_dropping_equals_masked_reference(model_for, name, family):
    model = model_for(family, "eager")
    tol = BACKENDS["eager"][1]
    inputs = tm.FAMILIES[family][1](model, layout="mixed")
    _wrap(model, name)
    logits = model(**inputs).logits
    selection = model.tokenprune.selection()
    idx, valid = model.tokenprune.kept_positions()
    tokenprune.unwrap(model)
    reference = _masked_reference(model, inputs, selection).logits
    ref = reference.gather(1, idx.unsqueeze(-1).expand(-1, -1, reference.shape[-1]))
    diff = (logits - ref).abs().amax(-1)[valid]
    assert diff.numel() > 0 and record("zoo masked reference", f"{name}-{family}-eager-mixed", diff.max().item()) <= tol
    plain = model(**inputs).logits.gather(1, idx.unsqueeze(-1).expand(-1, -1, reference.shape[-1]))
    assert (logits - plain).abs().amax(-1)[valid].max().item() > 10 * tol  # the check has teeth


@pytest.mark.parametrize("name, family", DROP_CELLS)
def test_training_matches_masked_reference(model_for, name, family):
    model = model_for(family, "sdpa")
    tol = BACKENDS["sdpa"][1]
    inputs = tm.add_labels(tm.FAMILIES[family][1](model, layout="mixed"))
    model.train()
    _wrap(model, name)
    loss, grads = _loss_and_grads(model, inputs)
    selection = model.tokenprune.selection()
    assert len(selection) > 1, "the strategy removed nothing in training"
    tokenprune.unwrap(model)
    handles = masked_reference_hooks(model, selection, inputs["attention_mask"])
    try:
        ref_loss, ref_grads = _loss_and_grads(model, inputs)
    finally:
        for h in handles:
            h.remove()
    cell = f"{name}-{family}-sdpa-mixed"
    assert torch.isfinite(loss)
    delta = record("zoo training loss", cell, abs(loss.item() - ref_loss.item()))
    assert delta <= 1e-6 * max(1.0, abs(ref_loss.item()))  # the loss upcasts logits to float32
    assert grads.keys() == ref_grads.keys()
    scale = max(g.abs().max().item() for g in ref_grads.values())
    worst = record("zoo training grads", cell, max(max_diff(grads[n], ref_grads[n]) for n in grads))
    assert worst <= max(tol, 1e-6) * max(1.0, scale)
    vision = [g for n, g in grads.items() if "language_model" not in n and "lm_head" not in n]
    assert vision and sum(g.abs().sum().item() for g in vision) > 0
