"""Temporal strategies (EVS, DyCoke's temporal stage, VidCom2, temporal + PyramidDrop) on LLaVA-OneVision.

OneVision pools every frame's projected features 2x2 and ends each video with one newline feature;
the temporal selection runs on the pooled ``frames x 4 x 4`` grid of each video, keeps the newline,
shrinks the ``<video>`` run, and keeps every kept token's original 1-D position. The exactness contract
on a batch mixing images and videos (`onevision_video.MIXED`: a 5-frame video; an AnyRes image; a
video and an image in one row; a text-only row; left padded), SDPA in float64:

1. identity: ratio 1 is bitwise the stock model (logits, generated ids); unwrap restores it;
2. cache: cached greedy generation == a no-cache forward over prompt + generated tokens;
3. batch invariance: every row == that row alone (prefill and decode), images untouched;
4. masked reference: the pruned model == the full-length stock model with the dropped video tokens
   masked out as keys; the positions the LLM receives are the full prompt's at the kept columns;
5. training: the loss equals that reference's and gradients reach the tower;
6. defining behaviour, recomputed from the pooled video features: each method's kept set, the newline kept;
7. clear errors: a selection that would reduce OneVision's images, reduction inside its tower; a
   one-frame video and an image-only batch pass whole.
"""

from __future__ import annotations

import functools

import pytest
import tiny_models as tm
import torch
import torch.nn.functional as F
from exactness import at_positions, record, replay_strategy
from onevision_video import FRAMES, PER_FRAME, VIDEO_TOKENS, extend, make_model, video_batch
from test_temporal_strategies import OPTIONS, PROJECTOR_ONLY, build
from test_zoo_qwen_projector import TOL, _Capture, _column, _diff, _generate, _masked_reference

import tokenprune
from tokenprune import VisionLanguageStrategy
from tokenprune.components.frame_uniqueness import allocate, uniqueness_scores
from tokenprune.errors import UnsupportedFeatureError

NAMES = list(OPTIONS)
GRID = FRAMES * PER_FRAME  # pooled tokens of one video (the newline comes after them)


@functools.cache
def _model():
    return make_model(attn="sdpa", dtype=torch.float64)


@functools.cache
def _stock():
    model = _model()
    inputs = video_batch(model)
    return model(**inputs).logits, *_generate(model, inputs)


@pytest.fixture(autouse=True)
def _unwrapped():
    yield
    model = _model()
    if isinstance(getattr(model, "tokenprune", None), tokenprune.WrapHandle):
        tokenprune.unwrap(model)
    model.eval()


def _llm_positions(model):
    """Capture the position ids the language model receives."""
    seen = {}

    def hook(module, args, kwargs):
        seen["positions"] = kwargs["position_ids"].detach().clone()

    return seen, model.model.language_model.register_forward_pre_hook(hook, with_kwargs=True)


# -- 1. identity --------------------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_keep_all_is_bitwise_identity_and_unwrap_restores(name):
    model = _model()
    inputs = video_batch(model)
    ref, ref_ids, ref_steps = _stock()
    with tokenprune.pruned(model, build(name, keep_all=True)) as handle:
        assert torch.equal(model(**inputs).logits, ref)
        ids, steps = _generate(model, inputs)
        assert handle.input_columns() is None
    assert torch.equal(ids, ref_ids) and all(torch.equal(a, b) for a, b in zip(steps, ref_steps))
    with tokenprune.pruned(model, build(name)):
        assert model(**inputs).logits.shape[1] < ref.shape[1]
        _generate(model, inputs)
    assert torch.equal(model(**inputs).logits, ref)


# -- 2. cache -----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_cached_decode_equals_uncached_forward(name):
    model = _model()
    inputs = video_batch(model)
    strategy = build(name)
    with tokenprune.pruned(model, strategy) as handle:
        ids, steps = _generate(model, inputs)
        kept = None
        if strategy.llm is None:
            logits = model(**extend(inputs, ids), use_cache=False).logits
        else:  # the LLM part ranks by the last token, which differs in a longer prompt: replay its selection
            selection = handle.selection()
            assert len(selection) == 4, "every PyramidDrop boundary should have removed tokens"
            scheduler = strategy.llm.scheduler
            replay = VisionLanguageStrategy(
                projector=strategy.projector, llm=replay_strategy(selection, scheduler.boundaries, scheduler.ratios)
            )
            tokenprune.unwrap(model)
            tokenprune.wrap(model, replay)
            handle = model.tokenprune
            logits = model(**extend(inputs, ids), use_cache=False).logits
            kept = handle.kept_positions()
        for t, step in enumerate(steps):
            diff = _diff(at_positions(logits, kept, _column(handle, inputs, t)), step)
            assert record("temporal cache", f"{name}-llava_onevision-sdpa-video", diff) <= TOL, f"step {t}"


# -- 3. batch invariance ------------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_batch_invariance_with_images_and_videos(name):
    model = _model()
    inputs = video_batch(model)
    with tokenprune.pruned(model, build(name)) as handle:
        kept = (lambda: handle.kept_positions()) if name == "temporal_pyramiddrop" else (lambda: None)
        mine = at_positions(model(**inputs).logits, kept(), _column(handle, inputs))
        projector = handle.tokens_per_layer()["projector"]
        batch_ids, batch_steps = _generate(model, inputs)
        for i in range(inputs["input_ids"].shape[0]):
            alone = tm.single_row(inputs, i)
            theirs = at_positions(model(**alone).logits, kept(), _column(handle, alone))
            diff = _diff(mine[i], theirs[0])
            assert record("temporal batch invariance", f"{name}-llava_onevision-sdpa-video", diff) <= TOL, f"row {i}"
            ids, steps = _generate(model, alone)
            assert torch.equal(ids[0, -2:], batch_ids[i, -2:]), f"row {i} generated ids"
            assert all(_diff(a[i], b[0]) <= TOL for a, b in zip(batch_steps, steps)), f"row {i} decode"
    strategy = build(name)
    assert projector == [strategy.projector.kept_count(GRID, (FRAMES, 4, 4)) + 1] * 2  # videos only, newline kept
    assert projector[0] < VIDEO_TOKENS


# -- 4./5. masked reference, positions, training ------------------------------------------------------
def _pruned_run(model, strategy, inputs):
    with tokenprune.pruned(model, strategy) as handle:
        capture = _Capture(model)
        seen, hook = _llm_positions(model)
        try:
            out = model(**inputs)
        finally:
            embeds = capture.close()
            hook.remove()
        cols = handle.input_columns()
    return out, cols, embeds, seen["positions"]


@pytest.mark.parametrize("name", PROJECTOR_ONLY)
def test_dropping_equals_masked_reference_and_keeps_positions(name):
    model = _model()
    inputs = video_batch(model)
    out, cols, embeds, positions = _pruned_run(model, build(name), inputs)
    real = cols >= 0
    reference = _masked_reference(model, inputs, cols, embeds).logits
    ref = reference.gather(1, cols.clamp(min=0).unsqueeze(-1).expand(-1, -1, reference.shape[-1]))
    diff = _diff(out.logits[real], ref[real])
    assert record("temporal masked reference", f"{name}-llava_onevision-sdpa-video", diff) <= TOL
    plain = model(**inputs).logits.gather(1, cols.clamp(min=0).unsqueeze(-1).expand(-1, -1, reference.shape[-1]))
    assert _diff(out.logits[real], plain[real]) > 1e-6  # the check has teeth
    taken = inputs["position_ids"].gather(1, cols.clamp(min=0))
    assert torch.equal(positions[real], taken[real])  # every kept token keeps its original position


def test_positions_without_position_ids_are_the_stock_defaults():
    """A bare forward (no position ids): the stock model numbers every row 0..L-1; kept tokens keep those."""
    model = _model()
    inputs = video_batch(model)
    del inputs["position_ids"]
    _, cols, _, positions = _pruned_run(model, build("evs"), inputs)
    real = cols >= 0
    assert torch.equal(positions[real], cols[real])


@pytest.mark.parametrize("name", PROJECTOR_ONLY)
def test_training_loss_equals_masked_reference_and_reaches_the_tower(name):
    model = _model()
    inputs = tm.add_labels(video_batch(model))
    model.train()
    try:
        model.zero_grad(set_to_none=True)
        out, cols, embeds, _ = _pruned_run(model, build(name), inputs)
        assert torch.isfinite(out.loss)
        out.loss.backward()
        tower = [p.grad for p in model.model.vision_tower.parameters() if p.grad is not None]
        assert tower and sum(g.abs().sum() for g in tower) > 0
        model.zero_grad(set_to_none=True)
        with torch.no_grad():
            ref = _masked_reference(model, inputs, cols, embeds).loss
    finally:
        model.zero_grad(set_to_none=True)
        model.eval()
    diff = abs(out.loss.item() - ref.item())
    assert record("temporal training loss", f"{name}-llava_onevision-sdpa-video", diff) <= 1e-6


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
    keep = int(0.3 * PER_FRAME)
    expected = []
    for t, reference in enumerate([None, 0, 0, 2, None]):  # frame 4 starts the second window
        if reference is None:
            expected += [t * PER_FRAME + i for i in range(PER_FRAME)]
            continue
        least = _first_k(F.cosine_similarity(x[t], x[reference], dim=-1), keep, descending=False)
        expected += [t * PER_FRAME + i for i in least]
    assert _video_kept(cols, inputs, 0) == [*expected, GRID]


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
