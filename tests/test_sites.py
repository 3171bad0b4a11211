"""Component sites: where each scorer, scheduler and reducer can act, and what wrap does with them.

Every component declares the sites it supports (``"llm"``, ``"encoder"``, ``"projector"``); a
strategy runs at a site its three components share. These tests pin the consequences users see:
ToMe on a VLM reduces inside its vision tower (never silently inside the LLM), the cost model and
benchmark refuse strategies they cannot cost, projector-side components compose by name, and
LLM-only components are refused on a bare vision encoder.
"""

from __future__ import annotations

import pytest
import torch

import tiny_models as tm
import tokenprune
from encoder_models import make_timm, pixels
from test_encoder_vlm import _llava
from tokenprune.tools.arguments import CliError
from tokenprune.tools.cli import flops_report
from tokenprune.components import (
    BipartiteMerge,
    ConstantRateScheduler,
    MaxMinDiversityDrop,
    NullScorer,
    SimilarityMerge,
    StageScheduler,
    TextRaterScorer,
    TopKDrop,
)
from tokenprune.vision_language import runs_in_llm_only


def test_every_registered_component_declares_known_sites():
    registry = tokenprune.get_registry()
    for spec in (s for kind in registry.components.values() for s in kind.values()):
        sites = spec.sites()
        assert sites and sites <= {"llm", "encoder", "projector"}, spec.name
    assert registry.component("scorer", "text_raters").sites() == {"llm"}
    assert registry.component("reducer", "grid_pool").sites() == {"projector"}
    assert registry.component("scheduler", "constant_rate").sites() == {"encoder"}


def test_strategy_sites_are_the_intersection():
    assert tokenprune.get_registry().build("pyramiddrop").sites == {"llm", "encoder"}
    assert tokenprune.get_registry().build("tome", r=2).sites == {"encoder"}
    assert tokenprune.get_registry().build("sparsevlm").sites == {"llm"}
    with pytest.raises(tokenprune.IncompatibleComponentsError, match="share no site"):
        tokenprune.Strategy(ConstantRateScheduler(2), TextRaterScorer(), TopKDrop())


def test_tome_on_a_vlm_merges_inside_the_vision_tower():
    """LLaVA-1.5 reads the penultimate tower block: ToMe schedules blocks 1..f-1 only, the LLM is untouched."""
    model = _llava(vision_layers=4)  # feature layer -2: the projector reads the output of block 2
    inputs = tm.llava_inputs(model, "mixed")
    with tokenprune.pruned(model, "tome", r=2, proportional_attention=False) as handle:
        assert isinstance(handle.strategy, tokenprune.VisionLanguageStrategy) and handle.strategy.llm is None
        logits = model(**inputs).logits
        per_layer = handle.tokens_per_layer()
        assert per_layer["llm"] is None
        vision = [row[0] for row in per_layer["vision"]]
        assert vision[:3] == [16, 14, 12]  # 17 tokens incl. [CLS]: block 1 and block 2 each lose 2 patches
        assert per_layer["projector"][0] == 12
        images = (inputs["input_ids"] == tm.IMAGE_ID).sum(1) // 16
        assert logits.shape[1] == int((inputs["attention_mask"].sum(1) - 4 * images).max())  # 4 of 16 placeholders go
        assert torch.isfinite(logits).all()


def test_flops_and_bench_refuse_strategies_that_do_not_act_in_the_llm():
    assert runs_in_llm_only(tokenprune.get_registry().build("pyramiddrop"))
    assert not runs_in_llm_only(tokenprune.get_registry().build("tome", r=4))
    assert not runs_in_llm_only(tokenprune.get_registry().build("divprune"))
    with pytest.raises(CliError, match="'tome' reduces tokens in the vision encoder or at the projector, not in the LLM"):
        flops_report("llava-1.5-7b", "tome", {"r": 4})
    from tokenprune.tools.bench import run as run_benchmark

    with pytest.raises(tokenprune.UnsupportedFeatureError, match="not in the LLM"):
        run_benchmark(strategy="tome", options={"r": 4})


def test_projector_components_compose_by_name_like_the_registered_strategy():
    model = _llava(vision_layers=2)
    inputs = tm.llava_inputs(model, "mixed")
    with tokenprune.pruned(model, "divprune", ratio=0.25):
        reference = model(**inputs).logits
    with tokenprune.pruned(model, scheduler="projector", scorer="null", reducer="diversity", ratio=0.25) as handle:
        assert isinstance(handle.strategy.projector.reducer, MaxMinDiversityDrop)
        assert torch.equal(model(**inputs).logits, reference)
    with tokenprune.pruned(model, scheduler="projector", scorer="null", reducer="diversity", budget=144):  # 144/576
        assert torch.equal(model(**inputs).logits, reference)


def test_llm_only_strategies_are_refused_on_a_bare_vision_encoder():
    case = make_timm()
    with pytest.raises(tokenprune.IncompatibleComponentsError, match="cannot run inside VisionTransformer.*'llm'"):
        tokenprune.wrap(case.module, "sparsevlm")
    assert not hasattr(case.module, "tokenprune")
    # a component that supports both sites runs there (PyramidDrop's stages with [CLS] attention)
    with tokenprune.pruned(case.module, Strategy_cls_attention()) as handle:
        case.run(pixels(batch=2))
        assert handle.stats.sequence_lengths[-1] < handle.stats.sequence_lengths[0]


def Strategy_cls_attention():  # noqa: N802
    from tokenprune.components import QueryAttentionScorer

    return tokenprune.Strategy(StageScheduler([2], [0.5]), QueryAttentionScorer(), TopKDrop())


def test_llm_merge_refuses_proportional_attention():
    """Inside the LLM a merged token attends as one token: asking for proportional attention is an error."""
    model = _llava(vision_layers=2)
    inputs = tm.llava_inputs(model, "single")
    strategy = tokenprune.Strategy(StageScheduler([2], [0.5]), NullScorer(), SimilarityMerge(proportional_attention=True))
    with tokenprune.pruned(model, strategy):
        with pytest.raises(tokenprune.UnsupportedFeatureError, match="proportional attention"):
            model(**inputs)
    with tokenprune.pruned(model, scheduler="pyramid", scorer="l2norm", reducer="merge", layer_list=[2], image_token_ratio_list=[0.5]):
        assert torch.isfinite(model(**inputs).logits).all()
    # ToMe's bipartite matching is a vision-side reducer: with it a strategy can only run in the tower
    assert tokenprune.Strategy(StageScheduler([2], [0.5]), NullScorer(), BipartiteMerge()).sites == {"encoder"}


def test_tome_budget_solves_a_constant_rate():
    """ToMe's ``ratio``: the smallest constant r that reaches the share, never below it, capped at 50% a block."""
    assert ConstantRateScheduler(ratio=0.5).keep_counts(576, 23)[-1] == 288  # 22 blocks, r = 14
    assert ConstantRateScheduler(ratio=1.0).keep_counts(100, 4) == (100, 100, 100)
    assert ConstantRateScheduler(ratio=0.9).keep_counts(100, 3) == (95, 90)
    assert ConstantRateScheduler(ratio=0.1).keep_counts(100, 3) == (55, 28)  # the 50% cap binds: 28, not 10
    config = tokenprune.get_registry().build("tome", ratio=0.5).config
    assert config.r is None and config.ratio == 0.5
    with pytest.raises(Exception, match="exactly one of r"):
        tokenprune.get_registry().build("tome", r=2, ratio=0.5)
