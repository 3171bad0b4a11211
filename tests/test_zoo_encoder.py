"""The projector-side zoo (visionzip, divprune, pooling, downsample) on the tiny LLaVA, plus the
defining behaviour of each reducer on constructed inputs.

Contract per strategy: keep-all (ratio 1) is bitwise the stock model and unwrap restores it after a
reducing run; cached decoding equals an uncached forward over prompt + generated tokens; every
sample of a mixed batch (1, 2 and 0 images) equals the sample alone.
"""

from __future__ import annotations

import itertools
from types import SimpleNamespace

import pytest
import tiny_models as tm
import tiny_models_qwen_internvl as tq
import torch
from exactness import at_positions
from test_encoder_vlm import NEW_TOKENS, TOL, _compacted_last, _diff, _generate, _llava

import tokenprune
from tokenprune import ProjectorSelection, VisionLanguageStrategy, get_registry
from tokenprune.components import (
    ContextualMerge,
    GridDownsample,
    GridPool,
    MaxMinDiversityDrop,
    QueryAttentionScorer,
    TopKDrop,
)
from tokenprune.components.diversity import greedy_max_min
from tokenprune.components.merge import cosine_similarity_matrix
from tokenprune.errors import ScheduleError, UnsupportedFeatureError

# name -> options that reduce the tiny tower's 16 patches (a 4x4 grid)
CASES = {
    "visionzip": {"ratio": 0.5, "contextual": 0.25},
    "divprune": {"ratio": 0.5},
    "pooling": {"ratio": 0.25},
    "downsample": {"ratio": 0.25},
}


@pytest.fixture(scope="module")
def model():
    return _llava(2)


def _build(name: str, **override):
    return get_registry().build(name, **{**CASES[name], **override})


@pytest.mark.parametrize("name", list(CASES))
def test_keep_all_is_identity_and_unwrap_restores(model, name):
    inputs = tm.llava_inputs(model, "mixed")
    ref = model(**inputs).logits
    ref_ids, ref_steps = _generate(model, inputs)
    with tokenprune.pruned(model, _build(name, ratio=1.0)):
        assert torch.equal(model(**inputs).logits, ref)
        ids, steps = _generate(model, inputs)
    assert torch.equal(ids, ref_ids) and all(torch.equal(a, b) for a, b in zip(steps, ref_steps))
    with tokenprune.pruned(model, _build(name)) as handle:
        out = model(**inputs).logits
        assert out.shape[1] < ref.shape[1]
        assert handle.tokens_per_layer()["projector"][0] == int(16 * CASES[name]["ratio"])
    assert torch.equal(model(**inputs).logits, ref)


@pytest.mark.parametrize("name", list(CASES))
def test_cached_decode_equals_uncached_forward(model, name):
    inputs = tm.llava_inputs(model, "mixed")
    with tokenprune.pruned(model, _build(name)) as handle:
        ids, steps = _generate(model, inputs)
        full = {k: v for k, v in inputs.items() if k != "position_ids"}
        extra = ids.shape[1] - 1 - inputs["input_ids"].shape[1]
        full["input_ids"] = ids[:, :-1]
        full["attention_mask"] = torch.cat([inputs["attention_mask"], torch.ones(ids.shape[0], extra, dtype=torch.long)], 1)
        full["position_ids"] = (full["attention_mask"].cumsum(1) - 1).clamp(min=0)  # as generate passes them
        logits = model(**full, use_cache=False).logits
        for t, step in enumerate(steps):
            pos = _compacted_last(handle, inputs, t)
            assert _diff(at_positions(logits, None, pos), step) <= TOL


@pytest.mark.parametrize("name", list(CASES))
def test_batch_invariance(model, name):
    inputs = tm.llava_inputs(model, "mixed")
    with tokenprune.pruned(model, _build(name)) as handle:
        batch = model(**inputs).logits
        mine = at_positions(batch, None, _compacted_last(handle, inputs))
        batch_ids, _ = _generate(model, inputs)
        for i in range(inputs["input_ids"].shape[0]):
            alone = tm.single_row(inputs, i)
            theirs = at_positions(model(**alone).logits, None, _compacted_last(handle, alone))
            assert _diff(mine[i], theirs[0]) <= TOL
            ids, _ = _generate(model, alone)
            assert torch.equal(ids[0, -NEW_TOKENS:], batch_ids[i, -NEW_TOKENS:])


def test_visionzip_without_contextual_tokens_is_cls_attention_top_k(model):
    """Its dominant tokens are exactly the [CLS]-attention top-k of the projector stage (the default
    ``scorer="auto"`` and ``"cls"`` alike: the CLIP tower has a class token)."""
    inputs = tm.llava_inputs(model, "mixed")
    topk = VisionLanguageStrategy(projector=ProjectorSelection(0.5, QueryAttentionScorer(), TopKDrop()))
    with tokenprune.pruned(model, topk):
        ref = model(**inputs).logits
    for scorer in ("auto", "cls"):
        with tokenprune.pruned(model, _build("visionzip", contextual=0.0, scorer=scorer)):
            assert torch.equal(model(**inputs).logits, ref)
    with tokenprune.pruned(model, _build("visionzip")):
        assert not torch.equal(model(**inputs).logits, ref)  # contextual tokens change what the LLM sees


def _ctx(hidden: torch.Tensor, features: torch.Tensor | None = None):
    return SimpleNamespace(hidden=hidden, match_features=lambda: hidden if features is None else features)


def test_contextual_merge_keeps_top_scores_and_adds_group_means():
    gen = torch.Generator().manual_seed(0)
    hidden = torch.randn(1, 10, 4, dtype=torch.float64, generator=gen)
    scores = torch.tensor([[0.0, 9.0, 1.0, 8.0, 2.0, 7.0, 3.0, 0.5, 0.2, 0.1]])
    candidates = torch.ones(1, 10, dtype=torch.bool)
    candidates[0, 0] = False  # a prefix slot ([CLS]) is never kept nor merged
    out = ContextualMerge(contextual=0.5).reduce(_ctx(hidden), scores, candidates, torch.tensor([4]))
    dominant = [1, 3]  # the two highest-scoring candidates
    rest = [2, 4, 5, 6, 7, 8, 9]  # step = 7 // 2 = 3: targets rest[0], rest[3]
    targets = [2, 6]
    assert out.keep[0].nonzero()[:, 0].tolist() == sorted(dominant + targets)
    assert torch.equal(out.hidden[0, dominant], hidden[0, dominant])
    f = torch.nn.functional.normalize(hidden[0], dim=-1)
    for t in targets:
        members = [i for i in rest if i not in targets and max(targets, key=lambda u: float(f[i] @ f[u])) == t]
        expect = hidden[0, t] + (hidden[0, members].mean(0) if members else 0)
        assert torch.allclose(out.hidden[0, t], expect, atol=1e-12)


def _min_pairwise(distance: torch.Tensor, subset) -> float:
    return min(float(distance[a, b]) for a, b in itertools.combinations(subset, 2))


def test_max_min_diversity_finds_the_brute_force_optimum_on_clusters():
    """Three tight clusters plus near-duplicates: the best 3 take one point of each cluster."""
    centers = torch.eye(3, dtype=torch.float64)
    gen = torch.Generator().manual_seed(1)
    points = torch.cat([c + 0.01 * torch.randn(4, 3, dtype=torch.float64, generator=gen) for c in centers])
    distance = 1 - cosine_similarity_matrix(points.unsqueeze(0))[0]
    best = max(_min_pairwise(distance, s) for s in itertools.combinations(range(12), 3))
    chosen = greedy_max_min(distance, 3).tolist()
    assert sorted({i // 4 for i in chosen}) == [0, 1, 2]
    assert _min_pairwise(distance, chosen) >= 0.5 * best  # greedy is a 2-approximation of max-min
    assert _min_pairwise(distance, chosen) >= best - 0.05  # within the clusters' spread of the optimum
    assert _min_pairwise(distance, [0, 1, 4]) < 0.01  # a set with two points of one cluster is far worse
    # through the reducer, with a prefix slot that is never a candidate
    hidden = torch.cat([torch.ones(1, 3, dtype=torch.float64), points]).unsqueeze(0)
    candidates = torch.ones(1, 13, dtype=torch.bool)
    candidates[0, 0] = False
    keep = MaxMinDiversityDrop().reduce(_ctx(hidden), None, candidates, torch.tensor([3])).keep
    assert keep[0, 1:].nonzero()[:, 0].tolist() == chosen and not keep[0, 0]


def test_max_min_diversity_matches_the_brute_force_greedy_definition():
    gen = torch.Generator().manual_seed(2)
    points = torch.randn(9, 5, dtype=torch.float64, generator=gen)
    distance = 1 - cosine_similarity_matrix(points.unsqueeze(0))[0]
    chosen = greedy_max_min(distance, 5).tolist()
    # Algorithm 1 written out: most isolated first, then farthest from the chosen set
    picks = [max(range(9), key=lambda j: min(float(distance[i, j]) for i in range(9) if i != j))]
    while len(picks) < 5:
        picks.append(max((j for j in range(9) if j not in picks), key=lambda j: min(float(distance[i, j]) for i in picks)))
    assert chosen == sorted(picks)


def test_grid_reducers_keep_and_pool_a_spatial_grid():
    hidden = torch.arange(17, dtype=torch.float64).view(1, 17, 1).expand(1, 17, 2).clone()  # slot 0: prefix
    candidates = torch.ones(1, 17, dtype=torch.bool)
    candidates[0, 0] = False
    down = GridDownsample().reduce(_ctx(hidden), None, candidates, torch.tensor([4]))
    assert down.keep[0].nonzero()[:, 0].tolist() == [1, 3, 9, 11]  # patches (0,0), (0,2), (2,0), (2,2)
    pool = GridPool().reduce(_ctx(hidden), None, candidates, torch.tensor([4]))
    assert pool.keep[0].nonzero()[:, 0].tolist() == [1, 3, 9, 11]
    # cell (0,0) holds patches 0, 1, 4, 5 -> slots 1, 2, 5, 6
    assert pool.hidden[0, [1, 3, 9, 11], 0].tolist() == [3.5, 5.5, 11.5, 13.5]
    with pytest.raises(ScheduleError, match="square"):
        GridPool().reduce(_ctx(hidden), None, candidates, torch.tensor([8]))
    with pytest.raises(ScheduleError, match="square"):
        GridDownsample().reduce(_ctx(hidden[:, :13]), None, candidates[:, :13], torch.tensor([4]))


def test_grid_strategies_refuse_a_non_square_kept_count(model):
    inputs = tm.llava_inputs(model, "single")
    with tokenprune.pruned(model, _build("pooling", ratio=0.5)):
        with pytest.raises(ScheduleError, match="square"):
            model(**inputs)


# Other towers: SigLIP (no [CLS]: visionzip scores by received attention) and InternVL (selection
# after the projector, on the projected tokens, as DivPrune's paper does).
OTHER = [
    ("siglip", "visionzip", {"scorer": "received"}),
    ("siglip", "pooling", {}),
    ("internvl", "divprune", {}),
    ("internvl", "downsample", {}),
]


@pytest.fixture(scope="module")
def towers():
    return {"siglip": _llava(2, "siglip"), "internvl": tq.make_internvl_qwen2(attn="sdpa", dtype=torch.float64)}


def _family_inputs(family, model, layout):
    return tq.internvl_inputs(model, layout) if family == "internvl" else tm.llava_inputs(model, layout)


@pytest.mark.parametrize("family, name, extra", OTHER)
def test_other_towers_identity_and_batch_invariance(towers, family, name, extra):
    model = towers[family]
    inputs = _family_inputs(family, model, "mixed")
    ref = model(**inputs).logits
    with tokenprune.pruned(model, _build(name, ratio=1.0, **extra)):
        assert torch.equal(model(**inputs).logits, ref)
    with tokenprune.pruned(model, _build(name, **extra)) as handle:
        mine = at_positions(model(**inputs).logits, None, _compacted_last(handle, inputs))
        assert handle.tokens_per_layer()["projector"][0] == int(16 * CASES[name]["ratio"])
        for i in range(inputs["input_ids"].shape[0]):
            alone = tm.single_row(inputs, i)
            theirs = at_positions(model(**alone).logits, None, _compacted_last(handle, alone))
            assert _diff(mine[i], theirs[0]) <= TOL
    assert torch.equal(model(**inputs).logits, ref)


def test_visionzip_after_the_projector_refuses_clearly(towers):
    model = towers["internvl"]
    with tokenprune.pruned(model, _build("visionzip")):
        with pytest.raises(UnsupportedFeatureError, match="no attention"):
            model(**_family_inputs("internvl", model, "single"))


def test_budget_is_tokens_per_image_on_the_reference_model():
    registry = get_registry()
    assert registry.build("visionzip", budget=192).projector.ratio == pytest.approx(1 / 3)
    assert registry.build("divprune", budget=64).projector.ratio == pytest.approx(1 / 9)
    assert registry.build("pooling", budget=144).projector.ratio == pytest.approx(0.25)
    with pytest.raises(ValueError, match="either ratio or budget"):
        registry.build("downsample", ratio=0.25, budget=144)
    with pytest.raises(ValueError, match=r"outside \(0, 576\]"):
        registry.build("divprune", budget=600)
    with pytest.raises(ValueError, match="Unknown model preset 'nope'"):
        registry.build("divprune", budget=64, reference="nope")
