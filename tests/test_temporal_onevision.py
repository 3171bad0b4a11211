"""Temporal strategies on LLaVA-OneVision: what is particular to its video side.

OneVision pools every frame's projected features 2x2 and ends each video with one newline feature;
the temporal selection runs on the pooled ``frames x 4 x 4`` grid of each video, keeps the newline,
shrinks the ``<video>`` run, and keeps every kept token's original 1-D position. The exactness contract
cells (identity, cache, batch invariance with mixed image + video batches, masked reference and
positions, training) run OneVision next to Qwen in `test_temporal_strategies`; here:

* positions without ``position_ids``: the stock defaults at the kept columns;
* defining behaviour, recomputed from the pooled video features: each method's kept set, the newline kept;
* temporal + PyramidDrop counts;
* still images and one-frame videos pass whole; a selection that would reduce OneVision's images, and
  reduction inside its tower, are refused at ``wrap`` with the fix named.
"""

from __future__ import annotations

import pytest
import tiny_models as tm
import torch
import torch.nn.functional as F
from onevision_video import FRAMES, GRID, PER_FRAME, video_batch
from test_temporal_strategies import _model as _family_model
from test_temporal_strategies import _pruned_run, _unwrapped, build, dycoke_kept  # noqa: F401 - the autouse fixture unwraps

import tokenprune
from tokenprune.components.frame_uniqueness import allocate, uniqueness_scores
from tokenprune.errors import UnsupportedFeatureError


def _model():
    return _family_model("llava_onevision")


def test_positions_without_position_ids_are_the_stock_defaults():
    """A bare forward (no position ids): the stock model numbers every row 0..L-1; kept tokens keep those."""
    model = _model()
    inputs = video_batch(model)
    del inputs["position_ids"]
    _, cols, _, positions = _pruned_run(model, build("evs"), inputs)
    real = cols >= 0
    assert torch.equal(positions[real], cols[real])


# -- 6. defining behaviour ----------------------------------------------------------------------
def _pooled_frames(model, inputs) -> torch.Tensor:
    """``(videos, frames, 16, d)`` the pooled frame grids, recomputed by the stock model."""
    with torch.no_grad():
        features = model.model.get_video_features(inputs["pixel_values_videos"]).pooler_output
    return features[:, :GRID].reshape(features.shape[0], FRAMES, PER_FRAME, -1)


def _video_kept(cols, inputs, row: int) -> list[int]:
    """Indices (within the row's video run, newline last) of its kept tokens."""
    video = (inputs["input_ids"][row] == tm.VIDEO_ID).nonzero()[:, 0]
    lo, hi = int(video[0]), int(video[-1]) + 1
    kept = cols[row][(cols[row] >= lo) & (cols[row] < hi)]
    return (kept - lo).tolist()


def _first_k(values: torch.Tensor, k: int, descending: bool) -> list[int]:
    return torch.sort(torch.sort(values, descending=descending, stable=True).indices[:k]).values.tolist()


def test_evs_keeps_first_frame_the_most_changed_tokens_and_the_newline():
    """Frame 2 of the first video repeats frame 1 (same pixels): none of its tokens survive."""
    model = _model()
    inputs = video_batch(model, static={0: [2]})
    x = _pooled_frames(model, inputs)
    _, cols, _, _ = _pruned_run(model, build("evs"), inputs)
    for row, video in ((0, 0), (2, 1)):
        change = 1 - F.cosine_similarity(x[video, 1:], x[video, :-1], dim=-1)
        change = torch.cat([torch.full((1, PER_FRAME), float("inf"), dtype=x.dtype), change])
        top = _first_k(change.flatten(), max(PER_FRAME, int(GRID * 0.3)), descending=True)
        assert _video_kept(cols, inputs, row) == [*top, GRID]  # the newline stays, last
    kept = _video_kept(cols, inputs, 0)
    assert set(range(PER_FRAME)) <= set(kept)
    assert not any(2 * PER_FRAME <= i < 3 * PER_FRAME for i in kept)


def test_dycoke_compares_each_frame_with_its_window_reference():
    model = _model()
    inputs = video_batch(model)
    x = _pooled_frames(model, inputs)[0]
    _, cols, _, _ = _pruned_run(model, build("dycoke"), inputs)
    assert _video_kept(cols, inputs, 0) == [*dycoke_kept(x, 0.3), GRID]  # the newline stays, last


def test_vidcom2_splits_the_budget_by_frame_uniqueness():
    """Frames 2-4 repeat frame 1 and frame 0 differs: the one unlike the rest gets the largest budget."""
    model = _model()
    inputs = video_batch(model, static={0: [2, 3, 4]})
    x = _pooled_frames(model, inputs)[0]
    _, cols, _, _ = _pruned_run(model, build("vidcom2"), inputs)
    kept = _video_kept(cols, inputs, 0)
    assert kept[-1] == GRID  # the newline
    kept = torch.tensor(kept[:-1])
    per_frame = torch.bincount(kept // PER_FRAME, minlength=FRAMES).tolist()
    assert sum(per_frame) == int(GRID * 0.25)
    assert per_frame[0] == max(per_frame) and per_frame[0] > sum(per_frame) // FRAMES
    scores, weight = uniqueness_scores(x.reshape(GRID, -1), FRAMES)
    assert per_frame == allocate(weight.tolist(), sum(per_frame), PER_FRAME)
    for t in range(FRAMES):
        mine = (kept[kept // PER_FRAME == t] % PER_FRAME).tolist()
        assert mine == _first_k(scores[t], per_frame[t], descending=False)


def test_temporal_then_pyramiddrop_counts():
    """EVS to half at the projector (the newline kept), then PyramidDrop's stages on what the LLM receives."""
    model = _model()
    inputs = video_batch(model)
    image = tm.num_image_tokens(model.config)
    with tokenprune.pruned(model, build("temporal_pyramiddrop")) as handle:
        model(**inputs)
        per_layer = handle.tokens_per_layer()
    video = GRID // 2 + 1
    assert per_layer["projector"] == [video, video]
    assert per_layer["llm"][0] == [video, image, video + image, 0]
    assert per_layer["llm"][-1] == [video // 8, image // 8, (video + image) // 8, 0]


# -- 7. errors and still images -----------------------------------------------------------------
def test_images_and_one_frame_videos_pass_whole():
    model = _model()
    images_only = video_batch(model, [[3, "I", 5], [9]])
    with tokenprune.pruned(model, "evs") as handle:
        assert model(**images_only).logits.shape[1] == images_only["input_ids"].shape[1]
        assert handle.input_columns() is None and handle.tokens_per_layer()["projector"] == []
    one_frame = video_batch(model, [[3, "V", 5]])
    one_frame["pixel_values_videos"] = one_frame["pixel_values_videos"][:, :1]
    keep = (one_frame["input_ids"] != tm.VIDEO_ID) | (torch.arange(one_frame["input_ids"].shape[1]) < 3 + PER_FRAME + 1)
    for key in ("input_ids", "attention_mask", "position_ids"):
        one_frame[key] = one_frame[key][keep][None]
    ref = model(**one_frame).logits
    with tokenprune.pruned(model, "vidcom2") as handle:
        assert torch.equal(model(**one_frame).logits, ref)  # a still frame: nothing to compare it with
        assert handle.tokens_per_layer()["projector"] == [PER_FRAME + 1]


def test_reducing_images_or_the_tower_is_refused_clearly():
    model = _model()
    with pytest.raises(UnsupportedFeatureError, match="only its videos can.*temporal strategy"):
        tokenprune.wrap(model, "divprune")
    with pytest.raises(UnsupportedFeatureError, match="inside the vision tower.*pooled 2x2"):
        tokenprune.wrap(model, "tome", r=2)
    assert not isinstance(getattr(model, "tokenprune", None), tokenprune.WrapHandle)  # nothing half-applied
