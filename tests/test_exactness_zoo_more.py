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
import tiny_models as tm
import tokenprune
from exactness import record
from test_exactness import BACKENDS, _model, check_training_against_masked_reference, masked_reference_gaps
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
    gap, plain = masked_reference_gaps(model, inputs, lambda m: _wrap(m, name))
    assert record("zoo masked reference", f"{name}-{family}-eager-mixed", gap) <= tol
    assert plain > 10 * tol  # the check has teeth


@pytest.mark.parametrize("name, family", DROP_CELLS)
def test_training_matches_masked_reference(model_for, name, family):
    model = model_for(family, "sdpa")
    inputs = tm.FAMILIES[family][1](model, layout="mixed")
    cell = f"{name}-{family}-sdpa-mixed"
    stages = check_training_against_masked_reference(model, inputs, lambda m: _wrap(m, name), BACKENDS["sdpa"][1], cell, "zoo ")
    assert stages > 1, "the strategy removed nothing in training"
