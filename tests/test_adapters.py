"""Family-specific adapter behaviour beyond the shared exactness matrix."""

from __future__ import annotations

import types

import pytest
import torch
from torch import nn

import tiny_models as tm
import tiny_models_qwen_internvl as tmq
import tokenprune
from exactness import masked_reference_hooks


def test_qwen3_vl_first_reduction_must_follow_its_deepstack_layers():
    model = tmq.make_qwen3_vl(deepstack=3)  # the real Qwen3-VL count
    inputs = tmq.qwen3_vl_inputs(model, layout="mixed")
    with pytest.raises(tokenprune.ScheduleError, match=r"must be >= 3 \(its first 3 layers receive deepstack"):
        tokenprune.wrap(model, "pyramiddrop")  # [2, 4, 6] on 8 layers
    assert not hasattr(model, "tokenprune")
    tokenprune.wrap(model, "pyramiddrop", layer_list=[3, 5, 7])
    logits = model(**inputs).logits
    selection = model.tokenprune.selection()
    idx, valid = model.tokenprune.kept_positions()
    tokenprune.unwrap(model)
    handles = masked_reference_hooks(model, selection, inputs["attention_mask"])
    try:
        reference = model(**inputs).logits
    finally:
        for h in handles:
            h.remove()
    ref = reference.gather(1, idx.unsqueeze(-1).expand(-1, -1, reference.shape[-1]))
    assert (logits - ref).abs().amax(-1)[valid].max().item() <= 1e-10


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen2_5_vl", "internvl_qwen2"])
def test_span_delimiters_are_text_and_always_kept(family):
    """Qwen's <|vision_start|>/<|vision_end|> and InternVL's <img>/</img> are text, never dropped."""
    factory, build = tm.FAMILIES[family]
    model = factory()
    layout = "video" if family.startswith("qwen") else "multi_tile"
    inputs = build(model, layout=layout)
    ids = inputs["input_ids"]
    with tokenprune.pruned(model, "pyramiddrop", ratio=0.25) as handle:
        model(**inputs)
        idx, valid = handle.kept_positions()
        stats = handle.stats
    visual = torch.isin(ids, torch.tensor(tm.VISUAL_IDS[family]))
    assert stats.num_visual == visual.sum(1).tolist()
    delimiters = torch.isin(ids, torch.tensor([tmq.VISION_START_ID, tmq.VISION_END_ID])) & inputs["attention_mask"].bool()
    for b in range(ids.shape[0]):
        kept = set(idx[b][valid[b]].tolist())
        assert set(delimiters[b].nonzero().flatten().tolist()) <= kept
        assert stats.visual_tokens[-1][b] == int(stats.num_visual[b] * 0.25**3)


def test_remote_code_internvl_gets_pointed_to_the_hf_checkpoint():
    class RemoteInternVL(nn.Module):
        def __init__(self):
            super().__init__()
            self.config = types.SimpleNamespace(model_type="internvl_chat")

    with pytest.raises(tokenprune.UnsupportedModelError, match=r"use|load the HF-native '-hf' checkpoint"):
        tokenprune.wrap(RemoteInternVL())


def test_qwen_compact_positions_are_refused_at_wrap():
    model = tmq.make_qwen2_vl()
    with pytest.raises(tokenprune.UnsupportedFeatureError, match="positions='compact' is undefined"):
        tokenprune.wrap(model, "pyramiddrop", positions="compact")
    assert not hasattr(model, "tokenprune")
