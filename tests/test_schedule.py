"""PyramidDrop configs, the `Schedule` they resolve to, and the pure helpers under them.

Worked numbers come from the paper / reference code (LLaVA-1.5: 32 layers, N = 576 visual tokens,
``layer_list=[8, 16, 24]``, ``image_token_ratio_list=[0.5, 0.25, 0.125]``). Property tests (hypothesis)
cover random valid schedules, `top_k_mask` and `select_slots`.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

import tiny_models as tm
import tokenprune
from tokenprune.components import StageScheduler
from tokenprune.components.top_k import top_k_mask
from tokenprune.engine.layout import select_slots
from tokenprune.errors import ScheduleError
from tokenprune.plugins.pyramiddrop import PyramidDropConfig, build
from tokenprune.schedule import Schedule, validate_layers

PROPS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def scheduler(**options):
    return build(PyramidDropConfig(**options)).scheduler


# ----------------------------------------------------------------------------------------------
# Worked examples
# ----------------------------------------------------------------------------------------------
def test_default_resolves_to_the_paper_schedule_on_32_layers():
    s = scheduler()
    assert s.resolve_layers(32) == (8, 16, 24)
    assert s.keep_counts(576, 32) == (288, 144, 72)
    assert s.resolve_layers(8) == (2, 4, 6)
    assert s.keep_counts(16, 8) == (8, 4, 2)


def test_keep_counts_truncate_from_the_original_count():
    # int(N * ratio) from the ORIGINAL N at every stage, never from the previous stage's count.
    assert scheduler().keep_counts(577, 32) == (288, 144, 72)
    assert scheduler().keep_counts(7, 32) == (3, 1, 0)
    # lambda = 0.6 on 3 tokens: 1.8 -> 1, 1.08 -> 1, 0.648 -> 0 (stage-by-stage would give 1, 0, 0).
    assert scheduler(ratio=0.6).keep_counts(3, 32) == (1, 1, 0)
    assert scheduler(image_token_ratio_list=[0.9, 0.5, 0.3]).keep_counts(10, 32) == (9, 5, 3)


def test_official_form_equals_the_default_on_32_layers():
    official = scheduler(layer_list=[8, 16, 24], image_token_ratio_list=[0.5, 0.25, 0.125])
    default = scheduler()
    assert official.resolve_layers(32) == default.resolve_layers(32) == (8, 16, 24)
    for n in (576, 577, 2880, 1, 0):
        assert official.keep_counts(n, 32) == default.keep_counts(n, 32)
    assert official.plan(32, [576, 100]) == default.plan(32, [576, 100])


def test_official_layer_list_is_absolute_on_any_depth():
    s = scheduler(layer_list=[8, 16, 24], image_token_ratio_list=[0.5, 0.25, 0.125])
    assert s.resolve_layers(28) == (8, 16, 24)
    with pytest.raises(ScheduleError, match="out of range for a model with 24 decoder layers"):
        s.resolve_layers(24)


@pytest.mark.parametrize("depth, layers", [(32, (8, 16, 24)), (28, (7, 14, 21)), (24, (6, 12, 18)), (8, (2, 4, 6))])
def test_layer_fractions_resolve_on_every_depth(depth, layers):
    s = scheduler(layer_fractions=[0.25, 0.5, 0.75])
    assert s.resolve_layers(depth) == layers
    assert s.keep_counts(576, depth) == (288, 144, 72)


@pytest.mark.parametrize("depth, layers", [(24, (8, 16)), (30, (10, 20)), (32, (10, 21)), (9, (3, 6))])
def test_stages_split_equally(depth, layers):
    s = scheduler(stages=3)
    assert s.resolve_layers(depth) == layers
    assert s.keep_counts(576, depth) == (288, 144)


def test_stages_and_ratio_short_form():
    s = scheduler(stages=2, ratio=0.25)
    assert s.resolve_layers(32) == (16,)
    assert s.keep_counts(576, 32) == (144,)
    assert scheduler(stages=5).keep_counts(576, 40) == (288, 144, 72, 36)


def test_schedule_tokens_per_layer_and_average_for_llava_15():
    schedule = scheduler().plan(32, [576])
    table = schedule.tokens_per_layer()
    assert len(table) == 32
    assert table[:8] == [(576,)] * 8 and table[8:16] == [(288,)] * 8
    assert table[16:24] == [(144,)] * 8 and table[24:] == [(72,)] * 8
    assert schedule.average_tokens() == (270.0,)
    assert schedule.visual_tokens(7) == (576,) and schedule.visual_tokens(8) == (288,)
    assert schedule.batch_size == 1


def test_schedule_per_sample_budgets():
    schedule = scheduler().plan(8, [16, 34, 0])
    assert schedule.keep == ((8, 17, 0), (4, 8, 0), (2, 4, 0))
    assert schedule.average_tokens() == (7.5, 15.75, 0.0)


def test_schedule_value_object_validates_itself():
    with pytest.raises(ScheduleError, match="may only keep between 0 and the tokens it still has"):
        Schedule(8, (2, 4), (16,), ((8,), (10,)))
    with pytest.raises(ScheduleError, match="2 reduction layers but 1 keep rows"):
        Schedule(8, (2, 4), (16,), ((8,),))
    with pytest.raises(ScheduleError, match="strictly increasing"):
        Schedule(8, (4, 2), (16,), ((8,), (4,)))


# ----------------------------------------------------------------------------------------------
# Validation: pydantic at config time
# ----------------------------------------------------------------------------------------------
def _config_error(**options) -> str:
    with pytest.raises(ValidationError) as err:
        PyramidDropConfig(**options)
    return str(err.value)


@pytest.mark.parametrize(
    "ratio, phrase", [(0, "greater than 0"), (1.5, "less than or equal to 1"), (-0.1, "greater than 0")]
)
def test_ratio_outside_unit_interval(ratio, phrase):
    msg = _config_error(ratio=ratio)
    assert "ratio" in msg and phrase in msg


@pytest.mark.parametrize("bad", [[0.5, 0.25, 0.0], [1.5, 0.25, 0.125], [0.5, 0.25, -0.1]])
def test_ratio_list_entries_outside_unit_interval(bad):
    assert "every ratio must be in (0, 1]" in _config_error(image_token_ratio_list=bad)


def test_increasing_ratio_list():
    msg = _config_error(image_token_ratio_list=[0.25, 0.5, 0.125])
    assert "must not increase" in msg and "cumulative" in msg


def test_ratio_list_length_mismatch():
    msg = _config_error(layer_list=[8, 16, 24], image_token_ratio_list=[0.5, 0.25])
    assert "has 2 entries for 3 stage boundaries" in msg


def test_official_leading_one_mistake():
    msg = _config_error(layer_list=[8, 16, 24], image_token_ratio_list=[1.0, 0.5, 0.25, 0.125])
    assert "has 4 entries for 3 stage boundaries" in msg and "without the leading 1.0" in msg


def test_ratio_list_length_follows_default_stages():
    assert "has 3 entries for 2 stage boundaries" in _config_error(stages=3, image_token_ratio_list=[0.5, 0.25, 0.1])


def test_ratio_and_ratio_list_together():
    msg = _config_error(ratio=0.5, image_token_ratio_list=[0.5, 0.25, 0.125])
    assert "either ratio" in msg and "image_token_ratio_list" in msg and "not both" in msg


@pytest.mark.parametrize("where", [{"layer_list": [8, 16, 24]}, {"layer_fractions": [0.25, 0.5, 0.75]}])
def test_stages_with_explicit_layers(where):
    msg = _config_error(stages=4, **where)
    assert "`stages` sets equal stages" in msg and "cannot be combined" in msg


def test_layer_list_and_fractions_together():
    msg = _config_error(layer_list=[8, 16, 24], layer_fractions=[0.25, 0.5, 0.75])
    assert "either layer_list" in msg and "not both" in msg


@pytest.mark.parametrize("bad", [[16, 8, 24], [8, 8, 24]])
def test_layer_list_not_increasing(bad):
    assert "must be strictly increasing" in _config_error(layer_list=bad)


def test_layer_fractions_not_increasing_or_outside():
    assert "must be strictly increasing" in _config_error(layer_fractions=[0.5, 0.25])
    assert "every entry must be in (0, 1)" in _config_error(layer_fractions=[0.25, 1.0])
    assert "every entry must be in (0, 1)" in _config_error(layer_fractions=[0.0, 0.5])


@pytest.mark.parametrize("bad", [[0, 8, 16], [-1, 8, 16]])
def test_drop_at_layer_zero(bad):
    msg = _config_error(layer_list=bad)
    assert "a drop at layer 0" in msg and "not allowed" in msg


def test_stages_below_two_and_unknown_option():
    assert "greater than or equal to 2" in _config_error(stages=1)
    msg = _config_error(layer_lists=[8, 16, 24])
    assert "Unknown option(s) 'layer_lists'" in msg and "Did you mean 'layer_list'" in msg and "Valid options:" in msg
    assert "positions" in _config_error(positions="renumber")


def test_config_is_frozen():
    config = PyramidDropConfig()
    with pytest.raises(ValidationError, match="frozen"):
        config.ratio = 0.25


# ----------------------------------------------------------------------------------------------
# Validation: ScheduleError at wrap / resolve time
# ----------------------------------------------------------------------------------------------
def _wrap_error(**options) -> str:
    model = tm.make_llava(dtype=torch.float32)  # 8 decoder layers
    with pytest.raises(ScheduleError) as err:
        tokenprune.wrap(model, "pyramiddrop", **options)
    assert not hasattr(model, "tokenprune")
    assert all(not m._forward_pre_hooks and not m._forward_hooks for m in model.modules())
    return str(err.value)


def test_layer_out_of_range_for_the_model_at_wrap():
    msg = _wrap_error(layer_list=[2, 4, 99])
    assert "Reduction layer 99 is out of range for a model with 8 decoder layers" in msg
    assert "[1, 7]" in msg
    assert "out of range" in _wrap_error(layer_list=[2, 4, 8])


def test_fractions_that_collapse_on_a_shallow_model_at_wrap():
    # 0.25 and 0.3 of 8 layers both floor to layer 2
    msg = _wrap_error(layer_fractions=[0.25, 0.3])
    assert "resolve to layers [2, 2] on a 8-layer model" in msg and "wider-spaced fractions" in msg
    # 1/16 of 8 layers floors to layer 0
    assert "Reduction layer 0 is not allowed" in _wrap_error(stages=16)


def test_validate_layers_messages():
    with pytest.raises(ScheduleError, match="layer 0 always sees every token"):
        validate_layers([0, 4], 8)
    with pytest.raises(ScheduleError, match=r"must be in \[1, 7\]"):
        validate_layers([4, 8], 8)
    with pytest.raises(ScheduleError, match="strictly increasing"):
        validate_layers([4, 4], 8)
    assert validate_layers([1, 7], 8) == (1, 7)


def test_stage_scheduler_validates_without_pydantic():
    with pytest.raises(ScheduleError, match="3 layer boundaries but 2 ratios"):
        StageScheduler([8, 16, 24], [0.5, 0.25])
    for bad in (0.0, 1.5, -0.1):
        with pytest.raises(ScheduleError, match=r"outside \(0, 1\]"):
            StageScheduler([8], [bad])
    with pytest.raises(ScheduleError, match="must not increase"):
        StageScheduler([8, 16], [0.25, 0.5])
    with pytest.raises(ScheduleError, match="integer layer or a fraction"):
        StageScheduler([2.5], [0.5]).resolve_layers(8)


# ----------------------------------------------------------------------------------------------
# Property tests: schedules
# ----------------------------------------------------------------------------------------------
@st.composite
def valid_schedules(draw):
    num_layers = draw(st.integers(2, 80))
    stages = draw(st.integers(1, min(6, num_layers - 1)))
    layers = sorted(draw(st.lists(st.integers(1, num_layers - 1), min_size=stages, max_size=stages, unique=True)))
    unit = st.floats(0.0, 1.0, exclude_min=True, allow_nan=False)
    ratios = sorted(draw(st.lists(unit, min_size=stages, max_size=stages)), reverse=True)
    num_visual = draw(st.lists(st.integers(0, 5000), min_size=1, max_size=4))
    return num_layers, layers, ratios, num_visual


@PROPS
@given(valid_schedules())
def test_property_schedule_counts(case):
    num_layers, layers, ratios, num_visual = case
    schedule = scheduler(layer_list=layers, image_token_ratio_list=ratios).plan(num_layers, num_visual)
    assert schedule.layers == tuple(layers)
    table = schedule.tokens_per_layer()
    assert len(table) == num_layers
    assert table[0] == tuple(num_visual)  # layer 0 always sees everything
    for b, n in enumerate(num_visual):
        column = [row[b] for row in table]
        assert all(later <= earlier for earlier, later in zip(column, column[1:])), column
        assert max(column) <= n
        bounds = [*layers, num_layers]
        for s, ratio in enumerate(ratios):
            stage = column[bounds[s] : bounds[s + 1]]
            assert stage == [int(n * ratio)] * len(stage)
        assert schedule.average_tokens()[b] == pytest.approx(sum(column) / num_layers)


@PROPS
@given(
    num_layers=st.integers(2, 80),
    fractions=st.lists(st.floats(0.0, 1.0, exclude_min=True, exclude_max=True), min_size=1, max_size=5, unique=True),
)
def test_property_layer_fractions_floor_or_fail_clearly(num_layers, fractions):
    fractions = sorted(fractions)
    s = scheduler(layer_fractions=fractions, image_token_ratio_list=[0.5] * len(fractions))
    approx = [f * num_layers for f in fractions]
    try:
        layers = s.resolve_layers(num_layers)
    except ScheduleError as err:
        floors = [math.floor(a + 1e-9) for a in approx]
        collapsed = any(b <= a for a, b in zip(floors, floors[1:]))
        assert floors[0] < 1 or floors[-1] >= num_layers or collapsed, (floors, str(err))
        return
    for layer, a in zip(layers, approx):
        assert a - 1 < layer <= a + 1e-6
    assert all(1 <= x < num_layers for x in layers)
    assert all(b > a for a, b in zip(layers, layers[1:]))


# ----------------------------------------------------------------------------------------------
# Property tests: top_k_mask
# ----------------------------------------------------------------------------------------------
@st.composite
def topk_cases(draw):
    batch = draw(st.integers(1, 4))
    n = draw(st.integers(1, 12))
    # Small integers give many ties (tie-breaking is part of the contract); floats give the rest.
    value = st.one_of(st.integers(0, 3).map(float), st.floats(-1e6, 1e6, allow_nan=False, width=32))
    scores = torch.tensor(draw(st.lists(st.lists(value, min_size=n, max_size=n), min_size=batch, max_size=batch)))
    candidates = torch.tensor(
        draw(st.lists(st.lists(st.booleans(), min_size=n, max_size=n), min_size=batch, max_size=batch))
    )
    n_keep = torch.tensor(draw(st.lists(st.integers(0, n + 2), min_size=batch, max_size=batch)))
    return scores.float(), candidates, n_keep


@PROPS
@given(topk_cases())
def test_property_top_k_mask(case):
    scores, candidates, n_keep = case
    mask = top_k_mask(scores, candidates, n_keep)
    assert mask.shape == scores.shape and mask.dtype == torch.bool
    assert not bool((mask & ~candidates).any()), "kept a non-candidate"
    expected = torch.minimum(n_keep, candidates.sum(1))
    assert mask.sum(1).tolist() == expected.tolist()
    for b in range(scores.shape[0]):
        kept = mask[b].nonzero().squeeze(1).tolist()
        dropped = (candidates[b] & ~mask[b]).nonzero().squeeze(1).tolist()
        for i in kept:
            for j in dropped:
                si, sj = float(scores[b, i]), float(scores[b, j])
                assert si > sj or (si == sj and i < j), f"row {b}: kept {i} ({si}) over {j} ({sj})"


@PROPS
@given(topk_cases(), st.integers(0, 2**31 - 1))
def test_property_top_k_mask_rows_are_independent(case, seed):
    scores, candidates, n_keep = case
    mask = top_k_mask(scores, candidates, n_keep)
    gen = torch.Generator().manual_seed(seed)
    other_scores = torch.randn(scores.shape, generator=gen)
    other_candidates = torch.rand(scores.shape, generator=gen) < 0.5
    other_keep = torch.randint(0, scores.shape[1] + 1, n_keep.shape, generator=gen)
    for b in range(scores.shape[0]):
        alone = top_k_mask(scores[b : b + 1], candidates[b : b + 1], n_keep[b : b + 1])
        assert torch.equal(alone[0], mask[b])
        s, c, k = other_scores.clone(), other_candidates.clone(), other_keep.clone()
        s[b], c[b], k[b] = scores[b], candidates[b], n_keep[b]
        assert torch.equal(top_k_mask(s, c, k)[b], mask[b])


def test_top_k_mask_worked_example():
    scores = torch.tensor([[0.1, 0.9, 0.5, 0.9, 0.7], [5.0, 4.0, 3.0, 2.0, 1.0]])
    candidates = torch.tensor([[True, True, True, True, True], [False, True, True, True, False]])
    mask = top_k_mask(scores, candidates, torch.tensor([2, 5]))
    assert mask.tolist() == [[False, True, False, True, False], [False, True, True, True, False]]
    # a tie keeps the earlier slot
    assert top_k_mask(torch.ones(1, 4), torch.ones(1, 4, dtype=torch.bool), torch.tensor([2])).tolist() == [
        [True, True, False, False]
    ]


def test_top_k_mask_keeps_candidates_scored_minus_infinity():
    scores = torch.tensor([[float("-inf"), float("-inf"), 1.0]])  # e.g. a log-space scorer
    candidates = torch.tensor([[False, True, True]])
    mask = top_k_mask(scores, candidates, torch.tensor([2]))
    assert mask.tolist() == [[False, True, True]]


def test_top_k_mask_ranks_float64_scores_at_full_precision():
    scores = torch.tensor([[0.1, 0.1 + 1e-10]], dtype=torch.float64)
    mask = top_k_mask(scores, torch.ones(1, 2, dtype=torch.bool), torch.tensor([1]))
    assert mask.tolist() == [[False, True]]


# ----------------------------------------------------------------------------------------------
# Property tests: select_slots
# ----------------------------------------------------------------------------------------------
@st.composite
def slot_cases(draw):
    batch = draw(st.integers(1, 4))
    n = draw(st.integers(1, 16))
    bools = st.lists(st.lists(st.booleans(), min_size=n, max_size=n), min_size=batch, max_size=batch)
    valid = torch.tensor(draw(bools))
    keep = torch.tensor(draw(bools)) & valid  # the engine only keeps real tokens
    return keep, valid


@PROPS
@given(slot_cases())
def test_property_select_slots(case):
    keep, valid = case
    sel, sel_valid = select_slots(keep, valid)
    width = int(keep.sum(1).max())
    assert sel.shape == sel_valid.shape == (keep.shape[0], width)
    assert torch.equal(sel_valid, keep.gather(1, sel))
    for b in range(keep.shape[0]):
        row = sel[b].tolist()
        assert all(x < y for x, y in zip(row, row[1:])), f"row {b} not strictly ascending: {row}"
        assert set(keep[b].nonzero().squeeze(1).tolist()) <= set(row), "a kept slot is missing"
        assert int(sel_valid[b].sum()) == int(keep[b].sum())
        # fillers: old padding / fillers first, then dropped real tokens, earliest first
        fillers = sorted(set(row) - set(keep[b].nonzero().squeeze(1).tolist()))
        pool = [i for i in range(keep.shape[1]) if not valid[b, i]] + [
            i for i in range(keep.shape[1]) if valid[b, i] and not keep[b, i]
        ]
        assert fillers == sorted(pool[: len(fillers)])


def test_select_slots_worked_example():
    keep = torch.tensor([[True, False, True, False], [False, False, False, True]])
    valid = torch.tensor([[True, True, True, True], [False, True, True, True]])
    sel, sel_valid = select_slots(keep, valid)
    assert sel.tolist() == [[0, 2], [0, 3]]  # row 1 takes its padding slot 0 as filler
    assert sel_valid.tolist() == [[True, True], [False, True]]

