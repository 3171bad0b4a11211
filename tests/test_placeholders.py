"""`plan_compaction`: which columns survive when every image keeps fewer placeholders."""

from __future__ import annotations

import pytest
import torch

from tokenprune.encoder.placeholders import plan_compaction
from tokenprune.errors import UnsupportedFeatureError

I = 9  # placeholder id  # noqa: E741


def _rows(compaction, ids, fill=0):
    return compaction.take(torch.tensor(ids), fill).tolist()


def test_each_image_keeps_its_first_placeholders_and_rows_are_left_repadded():
    # a row whose placeholder count is not a multiple of the per-image count is rejected
    ids = [[0, 0, 1, I, I, I, I, 2], [I, I, 2, I, I, I, I, 3]]
    mask = [[0, 0, 1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1, 1, 1]]
    placeholders = torch.tensor(ids) == I
    with pytest.raises(UnsupportedFeatureError, match="not a multiple of 4"):
        plan_compaction(placeholders, torch.tensor(mask), per_image=4, kept=2)
    ids = [[0, 0, 0, 0, 1, I, I, I, I, 2], [I, I, I, I, 2, I, I, I, I, 3]]
    mask = [[0, 0, 0, 0, 1, 1, 1, 1, 1, 1], [1] * 10]
    plan = plan_compaction(torch.tensor(ids) == I, torch.tensor(mask), per_image=4, kept=2)
    assert plan.removed.tolist() == [2, 4]
    assert _rows(plan, ids, fill=-1) == [[-1, -1, 1, I, I, 2], [I, I, 2, I, I, 3]]
    assert _rows(plan, mask) == [[0, 0, 1, 1, 1, 1], [1] * 6]
    # a decode step: generated columns follow the prompt unchanged
    step = torch.cat([torch.tensor(mask), torch.ones(2, 2, dtype=torch.long)], 1)
    assert plan.decode_mask(step).tolist() == [[0, 0, 1, 1, 1, 1, 1, 1], [1] * 8]


def test_right_padding_stays_on_the_right_and_no_mask_needs_none():
    ids = [[1, I, I, 2, 0, 0], [I, I, I, I, 5, 6]]
    mask = [[1, 1, 1, 1, 0, 0], [1] * 6]
    plan = plan_compaction(torch.tensor(ids) == I, torch.tensor(mask), per_image=2, kept=1)
    assert _rows(plan, ids, fill=-1) == [[1, I, 2, -1], [I, I, 5, 6]]
    same = [[1, I, I, 2], [3, I, I, 4]]
    plan = plan_compaction(torch.tensor(same) == I, None, per_image=2, kept=1)
    assert bool(plan.real.all()) and _rows(plan, same) == [[1, I, 2], [3, I, 4]]


def test_nothing_to_remove_gives_none():
    ids = torch.tensor([[1, I, I, 2]])
    assert plan_compaction(ids == I, None, per_image=2, kept=2) is None
    assert plan_compaction(torch.tensor([[1, 2, 3]]) == I, None, per_image=2, kept=1) is None
