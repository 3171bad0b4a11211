"""Temporal strategies (EVS, DyCoke's temporal stage, VidCom2, temporal + PyramidDrop) on Qwen2-VL / Qwen2.5-VL
and LLaVA-OneVision (its defining-behaviour cells and errors: `test_temporal_onevision`).

The exactness contract on a batch that mixes images and videos (`video_inputs.MIXED`: a 5-patch
video; an image; a 4-patch video and an image in one row; a text-only row; left padded; OneVision:
`onevision_video.MIXED`, the same rows with 5-frame videos and AnyRes images), SDPA in float64:

1. identity: ratio 1 is bitwise the stock model (logits, generated ids); unwrap restores it;
2. cache: cached greedy generation == a no-cache forward over prompt + generated tokens;
3. batch invariance: every row == that row alone (prefill and decode), images untouched;
4. masked reference: the pruned model == the full-length stock model with the dropped video tokens
   masked out as keys; the positions the LLM receives are the full prompt's (Qwen: (t, h, w);
   OneVision: 1-D) at the kept columns;
5. training (one cell per strategy and family): the loss equals that reference's and gradients reach the tower;
6. defining behaviour of each method, recomputed here from the tower's video features, and the
   kept counts as pure functions of the grid and the rate;
7. clear errors: still images only (LLaVA-1.5), an LLM-side use (OneVision: `test_temporal_onevision`).
"""

from __future__ import annotations

import functools

import onevision_video
import pytest
import tiny_models as tm
import torch
import torch.nn.functional as F
from exactness import at_positions, record, replay_strategy
from test_zoo_qwen_projector import TOL, _Capture, _column, _diff, _extend, _generate, _masked_reference
from video_inputs import FRAME, video_batch

import tokenprune
from tokenprune import Strategy, VisionLanguageStrategy, get_registry
from tokenprune.components import StageScheduler
from tokenprune.components.frame_uniqueness import FrameUniquenessDrop, allocate, uniqueness_scores
from tokenprune.components.null import NullScorer
from tokenprune.components.static_patches import StaticPatchDrop
from tokenprune.components.temporal import TemporalInputError, TemporalSelection
from tokenprune.components.window_redundancy import WindowRedundancyDrop
from tokenprune.errors import IncompatibleComponentsError

OPTIONS = {
    "evs": {"ratio": 0.3},
    "dycoke": {"ratio": 0.3},
    "vidcom2": {"ratio": 0.25},
    "temporal_pyramiddrop": {"temporal": "evs", "temporal_ratio": 0.5},
}
KEEP_ALL = {"temporal_pyramiddrop": {"temporal_ratio": 1.0, "ratio": 1.0}}
PROJECTOR_ONLY = ["evs", "dycoke", "vidcom2"]
FAMILIES = ["qwen2_vl", "qwen2_5_vl", "llava_onevision"]
CELLS = [pytest.param(n, f, id=f"{n}-{f}") for n in OPTIONS for f in FAMILIES]
PER_FRAME = FRAME[0] * FRAME[1] // 4  # merged tokens per temporal patch


@functools.cache
def _model(family: str):
    if family == "llava_onevision":  # 32 px frames: 4 x 4 pooled tokens each
        return onevision_video.make_model(attn="sdpa", dtype=torch.float64)
    return tm.FAMILIES[family][0](attn="sdpa", dtype=torch.float64)


def _batch(model) -> dict:
    """The family's mixed image + video batch."""
    if model.config.model_type == "llava_onevision":
        return onevision_video.video_batch(model)
    return video_batch(model)


def _extend_prompt(inputs: dict, ids: torch.Tensor) -> dict:
    """Prompt + all generated tokens but the last (Qwen: `_extend`); OneVision's 1-D position ids continue the mask's."""
    if "mm_token_type_ids" in inputs:
        return _extend(inputs, ids)
    mask = inputs["attention_mask"]
    full = {**inputs, "input_ids": ids[:, :-1]}
    full["attention_mask"] = torch.cat([mask, mask.new_ones(ids.shape[0], ids.shape[1] - 1 - mask.shape[1])], dim=1)
    full["position_ids"] = tm._positions(full["attention_mask"])
    return full


def _tower(model):
    """The vision tower (Qwen: ``visual``; OneVision: ``vision_tower``)."""
    return getattr(model.model, "visual", None) or model.model.vision_tower


@functools.cache
def _stock(family: str):
    model = _model(family)
    inputs = _batch(model)
    return model(**inputs).logits, *_generate(model, inputs)


def build(name: str, keep_all: bool = False):
    options = KEEP_ALL.get(name, {"ratio": 1.0}) if keep_all else OPTIONS[name]
    return get_registry().build(name, **options)


@pytest.fixture(autouse=True)
def _unwrapped():
    yield
    for family in FAMILIES:
        model = _model(family)
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
@pytest.mark.parametrize("name, family", CELLS)
def test_keep_all_is_bitwise_identity_and_unwrap_restores(name, family):
    model = _model(family)
    inputs = _batch(model)
    ref, ref_ids, ref_steps = _stock(family)
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
@pytest.mark.parametrize("name, family", CELLS)
def test_cached_decode_equals_uncached_forward(name, family):
    model = _model(family)
    inputs = _batch(model)
    strategy = build(name)
    with tokenprune.pruned(model, strategy) as handle:
        ids, steps = _generate(model, inputs)
        kept = None
        if strategy.llm is None:
            logits = model(**_extend_prompt(inputs, ids), use_cache=False).logits
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
            logits = model(**_extend_prompt(inputs, ids), use_cache=False).logits
            kept = handle.kept_positions()
        for t, step in enumerate(steps):
            diff = _diff(at_positions(logits, kept, _column(handle, inputs, t)), step)
            assert record("temporal cache", f"{name}-{family}-sdpa-video", diff) <= TOL, f"step {t}"


# -- 3. batch invariance ------------------------------------------------------------------------
@pytest.mark.parametrize("name, family", CELLS)
def test_batch_invariance_with_images_and_videos(name, family):
    model = _model(family)
    inputs = _batch(model)
    with tokenprune.pruned(model, build(name)) as handle:
        kept = (lambda: handle.kept_positions()) if name == "temporal_pyramiddrop" else (lambda: None)
        mine = at_positions(model(**inputs).logits, kept(), _column(handle, inputs))
        projector = handle.tokens_per_layer()["projector"]
        batch_ids, batch_steps = _generate(model, inputs)
        for i in range(inputs["input_ids"].shape[0]):
            alone = tm.single_row(inputs, i)
            theirs = at_positions(model(**alone).logits, kept(), _column(handle, alone))
            assert record("temporal batch invariance", f"{name}-{family}-sdpa-video", _diff(mine[i], theirs[0])) <= TOL, f"row {i}"
            ids, steps = _generate(model, alone)
            assert torch.equal(ids[0, -2:], batch_ids[i, -2:]), f"row {i} generated ids"
            assert all(_diff(a[i], b[0]) <= TOL for a, b in zip(batch_steps, steps)), f"row {i} decode"
    if family == "llava_onevision":  # videos only (its images are not reduced before the LLM), the newline kept
        grid = (onevision_video.FRAMES, 4, 4)
        assert projector == [build(name).projector.kept_count(onevision_video.GRID, grid) + 1] * 2
        assert projector[0] < onevision_video.VIDEO_TOKENS
        return
    assert projector[:2] == [PER_FRAME, PER_FRAME]  # the two still images pass whole
    assert projector[2] < 5 * PER_FRAME and projector[3] < 4 * PER_FRAME


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
@pytest.mark.parametrize("family", FAMILIES)
def test_dropping_equals_masked_reference_and_keeps_positions(name, family):
    model = _model(family)
    inputs = _batch(model)
    out, cols, embeds, positions = _pruned_run(model, build(name), inputs)
    real = cols >= 0
    reference = _masked_reference(model, inputs, cols, embeds).logits
    ref = reference.gather(1, cols.clamp(min=0).unsqueeze(-1).expand(-1, -1, reference.shape[-1]))
    assert record("temporal masked reference", f"{name}-{family}-sdpa-video", _diff(out.logits[real], ref[real])) <= TOL
    plain = model(**inputs).logits.gather(1, cols.clamp(min=0).unsqueeze(-1).expand(-1, -1, reference.shape[-1]))
    assert _diff(out.logits[real], plain[real]) > 1e-6  # the check has teeth
    seen, hook = _llm_positions(model)
    try:
        model(**inputs)
    finally:
        hook.remove()
    full = seen["positions"]  # the stock prompt's: (t, h, w) rows (Qwen) or 1-D (OneVision)
    if full.dim() == 3:
        full, positions = full[-3:], positions[-3:]
    taken = full.gather(-1, cols.clamp(min=0).expand(*full.shape[:-2], -1, -1))
    assert torch.equal(positions[..., real], taken[..., real])  # every kept token keeps its position


@pytest.mark.parametrize("name", PROJECTOR_ONLY)
@pytest.mark.parametrize("family", ["qwen2_vl", "llava_onevision"])
def test_training_loss_equals_masked_reference_and_reaches_the_tower(name, family):
    model = _model(family)
    inputs = tm.add_labels(_batch(model))
    model.train()
    model.zero_grad(set_to_none=True)
    out, cols, embeds, _ = _pruned_run(model, build(name), inputs)
    assert torch.isfinite(out.loss)
    out.loss.backward()
    tower = [p.grad for p in _tower(model).parameters() if p.grad is not None]
    assert tower and sum(g.abs().sum() for g in tower) > 0
    model.zero_grad(set_to_none=True)
    with torch.no_grad():
        ref = _masked_reference(model, inputs, cols, embeds).loss
    diff = abs(out.loss.item() - ref.item())
    assert record("temporal training loss", f"{name}-{family}-sdpa-video", diff) <= 1e-6


# -- 6. defining behaviour ----------------------------------------------------------------------
def _video_features(model, inputs) -> list[torch.Tensor]:
    with torch.no_grad():
        return list(model.model.get_video_features(inputs["pixel_values_videos"], inputs["video_grid_thw"]).pooler_output)


def _video_kept(cols, inputs, row: int) -> list[int]:
    """Raster indices (within the row's video) of its kept tokens."""
    video = (inputs["input_ids"][row] == tm.VIDEO_ID).nonzero()[:, 0]
    lo, hi = int(video[0]), int(video[-1]) + 1
    kept = cols[row][(cols[row] >= lo) & (cols[row] < hi)]
    return (kept - lo).tolist()


def test_kept_counts_are_pure_functions_of_grid_and_rate():
    assert StaticPatchDrop().kept_count((5, 4, 4), 0.3) == 24  # max(16, int(80 * 0.3))
    assert StaticPatchDrop().kept_count((5, 4, 4), 0.1) == 16  # never below the first frame
    assert WindowRedundancyDrop().kept_count((5, 4, 4), 0.3) == 2 * 16 + 3 * 4  # 2 pivots, 3 frames of int(4.8)
    assert WindowRedundancyDrop().kept_count((8, 4, 4), 0.5) == 2 * 16 + 6 * 8
    assert FrameUniquenessDrop().kept_count((5, 4, 4), 0.25) == 20
    assert FrameUniquenessDrop().kept_count((5, 4, 4), 0.01) == 5  # one token per frame at least
    selection = TemporalSelection(0.3, NullScorer(), StaticPatchDrop())
    assert selection.kept_count(16, (1, 4, 4)) == 16  # a still image passes whole
    assert selection.kept_count(80, (5, 4, 4)) == 24
    assert allocate([1.0, 3.0], 8, 6) == [2, 6]
    assert allocate([1.0, 1.0, 1.0], 4, 4) == [2, 1, 1]  # remainder to the earlier frame
    assert sum(allocate([0.2, 5.0, 0.1], 9, 4)) == 9 and max(allocate([0.2, 5.0, 0.1], 9, 4)) == 4


def test_evs_keeps_first_frame_and_the_most_changed_tokens():
    """Patch 2 of the first video repeats patch 1 (same pixels): none of its tokens survive; the kept set
    is the first frame plus the top of 1 - cos to the previous frame, recomputed from the features."""
    model = _model("qwen2_vl")
    inputs = video_batch(model, static={0: [2]})
    features = _video_features(model, inputs)
    _, cols, _, _ = _pruned_run(model, build("evs"), inputs)
    for row, video in ((0, 0), (2, 1)):
        x = features[video].view(-1, PER_FRAME, features[video].shape[-1])
        change = torch.cat([torch.full((1, PER_FRAME), float("inf"), dtype=x.dtype), 1 - F.cosine_similarity(x[1:], x[:-1], dim=-1)])
        k = max(PER_FRAME, int(x.shape[0] * PER_FRAME * 0.3))
        top = torch.sort(torch.sort(change.flatten(), descending=True, stable=True).indices[:k]).values.tolist()
        assert _video_kept(cols, inputs, row) == top
    kept = _video_kept(cols, inputs, 0)
    assert set(range(PER_FRAME)) <= set(kept)
    assert not any(2 * PER_FRAME <= i < 3 * PER_FRAME for i in kept)  # the static patch is gone


def dycoke_kept(x: torch.Tensor, ratio: float) -> list[int]:
    """DyCoke's kept raster indices of a 5-frame video ``x`` (``(5, tokens per frame, d)``), recomputed:
    frames 0 and 4 start a window (kept whole); frames 1 and 2 keep their tokens least like frame 0,
    frame 3 those least like frame 2."""
    per_frame = x.shape[1]
    keep = int(ratio * per_frame)
    expected = []
    for t, reference in enumerate([None, 0, 0, 2, None]):
        if reference is None:
            expected += [t * per_frame + i for i in range(per_frame)]
            continue
        similarity = F.cosine_similarity(x[t], x[reference], dim=-1)
        least = torch.sort(torch.sort(similarity, stable=True).indices[:keep]).values
        expected += (t * per_frame + least).tolist()
    return expected


def test_dycoke_compares_each_frame_with_its_window_reference():
    model = _model("qwen2_vl")
    inputs = video_batch(model)
    features = _video_features(model, inputs)
    _, cols, _, _ = _pruned_run(model, build("dycoke"), inputs)
    assert _video_kept(cols, inputs, 0) == dycoke_kept(features[0].view(5, PER_FRAME, -1), 0.3)


def test_vidcom2_splits_the_budget_by_frame_uniqueness():
    """A video whose patches 1-3 repeat patch 0 and patch 4 is new: the new patch is the unique frame and
    gets the largest budget; every frame keeps its least typical tokens."""
    model = _model("qwen2_vl")
    inputs = video_batch(model, static={0: [1, 2, 3]})
    features = _video_features(model, inputs)
    _, cols, _, _ = _pruned_run(model, build("vidcom2"), inputs)
    kept = torch.tensor(_video_kept(cols, inputs, 0))
    per_frame = torch.bincount(kept // PER_FRAME, minlength=5).tolist()
    assert sum(per_frame) == 20
    assert per_frame[4] == max(per_frame) and per_frame[4] > 20 // 5
    scores, weight = uniqueness_scores(features[0], 5)
    assert per_frame == allocate(weight.tolist(), 20, PER_FRAME)
    for t in range(5):
        mine = kept[kept // PER_FRAME == t] % PER_FRAME
        expect = torch.sort(torch.sort(scores[t], stable=True).indices[: per_frame[t]]).values
        assert mine.tolist() == expect.tolist()


def test_temporal_then_pyramiddrop_counts():
    """EVS to half at the projector, then PyramidDrop's stages on what the LLM receives."""
    model = _model("qwen2_vl")
    inputs = video_batch(model)
    with tokenprune.pruned(model, build("temporal_pyramiddrop")) as handle:
        model(**inputs)
        per_layer = handle.tokens_per_layer()
    assert per_layer["projector"] == [16, 16, 40, 32]  # images whole; videos max(16, int(n / 2))
    assert per_layer["llm"][0] == [40, 16, 48, 0]  # row 2: its video and its image
    assert per_layer["llm"][-1] == [40 // 8, 16 // 8, 48 // 8, 0]


# -- 7. errors ----------------------------------------------------------------------------------
def test_still_images_and_unsupported_models_raise_clearly():
    llava = tm.FAMILIES["llava"][0](attn="sdpa", dtype=torch.float64)
    with tokenprune.pruned(llava, "evs"):
        with pytest.raises(TemporalInputError, match="no frame grid"):
            llava(**tm.FAMILIES["llava"][1](llava, layout="single"))
    with pytest.raises(IncompatibleComponentsError):
        Strategy(StageScheduler([2], [0.5]), NullScorer(), StaticPatchDrop())  # no LLM-side use
    model = _model("qwen2_vl")
    image_only = video_batch(model, [[3, "I", 5]])
    with tokenprune.pruned(model, "vidcom2") as handle:  # images alone: nothing to do, nothing removed
        assert model(**image_only).logits.shape[1] == image_only["input_ids"].shape[1]
        assert handle.tokens_per_layer()["projector"] == [PER_FRAME]
    reducer_on_image = TemporalSelection(0.5, NullScorer(), WindowRedundancyDrop())
    from tokenprune.encoder.packed import PackedContext

    ctx = PackedContext(layer_index=-1, layer=None, hidden=torch.zeros(1, 16, 4), positions=torch.arange(16)[None],
                        valid=torch.ones(1, 16, dtype=torch.bool), visual=torch.ones(1, 16, dtype=torch.bool),
                        query=torch.zeros(1, 1, dtype=torch.long), query_weight=torch.ones(1, 1), grid=(1, 4, 4))  # fmt: skip
    with pytest.raises(TemporalInputError, match="at least two frames"):
        reducer_on_image.reducer.reduce(ctx, torch.zeros(1, 16), ctx.visual, torch.tensor([8]))
