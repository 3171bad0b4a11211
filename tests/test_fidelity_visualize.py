"""`tokenprune.tools.fidelity` and `tokenprune.tools.visualize` on a tiny random model of every supported family.

Fidelity must be exact (KL 0, full agreement) for a keep-everything schedule and must see a
difference when most tokens go; the kept-patch grids must match the handle's own selection.
"""

from __future__ import annotations

import pytest
import torch

import tiny_models as tm
from tokenprune import pruned
from tokenprune.tools.fidelity import compare_logits, fidelity
from tokenprune.tools.visualize import draw_stages, kept_grids


def _model_and_inputs(family: str):
    model = tm.FAMILIES[family][0](attn="sdpa", dtype=torch.float32)
    return model, tm.FAMILIES[family][1](model, layout="single")


@pytest.mark.parametrize("family", list(tm.FAMILIES))
def test_fidelity_keep_all_is_exact_and_pruning_differs(family):
    model, inputs = _model_and_inputs(family)
    same = fidelity(model, [inputs], "pyramiddrop", {"ratio": 1.0}, max_new_tokens=3)
    assert same["samples"] == inputs["input_ids"].shape[0]
    assert same["kl"] == 0.0 and same["top1_agreement"] == 1.0 and same["exact_match"] == 1.0
    assert same["flops_saved"] == 0.0
    cut = fidelity(model, [inputs], "pyramiddrop", {"ratio": 0.1, "layer_list": [3]}, max_new_tokens=3)
    assert cut["kl"] > 1e-6  # random peaky weights: dropping 90% of the image must move the distribution
    assert cut["flops_saved"] > 0.5
    assert not hasattr(model, "tokenprune")  # unwrapped afterwards


def test_compare_logits_values():
    dense = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    wrapped = torch.tensor([[2.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    out = compare_logits(dense, wrapped)
    assert out["kl"][0] == pytest.approx(0.0, abs=1e-12) and out["kl"][1] > 0.1
    assert out["top1"] == [1.0, 0.0]


def test_fidelity_needs_inputs():
    model, _ = _model_and_inputs("llava")
    with pytest.raises(ValueError, match="no inputs"):
        fidelity(model, [], "pyramiddrop")


@pytest.mark.parametrize("family", list(tm.FAMILIES))
def test_kept_grids_follow_the_selection(family, tmp_path):
    model, inputs = _model_and_inputs(family)
    visual = torch.isin(inputs["input_ids"][0], torch.tensor(tm.VISUAL_IDS[family]))
    n = int(visual.sum())
    rows = next(r for r in range(int(n**0.5), 0, -1) if n % r == 0)
    with pruned(model, "pyramiddrop", ratio=0.5, layer_list=[3, 5]) as handle:
        with torch.no_grad():
            model(**inputs)
        selection = handle.selection()
        layers = handle.num_layers
    stages = kept_grids(selection, visual, (rows, n // rows), layers)
    assert [s["kept"] for s in stages] == [n, int(n * 0.5), int(n * 0.25)]
    assert [s["first_layer"] for s in stages] == [0, 3, 5]
    assert stages[-1]["last_layer"] == layers - 1
    assert all(s["mask"].sum() == s["kept"] for s in stages)
    # a later stage keeps a subset of the earlier one
    assert not (stages[2]["mask"] & ~stages[1]["mask"]).any()
    path = tmp_path / "kept.png"
    draw_stages(torch.randint(0, 255, (3, 32, 32), dtype=torch.uint8), stages, str(path), "test")
    assert path.stat().st_size > 1000
    with pytest.raises(ValueError, match="visual tokens"):
        kept_grids(selection, visual, (rows + 1, n // rows), layers)
