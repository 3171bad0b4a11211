"""What defines each zoo strategy, the budget solver, and mix-and-match by component name.

* FastV drops once, after layer K, by the attention each token receives from all tokens of layer K
  (1-based), checked against eager attention maps;
* SparseVLM-style raters are text tokens after the image, and its scores are their mean eager attention;
* DART keeps its pivots (the visual tokens with the largest key norm) and exactly its budget;
* random is seeded and deterministic; uniform keeps an even stride;
* budgets: the community's PyramidDrop λ for 192/128/64 tokens, FastV's "equivalent" keep share;
* wrap(model, scheduler=..., scorer=..., reducer=...) by name, with clear errors for bad combinations.
"""

from __future__ import annotations

import types

import pytest
import torch

import tokenprune
import tiny_models as tm
from exactness import last_positions
from test_exactness import _model
from tokenprune import Strategy
from tokenprune.budget import Budget, average_tokens, flops_share
from tokenprune.components import (
    KeyNormScorer,
    PivotDedupDrop,
    ReceivedAttentionScorer,
    StageScheduler,
    TextRaterScorer,
    TopKDrop,
)
from tokenprune.interfaces import Reduction, Scorer
from tokenprune.registry import Registry


class Recorder(Scorer):
    """Delegates, and keeps what the inner scorer returned plus the context's slots."""

    def __init__(self, inner):
        self.inner, self.seen = inner, {}

    def score(self, ctx):
        out = self.inner.score(ctx)
        self.seen[ctx.layer_index] = (out.clone(), ctx.positions.clone(), ctx)
        return out


def _visual_positions(model, inputs):
    ids = tokenprune.get_registry().adapter_for(model).locate(model).visual_token_ids
    return torch.isin(inputs["input_ids"], torch.tensor(ids))


# -- FastV ------------------------------------------------------------------------------------
def test_fastv_drops_once_after_layer_k():
    model = _model("llava", "sdpa")
    inputs = tm.llava_inputs(model, layout="mixed")
    with tokenprune.pruned(model, "fastv", k=3, r=0.75) as handle:
        model(**inputs)
        stages = handle.selection()
        counts = handle.stats.visual_tokens
    assert [s[0] for s in stages] == [0, 3]  # one reduction, at the first layer after K
    n = handle.stats.num_visual
    assert counts[:3] == [n] * 3 and all(row == [int(v * 0.25) for v in n] for row in counts[3:])


@pytest.mark.parametrize("family", ["llava", "qwen2_vl"])
def test_fastv_score_is_attention_received_from_all_tokens_of_layer_k(family):
    model = _model(family, "eager")
    inputs = tm.FAMILIES[family][1](model, layout="left_padded")
    recorder = Recorder(ReceivedAttentionScorer(layer="previous"))
    with tokenprune.pruned(model, Strategy(StageScheduler([2], [0.5]), recorder, TopKDrop())):
        model(**inputs)
    score, positions, _ = recorder.seen[2]
    attn = model(**inputs, output_attentions=True).attentions[1].double()  # layer K = 2 (1-based) = index 1
    mask = inputs["attention_mask"].bool()
    expected = (attn.mean(1) * mask[:, :, None]).sum(1) / mask.sum(1, keepdim=True)  # mean over real rows
    visual = _visual_positions(model, inputs)
    assert torch.equal(positions, torch.arange(positions.shape[1]).expand_as(positions))
    assert (score - expected).abs()[visual].max().item() <= 1e-6


# -- SparseVLM-style ---------------------------------------------------------------------------
def test_sparsevlm_raters_are_text_after_the_image_and_scores_their_attention():
    model = _model("llava", "eager")
    inputs = tm.llava_inputs(model, layout="single")
    recorder = Recorder(TextRaterScorer(layer="previous"))
    with tokenprune.pruned(model, Strategy(StageScheduler([3], [0.5]), recorder, TopKDrop())):
        model(**inputs)
    score, _, ctx = recorder.seen[3]
    slots, weight = recorder.inner.raters(ctx)
    visual = _visual_positions(model, inputs)[0]
    last_visual = int(visual.nonzero().max())
    raters = slots[0][weight[0] > 0]
    assert len(raters) >= 1 and bool((raters > last_visual).all()) and not bool(visual[raters].any())
    assert torch.allclose(weight[0][weight[0] > 0].double(), torch.full((len(raters),), 1.0 / len(raters), dtype=torch.float64))
    attn = model(**inputs, output_attentions=True).attentions[2][0].double().mean(0)  # the layer below layer 3
    expected = attn[raters].mean(0)
    assert (score[0] - expected).abs()[visual].max().item() <= 1e-6


def test_instruction_query_is_the_mean_attention_of_the_text_after_the_image():
    from tokenprune.components import TextAttentionScorer

    model = _model("qwen2_vl", "eager")
    inputs = tm.FAMILIES["qwen2_vl"][1](model, layout="left_padded")
    recorder = Recorder(TextAttentionScorer())
    with tokenprune.pruned(model, Strategy(StageScheduler([2], [0.5]), recorder, TopKDrop())):
        model(**inputs)
    score = recorder.seen[2][0]
    attn = model(**inputs, output_attentions=True).attentions[2].double().mean(1)  # the reduction layer itself
    visual = _visual_positions(model, inputs)
    for b in range(visual.shape[0]):
        last_visual = int(visual[b].nonzero().max())
        rows = [i for i in range(last_visual + 1, visual.shape[1]) if inputs["attention_mask"][b, i]]
        assert rows and rows[-1] == int(last_positions(inputs["attention_mask"])[b])
        expected = attn[b, rows].mean(0)
        assert (score[b] - expected).abs()[visual[b]].max().item() <= 1e-6


# -- DART -------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", ["llava", "qwen2_vl"])
def test_dart_keeps_its_pivots_and_exactly_its_budget(family):
    model = _model(family, "sdpa")
    inputs = tm.FAMILIES[family][1](model, layout="mixed")
    strategy = tokenprune.get_registry().build("dart", keep=0.4)
    recorder = Recorder(strategy.scorer)
    with tokenprune.pruned(model, Strategy(strategy.scheduler, recorder, strategy.reducer)) as handle:
        model(**inputs)
        (_, idx, valid) = handle.selection()[1]
        counts = handle.stats.visual_tokens[2]
        num_visual = handle.stats.num_visual
    scores, positions, _ = recorder.seen[2]
    visual = _visual_positions(model, inputs)
    assert counts == [int(n * 0.4) for n in num_visual]
    for b in range(visual.shape[0]):
        if not visual[b].any():
            continue
        norms = scores[b].masked_fill(~visual[b], float("-inf"))
        pivots = torch.sort(norms, descending=True, stable=True).indices[:4]
        assert set(pivots.tolist()) <= set(idx[b][valid[b]].tolist()), f"row {b}: a pivot was dropped"


def test_dart_reducer_prefers_tokens_unlike_the_pivot():
    """A constructed example: token 0 is the pivot; tokens 1-3 copy it; tokens 4-5 are orthogonal."""
    hidden = torch.tensor([[[1.0, 0, 0], [1, 0, 0], [1, 0.01, 0], [1, 0, 0.01], [0, 1, 0], [0, 0, 1], [1, 1, 1]]])
    visual = torch.tensor([[True] * 6 + [False]])
    ctx = types.SimpleNamespace(hidden=hidden, visual=visual, valid=torch.ones_like(visual), query=torch.tensor([[6]]))
    scores = torch.tensor([[9.0, 1, 1, 1, 1, 1, 0]])
    keep = PivotDedupDrop(image_pivots=1, text_pivots=0).reduce(ctx, scores, visual, torch.tensor([3])).keep
    assert keep[0].nonzero().squeeze(1).tolist() == [0, 4, 5]


# -- random and uniform -----------------------------------------------------------------------
def test_random_is_seeded_and_deterministic():
    model = _model("llava", "sdpa")
    inputs = tm.llava_inputs(model, layout="mixed")

    def kept(**options):
        with tokenprune.pruned(model, "random", keep=0.5, **options) as handle:
            model(**inputs)
            _, idx, valid = handle.selection()[1]
        return [idx[b][valid[b]].tolist() for b in range(idx.shape[0])]

    first = kept(seed=1)
    assert kept(seed=1) == first  # same seed, same selection
    assert kept(seed=2) != first  # another seed, another draw
    visual = _visual_positions(model, inputs)
    # not simply the first or the last half of the visual tokens
    row = 1
    vis = visual[row].nonzero().squeeze(1).tolist()
    chosen = [p for p in first[row] if p in vis]
    assert chosen != vis[: len(chosen)] and chosen != vis[-len(chosen):]


def test_uniform_keeps_an_even_stride():
    model = _model("qwen2_vl", "sdpa")
    inputs = tm.FAMILIES["qwen2_vl"][1](model, layout="mixed")
    with tokenprune.pruned(model, "uniform", layer=2, keep=0.25) as handle:
        model(**inputs)
        _, idx, valid = handle.selection()[1]
    visual = _visual_positions(model, inputs)
    for b in range(visual.shape[0]):
        vis = visual[b].nonzero().squeeze(1)
        if len(vis) == 0:
            continue
        k = int(len(vis) * 0.25)
        expected = vis[torch.linspace(0, len(vis) - 1, k, dtype=torch.float64).round().long()].tolist()
        assert [p for p in idx[b][valid[b]].tolist() if p in set(vis.tolist())] == expected
        assert expected[0] == vis[0] and expected[-1] == vis[-1]


def test_pyramiddrop_uniform_first_stage_then_attention():
    model = _model("llava", "sdpa")
    inputs = tm.llava_inputs(model, layout="single")
    with tokenprune.pruned(model, "pyramiddrop", scoring="uniform_then_attention") as handle:
        model(**inputs)
        stages = handle.selection()
    visual = _visual_positions(model, inputs)[0].nonzero().squeeze(1)
    first = [p for p in stages[1][1][0].tolist() if p in set(visual.tolist())]
    k = len(visual) // 2
    assert first == visual[torch.linspace(0, len(visual) - 1, k, dtype=torch.float64).round().long()].tolist()
    with tokenprune.pruned(model, "pyramiddrop") as handle:  # the plain one ranks by attention instead
        model(**inputs)
        assert handle.selection()[1][1][0].tolist() != stages[1][1][0].tolist()


# -- budgets ----------------------------------------------------------------------------------
@pytest.mark.parametrize("budget, lam", [(192, 0.581), (128, 0.437), (64, 0.196)])
def test_budget_reproduces_community_pyramiddrop_lambdas(budget, lam):
    config = tokenprune.get_registry().build("pyramiddrop", layer_list=[2, 8, 16, 24], budget=budget).config
    assert round(config.lam(), 3) == lam
    assert average_tokens([2, 8, 16, 24], config.ratios(), 32, 576) == pytest.approx(budget, abs=1e-6)
    # and the printed λ gives the budget to within a token (the research note's arithmetic)
    assert average_tokens([2, 8, 16, 24], [lam**s for s in range(1, 5)], 32, 576) == pytest.approx(budget, abs=0.5)


def test_fastv_budget_is_the_equivalent_average():
    for budget, kept in [(192, 166.4), (128, 98.13), (64, 29.87)]:
        keep = tokenprune.get_registry().build("fastv", budget=budget).config.keep_ratio()
        assert keep * 576 == pytest.approx(kept, abs=0.01)  # (32 B - 2 * 576) / 30
    with pytest.raises(ValueError, match="out of reach"):
        tokenprune.get_registry().build("fastv", budget=30)  # K = 2 alone keeps 36 per layer on average


def test_flops_budget_and_other_strategies():
    registry = tokenprune.get_registry()
    config = registry.build("pyramiddrop", budget_flops=0.5).config
    dims = Budget(flops=0.5).dims
    assert config.boundaries() == [0.25, 0.5, 0.75]  # fractions resolve on the reference depth: 8, 16, 24
    assert flops_share([8, 16, 24], config.ratios(), dims, 576) == pytest.approx(0.5, abs=1e-9)
    for name in ("dart", "random", "uniform"):
        keep = registry.build(name, budget=128).config.keep_ratio()
        assert average_tokens([2], [keep], 32, 576) == pytest.approx(128, abs=1e-6)
    sparse = registry.build("sparsevlm", budget=128).config
    assert average_tokens(sparse.layer_list, sparse.ratios(), 32, 576) == pytest.approx(128, abs=1e-6)
    with pytest.raises(ValueError, match="not both"):
        registry.build("pyramiddrop", budget=128, ratio=0.5)


# -- mix and match ----------------------------------------------------------------------------
def test_wrap_by_component_names():
    model = _model("llava", "sdpa")
    inputs = tm.llava_inputs(model, layout="mixed")
    with tokenprune.pruned(model, scheduler="pyramid", scorer="l2norm", reducer="topk", ratio=0.5) as handle:
        model(**inputs)
        assert handle.strategy.name == "pyramid+l2norm+topk"
        assert handle.config.scheduler_options == {"ratio": 0.5}
        assert type(handle.strategy.scorer).__name__ == "L2NormScorer"
        assert handle.layers == (2, 4, 6)
    with tokenprune.pruned(model, scheduler="once", scorer="random", reducer="topk", layer=3, keep=0.5, seed=4) as handle:
        model(**inputs)
        assert handle.layers == (3,) and handle.strategy.scorer.seed == 4
    assert type(tokenprune.get_registry().compose(scorer="l2norm").reducer).__name__ == "TopKDrop"  # defaults


def test_bad_combinations_fail_at_wrap_time():
    model = _model("llava", "sdpa")
    with pytest.raises(KeyError, match="Unknown scorer 'l2nrom'. Did you mean 'l2norm'"):
        tokenprune.wrap(model, scorer="l2nrom")
    with pytest.raises(TypeError, match="Unknown option.*'seed'.*Valid options"):
        tokenprune.wrap(model, scorer="l2norm", seed=3)
    with pytest.raises(TypeError, match="not both"):
        tokenprune.wrap(model, "pyramiddrop", scorer="l2norm")
    assert not hasattr(model, "tokenprune")

    class EncoderScorer(Scorer):
        sites = frozenset({"encoder"})

        def score(self, ctx):
            raise AssertionError("never called")

    plugin = types.SimpleNamespace(
        tokenprune_register_components=tokenprune.hookimpl(
            lambda register: register("scorer", "cls_attention", tokenprune.StrategyConfig, lambda c: EncoderScorer())
        )
    )
    registry = Registry.load(plugins=[plugin])
    with pytest.raises(tokenprune.IncompatibleComponentsError, match="EncoderScorer acts at 'encoder'; PivotDedupDrop acts at 'llm'"):
        registry.compose(scheduler="pyramid", scorer="cls_attention", reducer="dedup")
    with pytest.raises(tokenprune.IncompatibleComponentsError, match="TextRaterScorer acts at 'llm'.*GridPool acts at 'projector'"):
        tokenprune.wrap(model, scorer="text_raters", reducer="grid_pool")
    with pytest.raises(tokenprune.IncompatibleComponentsError, match="not 'projector'"):
        tokenprune.ProjectorSelection(0.5, TextRaterScorer(), TopKDrop())
    assert not hasattr(model, "tokenprune")


def test_composed_config_round_trips_json():
    strategy = tokenprune.get_registry().compose(scheduler="once", scorer="keynorm", reducer="dedup", keep=0.3, image_pivots=2)
    config = strategy.config
    again = type(config).model_validate_json(config.model_dump_json())
    assert again == config and again.reducer_options == {"image_pivots": 2}
    assert isinstance(strategy.scorer, KeyNormScorer) and strategy.reducer.image_pivots == 2


def test_reduction_type_is_unchanged():
    assert Reduction(keep=torch.ones(1, 1, dtype=torch.bool)).hidden is None


def test_cli_list_shows_strategies_components_and_their_options(capsys):
    from tokenprune.tools.cli import main

    assert main(["list"]) == 0
    out = capsys.readouterr().out
    rows = {tuple(line.split()[:2]) for line in out.splitlines() if line.strip()}
    for name in ("fastv", "sparsevlm", "dart", "random", "uniform", "pyramiddrop"):
        line = next(row for row in out.splitlines() if row.strip().startswith(name + " "))
        assert "tokenprune-vlm" in line and "(built-in)" in line
    assert "k, r, query, budget" in out  # FastV's options
    for kind, name in [("scheduler", "pyramid"), ("scheduler", "once"), ("scorer", "l2norm"), ("scorer", "received"),
                       ("scorer", "text_raters"), ("scorer", "keynorm"), ("scorer", "random"),
                       ("reducer", "topk"), ("reducer", "stride"), ("reducer", "dedup")]:
        assert (kind, name) in rows, (kind, name)
    assert "Adapters" in out and "qwen_vl" in out


@pytest.mark.parametrize("name", ["pyramiddrop", "fastv", "sparsevlm", "dart", "random", "uniform"])
def test_full_budget_keeps_every_token(name):
    """The top of the budget range is "keep everything" exactly (bisection alone stops a hair below
    it, and a keep share of 1 - 1e-14 floors to one token fewer)."""
    registry = tokenprune.get_registry()
    for options in ({"budget_flops": 1.0}, {"budget": 576}):
        keep = registry.build(name, **options).scheduler.plan(32, [576]).keep
        assert all(row == (576,) for row in keep), (options, keep)
