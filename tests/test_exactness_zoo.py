"""The exactness contract (docs/concepts.md) for every LLM-side strategy of the zoo, on LLaVA and Qwen2-VL.

A reduced set of cells (sdpa in float64, the "mixed" layout: left padding, 1/2/0 images incl. a
text-only row) keeps the suite fast; the full
family × backend × layout matrix runs PyramidDrop in test_exactness.py with the same machinery.

1. identity: keep-all is bitwise identical (logits and generated ids);
2. cache: cached generation == a no-cache forward replaying the same selection;
3. batch invariance: every sample of the mixed batch == the same sample alone;
4. masked reference: dropping == the full-length model with the dropped tokens masked as keys.
"""

from __future__ import annotations

import pytest
import torch

import tokenprune
import tiny_models as tm
from exactness import at_positions, last_positions, record, replay_strategy
from test_exactness import NEW_TOKENS, _extend, _model, generate, masked_reference_gaps, max_diff

# name -> (strategy, options, keep-all options); options fit the 8-layer tiny models.
ZOO = {
    "fastv": ("fastv", {}, {"r": 0.0}),
    "fastv_last": ("fastv", {"query": "last", "k": 3}, {"r": 0.0}),
    "sparsevlm": ("sparsevlm", {"layer_list": [2, 4, 6]}, {"layer_list": [2, 4, 6], "keep_ratios": [1.0, 1.0, 1.0]}),
    "dart": ("dart", {"keep": 0.4}, {"keep": 1.0}),
    "random": ("random", {"seed": 3}, {"keep": 1.0}),
    "uniform": ("uniform", {"keep": 0.3}, {"keep": 1.0}),
    "pdrop_uniform_first": ("pyramiddrop", {"scoring": "uniform_then_attention"}, {"scoring": "uniform_then_attention", "ratio": 1.0}),
    "pdrop_instruction": ("pyramiddrop", {"query": "instruction"}, {"query": "instruction", "ratio": 1.0}),
    "pdrop_rank_last": ("pyramiddrop", {"rank_layer": "last"}, {"rank_layer": "last", "ratio": 1.0}),  # cached keys
    "mix_l2norm": (None, {"scheduler": "pyramid", "scorer": "l2norm", "reducer": "topk"},
                   {"scheduler": "pyramid", "scorer": "l2norm", "reducer": "topk", "ratio": 1.0}),
    "mix_merge": (None, {"scheduler": "pyramid", "scorer": "attention", "reducer": "merge"},
                  {"scheduler": "pyramid", "scorer": "attention", "reducer": "merge", "ratio": 1.0}),
}
MERGING = {"mix_merge"}  # merged hidden states: no drop-replay or masked-key reference applies
FAMILIES = ["llava", "qwen2_vl"]
VARIANTS = {"fastv_last", "pdrop_uniform_first", "pdrop_instruction"}  # options of a strategy above: one family
CELLS = [pytest.param(s, f, id=f"{s}-{f}") for s in ZOO for f in FAMILIES if s not in VARIANTS or f == "qwen2_vl"]
DROP_CELLS = [cell for cell in CELLS if cell.values[0] not in MERGING]


def _wrap(model, name: str, keep_all: bool = False):
    strategy, options, all_options = ZOO[name]
    options = all_options if keep_all else options
    return tokenprune.wrap(model, **options) if strategy is None else tokenprune.wrap(model, strategy, **options)


@pytest.fixture
def model_for():
    used = []

    def get(family: str):
        model = _model(family, "sdpa")
        used.append(model)
        return model

    yield get
    for model in used:
        if isinstance(getattr(model, "tokenprune", None), tokenprune.WrapHandle):
            tokenprune.unwrap(model)


@pytest.mark.parametrize("name, family", CELLS)
def test_keep_all_is_bitwise_identity(model_for, name, family):
    model = model_for(family)
    inputs = tm.FAMILIES[family][1](model, layout="mixed")
    ref_logits = model(**inputs).logits
    ref_ids, ref_steps = generate(model, inputs)
    _wrap(model, name, keep_all=True)
    logits = model(**inputs).logits
    record("zoo identity (keep-all)", f"{name}-{family}-sdpa-mixed", max_diff(logits, ref_logits))
    assert torch.equal(logits, ref_logits)
    ids, steps = generate(model, inputs)
    assert torch.equal(ids, ref_ids)
    assert all(torch.equal(a, b) for a, b in zip(steps, ref_steps))
    tokenprune.unwrap(model)
    _wrap(model, name)  # and unwrap after a pruned run restores the model exactly
    assert model(**inputs).logits.shape[1] < ref_logits.shape[1]
    tokenprune.unwrap(model)
    assert torch.equal(model(**inputs).logits, ref_logits)


@pytest.mark.parametrize("name, family", DROP_CELLS)
def test_cached_decode_equals_uncached_replay(model_for, name, family):
    model = model_for(family)
    inputs = tm.FAMILIES[family][1](model, layout="mixed")
    _wrap(model, name)
    scheduler = model.tokenprune.strategy.scheduler
    ids, steps = generate(model, inputs)
    selection = model.tokenprune.selection()
    assert len(selection) == 1 + len(scheduler.boundaries), "every boundary should have removed tokens"
    tokenprune.unwrap(model)
    tokenprune.wrap(model, replay_strategy(selection, scheduler.boundaries, scheduler.ratios))
    logits = model(**_extend(inputs, ids), use_cache=False).logits
    kept = model.tokenprune.kept_positions()
    last = last_positions(inputs["attention_mask"])
    for t, step in enumerate(steps):
        diff = max_diff(at_positions(logits, kept, last + t), step)
        assert record("zoo cache", f"{name}-{family}-sdpa-mixed", diff) <= 1e-10


@pytest.mark.parametrize("name, family", CELLS)
def test_batch_invariance(model_for, name, family):
    model = model_for(family)
    inputs = tm.FAMILIES[family][1](model, layout="mixed")
    _wrap(model, name)
    batch_logits = model(**inputs).logits
    batch_kept = model.tokenprune.kept_positions()
    batch_last = last_positions(inputs["attention_mask"])
    batch_ids, _ = generate(model, inputs)
    for i in range(inputs["input_ids"].shape[0]):
        alone = tm.single_row(inputs, i)
        logits = model(**alone).logits
        mine = at_positions(batch_logits, batch_kept, batch_last)[i]
        theirs = at_positions(logits, model.tokenprune.kept_positions(), last_positions(alone["attention_mask"]))[0]
        assert record("zoo batch invariance", f"{name}-{family}-sdpa-mixed", max_diff(mine, theirs)) <= 1e-10, f"row {i}"
        ids, _ = generate(model, alone)
        assert torch.equal(ids[0, -NEW_TOKENS:], batch_ids[i, -NEW_TOKENS:]), f"row {i} generated ids"


@pytest.mark.parametrize("name, family", DROP_CELLS)
def test_dropping_equals_masked_reference(model_for, name, family):
    model = model_for(family)
    inputs = tm.FAMILIES[family][1](model, layout="mixed")
    gap, plain = masked_reference_gaps(model, inputs, lambda m: _wrap(m, name))
    assert record("zoo masked reference", f"{name}-{family}-sdpa-mixed", gap) <= 1e-10
    assert plain > 1e-7  # the check has teeth
