"""One schedule object composes across architectures (depth-relative boundaries).

PyramidDrop with ``layer_fractions=[0.25, 0.5, 0.75]`` and λ=0.5 resolves to layers 8/16/24 on a
32-layer stack, 7/14/21 on 28 layers (Qwen2-VL-7B's depth) and 6/12/18 on 24 layers (InternVL's
Qwen2-0.5B); every family is wrapped with the very same strategy object.
"""

from __future__ import annotations

import pytest
import torch

import tiny_models as tm
import tokenprune

STRATEGY = tokenprune.get_registry().build("pyramiddrop", layer_fractions=[0.25, 0.5, 0.75])
DEPTHS = {32: (8, 16, 24), 28: (7, 14, 21), 24: (6, 12, 18)}


REFERENCE = ("llava", "qwen2_vl", "internvl_qwen2")  # checked at every depth; the others at one each


def _cases():
    families = sorted(tm.FAMILIES)
    for i, family in enumerate(families):
        depths = list(DEPTHS) if family in REFERENCE else [list(DEPTHS)[i % len(DEPTHS)]]
        for depth in depths:
            yield pytest.param(family, depth, id=f"{family}-{depth}")


@pytest.mark.parametrize(("family", "depth"), list(_cases()))
def test_one_schedule_object_resolves_on_every_family(family, depth):
    factory, build = tm.FAMILIES[family]
    model = factory(attn="sdpa", dtype=torch.float32, num_layers=depth)
    inputs = build(model, layout="mixed")
    with tokenprune.pruned(model, STRATEGY) as handle:
        assert handle.layers == DEPTHS[depth]
        assert handle.strategy is STRATEGY
        model(**inputs)
        stats = handle.stats
    plan = STRATEGY.scheduler.plan(depth, stats.num_visual)
    assert stats.visual_tokens == [list(row) for row in plan.tokens_per_layer()]
    first, second, third = DEPTHS[depth]
    for b, n in enumerate(stats.num_visual):
        assert stats.visual_tokens[first - 1][b] == n
        assert stats.visual_tokens[first][b] == int(n * 0.5)
        assert stats.visual_tokens[second][b] == int(n * 0.25)
        assert stats.visual_tokens[third][b] == int(n * 0.125)
        assert stats.visual_tokens[-1][b] == int(n * 0.125)
    assert any(n > 0 for n in stats.num_visual) and 0 in stats.num_visual  # the text-only row
