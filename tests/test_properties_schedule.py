"""Property tests of PyramidDrop schedules: pure, no model, fast.

Every valid configuration in any of its three forms (official ``layer_list`` /
``image_token_ratio_list``, short form λ/S, depth-relative ``layer_fractions``) on any depth:

* visual-token counts never increase with depth, stay in [0, N], and equal N at layer 0;
* keep-all ratios (all 1.0) give the identity schedule;
* the three forms resolve to the same plan where they describe the same thing;
* resolution is deterministic and each sample's plan is independent of the rest of the batch;
* paper FLOPs (`tokenprune.cost.stack_flops`) never exceed dense and are monotone in λ;
* a config serialised to JSON and loaded back gives the same plan;
* `Schedule.average_tokens` is the mean of `tokens_per_layer`.

The budget solver's properties (a solved strategy hits its target within one token; out-of-reach
budgets are refused) are in `test_properties_budget.py`.
"""

from __future__ import annotations

import itertools

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from tokenprune.cost import stack_flops
from tokenprune.plugins.pyramiddrop import PyramidDropConfig, build

PROPS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

unit = st.one_of(
    st.sampled_from([1.0, 0.5, 0.25, 0.125, 0.1, 1 / 3]),
    st.floats(1e-6, 1.0, allow_nan=False),  # tiny λ (powers underflow): test_tiny_lambda_* and test_any_accepted_lambda_builds
)
counts = st.lists(st.integers(0, 6000), min_size=1, max_size=4)


def plan(config: PyramidDropConfig, num_layers: int, num_visual):
    return build(config).scheduler.plan(num_layers, num_visual)


def columns(schedule):
    """Per sample, its visual-token count at every layer."""
    table = schedule.tokens_per_layer()
    return [[row[b] for row in table] for b in range(schedule.batch_size)]


@st.composite
def official_options(draw, num_layers: int, ratio=unit):
    k = draw(st.integers(1, min(5, num_layers - 1)))
    layers = sorted(draw(st.lists(st.integers(1, num_layers - 1), min_size=k, max_size=k, unique=True)))
    ratios = sorted(draw(st.lists(ratio, min_size=k, max_size=k)), reverse=True)
    return {"layer_list": layers, "image_token_ratio_list": ratios}


@st.composite
def fraction_options(draw, num_layers: int, ratio=unit):
    """Fractions that resolve on ``num_layers`` (each in [l/L, (l+0.99)/L) for distinct layers l)."""
    k = draw(st.integers(1, min(5, num_layers - 1)))
    layers = sorted(draw(st.lists(st.integers(1, num_layers - 1), min_size=k, max_size=k, unique=True)))
    jitter = draw(st.lists(st.floats(0.0, 0.99), min_size=k, max_size=k))
    fractions = [(layer + u) / num_layers for layer, u in zip(layers, jitter)]
    if draw(st.booleans()):
        return {"layer_fractions": fractions, "ratio": draw(ratio)}
    ratios = sorted(draw(st.lists(ratio, min_size=k, max_size=k)), reverse=True)
    return {"layer_fractions": fractions, "image_token_ratio_list": ratios}


@st.composite
def short_options(draw, num_layers: int, ratio=unit):
    options = {}
    if draw(st.booleans()):
        options["stages"] = draw(st.integers(2, min(8, num_layers)))  # S <= L: every boundary resolves
    if draw(st.booleans()):
        options["ratio"] = draw(ratio)
    return options


@st.composite
def configs(draw, ratio=unit, min_layers: int = 2):
    """``(options, num_layers)``: a valid PyramidDrop config in a random form, and a depth it fits."""
    num_layers = draw(st.integers(max(min_layers, 2), 80))
    form = draw(st.sampled_from([official_options, fraction_options, short_options]))
    if form is short_options and num_layers < 4:
        num_layers = 4  # the default S = 4 needs 4 layers
    options = draw(form(num_layers, ratio))
    if draw(st.booleans()):
        options["positions"] = draw(st.sampled_from(["keep", "compact"]))
    return options, num_layers


# ----------------------------------------------------------------------------------------------
# Counts
# ----------------------------------------------------------------------------------------------
@PROPS
@given(configs(), counts)
def test_counts_never_increase_and_stay_within_zero_and_n(case, num_visual):
    options, num_layers = case
    schedule = plan(PyramidDropConfig(**options), num_layers, num_visual)
    assert schedule.num_visual == tuple(num_visual)
    for n, column in zip(num_visual, columns(schedule)):
        assert len(column) == num_layers
        assert column[0] == n  # layer 0 always sees everything
        assert all(0 <= c <= n for c in column), column
        assert all(later <= earlier for earlier, later in itertools.pairwise(column)), column
        assert all(isinstance(c, int) for c in column)


@PROPS
@given(configs(ratio=st.just(1.0)), counts)
def test_keep_all_ratios_give_the_identity_schedule(case, num_visual):
    options, num_layers = case
    if "layer_list" not in options and "layer_fractions" not in options:
        options["ratio"] = 1.0  # the short form's default λ is 0.5
    schedule = plan(PyramidDropConfig(**options), num_layers, num_visual)
    assert schedule.tokens_per_layer() == [tuple(num_visual)] * num_layers
    assert all(row == tuple(num_visual) for row in schedule.keep)
    assert schedule.average_tokens() == tuple(float(n) for n in num_visual)


# ----------------------------------------------------------------------------------------------
# The three forms agree
# ----------------------------------------------------------------------------------------------
@PROPS
@given(st.integers(2, 8), st.integers(1, 10), unit, counts)
def test_equal_stages_in_all_three_forms_give_the_same_plan(stages, per_stage, lam, num_visual):
    """S stages of k layers (L = S*k): short form == official layer_list [k, 2k, ...] with ratios
    λ, λ², ... == layer_fractions [1/S, 2/S, ...] (with λ, or with the cumulative list)."""
    num_layers = stages * per_stage
    layers = [per_stage * s for s in range(1, stages)]
    cumulative = [lam**s for s in range(1, stages)]
    fractions = [s / stages for s in range(1, stages)]
    forms = {
        "short": PyramidDropConfig(stages=stages, ratio=lam),
        "official": PyramidDropConfig(layer_list=layers, image_token_ratio_list=cumulative),
        "fractions+ratio": PyramidDropConfig(layer_fractions=fractions, ratio=lam),
        "fractions+list": PyramidDropConfig(layer_fractions=fractions, image_token_ratio_list=cumulative),
    }
    plans = {name: plan(config, num_layers, num_visual) for name, config in forms.items()}
    assert plans["short"].layers == tuple(layers)
    for name, other in plans.items():
        assert other == plans["short"], name
    if stages == 4:  # the worked case of the issue: S = 4 == [L/4, L/2, 3L/4] == [0.25, 0.5, 0.75]
        quarters = PyramidDropConfig(layer_fractions=[0.25, 0.5, 0.75], ratio=lam)
        assert plan(quarters, num_layers, num_visual) == plans["short"]


@PROPS
@given(st.data(), st.integers(2, 80), counts)
def test_fractions_resolve_to_the_layer_list_they_describe(data, num_layers, num_visual):
    """A fraction anywhere in [l/L, (l+1)/L) names layer l of L: the same plan as layer_list [l, ...]."""
    k = data.draw(st.integers(1, min(5, num_layers - 1)))
    layers = sorted(data.draw(st.lists(st.integers(1, num_layers - 1), min_size=k, max_size=k, unique=True)))
    jitter = data.draw(st.lists(st.floats(0.0, 0.99), min_size=k, max_size=k))
    fractions = [(layer + u) / num_layers for layer, u in zip(layers, jitter)]
    ratios = sorted(data.draw(st.lists(unit, min_size=k, max_size=k)), reverse=True)
    fractional = PyramidDropConfig(layer_fractions=fractions, image_token_ratio_list=ratios)
    absolute = PyramidDropConfig(layer_list=layers, image_token_ratio_list=ratios)
    assert plan(fractional, num_layers, num_visual) == plan(absolute, num_layers, num_visual)
    assert plan(fractional, num_layers, num_visual).layers == tuple(layers)
    if k == 1 or len(set(ratios)) == 1:  # one λ for every boundary: the short ratio says the same
        lam = ratios[0] if k == 1 else None
        if lam is not None:
            short = PyramidDropConfig(layer_fractions=fractions, ratio=lam)
            assert plan(short, num_layers, num_visual) == plan(absolute, num_layers, num_visual)


# ----------------------------------------------------------------------------------------------
# Determinism and per-sample independence
# ----------------------------------------------------------------------------------------------
@PROPS
@given(configs(), counts)
def test_resolution_is_deterministic(case, num_visual):
    options, num_layers = case
    first = plan(PyramidDropConfig(**options), num_layers, num_visual)
    scheduler = build(PyramidDropConfig(**options)).scheduler
    assert scheduler.plan(num_layers, num_visual) == first
    assert scheduler.plan(num_layers, num_visual) == first  # the same object, asked again
    assert scheduler.resolve_layers(num_layers) == first.layers


@PROPS
@given(configs(), counts)
def test_each_sample_gets_the_plan_it_would_get_alone(case, num_visual):
    options, num_layers = case
    scheduler = build(PyramidDropConfig(**options)).scheduler
    together = columns(scheduler.plan(num_layers, num_visual))
    for b, n in enumerate(num_visual):
        assert together[b] == columns(scheduler.plan(num_layers, [n]))[0]


# ----------------------------------------------------------------------------------------------
# FLOPs (paper convention, prefill, visual tokens only)
# ----------------------------------------------------------------------------------------------
dims = st.tuples(st.integers(1, 8192), st.integers(1, 32768))


@PROPS
@given(configs(), counts, dims)
def test_paper_flops_never_exceed_dense(case, num_visual, dm):
    options, num_layers = case
    d, m = dm
    schedule = plan(PyramidDropConfig(**options), num_layers, num_visual)
    for n, column in zip(num_visual, columns(schedule)):
        assert 0 <= stack_flops(column, d, m) <= stack_flops([n] * num_layers, d, m)


@PROPS
@given(st.integers(4, 80), st.integers(2, 8), unit, unit, counts, dims)
def test_paper_flops_are_monotone_in_lambda(num_layers, stages, lam_a, lam_b, num_visual, dm):
    d, m = dm
    stages = min(stages, num_layers)
    low, high = sorted((lam_a, lam_b))
    plans = [plan(PyramidDropConfig(stages=stages, ratio=lam), num_layers, num_visual) for lam in (low, high)]
    for col_low, col_high in zip(columns(plans[0]), columns(plans[1])):
        assert all(a <= b for a, b in zip(col_low, col_high))
        assert stack_flops(col_low, d, m) <= stack_flops(col_high, d, m)


@PROPS
@given(st.data(), st.integers(2, 80), counts, dims)
def test_paper_flops_are_monotone_in_the_ratio_list(data, num_layers, num_visual, dm):
    """Lowering any cumulative ratio (keeping the list non-increasing) never adds FLOPs."""
    d, m = dm
    options = data.draw(official_options(num_layers))
    high = options["image_token_ratio_list"]
    scale = data.draw(st.lists(st.floats(0.0, 1.0, exclude_min=True), min_size=len(high), max_size=len(high)))
    low = sorted((r * s for r, s in zip(high, scale)), reverse=True)
    low = [min(a, b) for a, b in zip(low, high)]  # elementwise <= high, still non-increasing
    if not all(r > 0 for r in low):
        return  # underflow to 0.0 is not a valid ratio
    layers = options["layer_list"]
    plan_high = plan(PyramidDropConfig(layer_list=layers, image_token_ratio_list=high), num_layers, num_visual)
    plan_low = plan(PyramidDropConfig(layer_list=layers, image_token_ratio_list=low), num_layers, num_visual)
    for col_low, col_high in zip(columns(plan_low), columns(plan_high)):
        assert stack_flops(col_low, d, m) <= stack_flops(col_high, d, m)


# ----------------------------------------------------------------------------------------------
# JSON round trip
# ----------------------------------------------------------------------------------------------
@PROPS
@given(configs(), counts)
def test_json_round_trip_of_the_set_fields_gives_the_same_plan(case, num_visual):
    options, num_layers = case
    config = PyramidDropConfig(**options)
    loaded = PyramidDropConfig.model_validate_json(config.model_dump_json(exclude_unset=True))
    assert loaded == config
    assert plan(loaded, num_layers, num_visual) == plan(config, num_layers, num_visual)


@PROPS
@given(st.integers(4, 80), st.data(), counts)
def test_json_round_trip_of_the_short_form_gives_the_same_plan(num_layers, data, num_visual):
    config = PyramidDropConfig(**data.draw(short_options(num_layers)))
    loaded = PyramidDropConfig.model_validate_json(config.model_dump_json())
    assert loaded == config
    assert plan(loaded, num_layers, num_visual) == plan(config, num_layers, num_visual)


@PROPS
@given(configs(), counts)
@example(({"layer_list": [8, 16, 24], "image_token_ratio_list": [0.5, 0.25, 0.125]}, 32), [576])
@example(({"layer_fractions": [0.25, 0.5, 0.75], "ratio": 0.5}, 32), [576])
def test_json_round_trip_of_the_full_dump_gives_the_same_plan(case, num_visual):
    options, num_layers = case
    config = PyramidDropConfig(**options)
    loaded = PyramidDropConfig.model_validate_json(config.model_dump_json())
    assert loaded == config
    assert plan(loaded, num_layers, num_visual) == plan(config, num_layers, num_visual)
    # The python-dict dump (what tokenprune.tools.demo records) loads back too.
    again = PyramidDropConfig(**config.model_dump())
    assert again == config and plan(again, num_layers, num_visual) == plan(config, num_layers, num_visual)


# ----------------------------------------------------------------------------------------------
# Schedule value object
# ----------------------------------------------------------------------------------------------
@PROPS
@given(configs(), counts)
def test_average_tokens_is_the_mean_of_tokens_per_layer(case, num_visual):
    options, num_layers = case
    schedule = plan(PyramidDropConfig(**options), num_layers, num_visual)
    table = schedule.tokens_per_layer()
    expected = [sum(row[b] for row in table) / num_layers for b in range(len(num_visual))]
    assert schedule.average_tokens() == pytest.approx(expected, rel=1e-12, abs=0)
    for layer, row in enumerate(table):
        assert schedule.visual_tokens(layer) == row


@pytest.mark.parametrize("lam, stages", [(1e-200, 4), (1e-120, 4), (1e-60, 8)])
def test_tiny_lambda_is_rejected_by_the_config_not_by_build(lam, stages):
    """λ > 0 whose powers underflow to 0.0 (λ**2 for 1e-200): the config names `ratio` and the fix,
    instead of `build` failing on a 'retention ratio 0.0' the user never wrote."""
    with pytest.raises(ValidationError, match=rf"ratio={lam} is too small: λ\^{stages - 1} underflows to 0") as err:
        PyramidDropConfig(ratio=lam, stages=stages)
    assert "Use a larger ratio" in str(err.value)


@PROPS
@given(st.floats(1e-300, 1.0), st.integers(2, 12))
def test_any_accepted_lambda_builds(lam, stages):
    """Whatever λ the config accepts, build() and plan() work (no ScheduleError after validation)."""
    try:
        config = PyramidDropConfig(ratio=lam, stages=stages)
    except ValidationError as err:
        assert "underflows to 0" in str(err)
        assert lam ** (stages - 1) == 0.0
        return
    schedule = build(config).scheduler.plan(max(stages, 2) * 2, [576])
    assert all(0 <= k <= 576 for row in schedule.keep for k in row)
