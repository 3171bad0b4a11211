"""The projector-side zoo on Qwen2-VL and Qwen2.5-VL: the exactness contract and each strategy's
defining behaviour on a packed vision side with per-image token counts and M-RoPE.

Cells: visionzip, divprune, pooling, downsample and the projector-side merge (ToMe's stand-in,
`ProjectorSelection(r, NullScorer(), BipartiteMerge())`) on Qwen2-VL, visionzip on Qwen2.5-VL
(window-attention tower); SDPA in float64; the "mixed" layout (left padding; rows with 1 square
image, a square and a wide image, and no image), plus a video row for pooling and visionzip.

1. identity: ratio 1 is bitwise the stock model (logits, generated ids); unwrap restores it;
2. cache: cached greedy generation == a no-cache forward over prompt + generated tokens;
3. batch invariance: every row of the mixed batch == that row alone (prefill and decode);
4. masked reference: kept tokens keep their original positions, so the pruned model equals the
   full-length stock model in which the dropped visual tokens are masked out as keys and the kept
   slots hold the reduced (for merging reducers: merged) features;
5. training: the loss equals that reference's loss, and gradients reach the vision tower;
6. defining behaviour: downsample keeps a regular grid of the real (non-square) merged grid,
   pooling averages the right cells, divprune's kept set is the greedy max-min one, visionzip keeps
   the tokens that receive the most attention in the tower's last block.
"""

from __future__ import annotations

import sys

import pytest
import tiny_models as tm
import tiny_models_qwen_internvl as tq
import torch
from exactness import LogitTap, at_positions, last_positions, record

import tokenprune
from tokenprune import ProjectorSelection, Strategy, VisionLanguageStrategy, get_registry
from tokenprune.components import BipartiteMerge, ConstantRateScheduler, NullScorer
from tokenprune.components.diversity import greedy_max_min
from tokenprune.components.merge import cosine_similarity_matrix
from tokenprune.errors import ScheduleError, UnsupportedFeatureError

TOL = 1e-12
NEW_TOKENS = 2
OPTIONS = {
    "visionzip": {"ratio": 0.5, "contextual": 0.25, "scorer": "received"},
    "divprune": {"ratio": 0.5},
    "pooling": {"ratio": 0.25},
    "downsample": {"ratio": 0.25},
}
CELLS = [*((name, "qwen2_vl") for name in [*OPTIONS, "merge"]), ("visionzip", "qwen2_5_vl")]
IDS = [f"{n}-{f}" for n, f in CELLS]


def strategy(name: str, ratio: float | None = None, **override):
    if name == "merge":
        return VisionLanguageStrategy(projector=ProjectorSelection(ratio or 0.5, NullScorer(), BipartiteMerge()), name="merge")
    options = {**OPTIONS[name], **override}
    if ratio is not None:
        options["ratio"] = ratio
    return get_registry().build(name, **options)


@pytest.fixture(scope="module")
def models():
    return {family: tm.FAMILIES[family][0](attn="sdpa", dtype=torch.float64) for family in ("qwen2_vl", "qwen2_5_vl")}


@pytest.fixture(scope="module")
def stock(models):
    """family -> (logits, generated ids, raw step logits) of the unwrapped model on the mixed batch."""
    out = {}
    for family, model in models.items():
        inputs = _inputs(model)
        out[family] = (model(**inputs).logits, *_generate(model, inputs))
    return out


def _inputs(model, layout: str = "mixed") -> dict:
    family = model.config.model_type
    return tm.FAMILIES[family][1](model, layout=layout)


def _generate(model, inputs):
    tap = LogitTap(model)
    out = model.generate(**inputs, max_new_tokens=NEW_TOKENS, do_sample=False)
    return out, [s[:, -1] for s in tap.close()]


def _column(handle, inputs, offset: int = 0):
    """Column of each row's last prompt token (+ offset) in the layout the wrapped model ran on."""
    last = last_positions(inputs["attention_mask"]) + offset
    cols = handle.input_columns()
    return last if cols is None else (cols == last[:, None]).int().argmax(1)


def _diff(a, b) -> float:
    return (a.double() - b.double()).abs().max().item()


def _extend(inputs, ids):
    """Prompt + all generated tokens but the last, for a no-cache forward (text continues the mask)."""
    extra = ids.shape[1] - 1 - inputs["input_ids"].shape[1]
    full = dict(inputs)
    full["input_ids"] = ids[:, :-1]
    for key in ("attention_mask", "mm_token_type_ids"):
        tail = torch.full((ids.shape[0], extra), int(key == "attention_mask"), dtype=inputs[key].dtype)
        full[key] = torch.cat([inputs[key], tail], dim=1)
    return full


# -- 1. identity --------------------------------------------------------------------------------
@pytest.mark.parametrize("name, family", CELLS, ids=IDS)
def test_keep_all_is_bitwise_identity_and_unwrap_restores(models, stock, name, family):
    model = models[family]
    inputs = _inputs(model)
    ref, ref_ids, ref_steps = stock[family]
    with tokenprune.pruned(model, strategy(name, ratio=1.0)) as handle:
        assert torch.equal(model(**inputs).logits, ref)
        ids, steps = _generate(model, inputs)
        assert handle.input_columns() is None
    assert torch.equal(ids, ref_ids) and all(torch.equal(a, b) for a, b in zip(steps, ref_steps))
    with tokenprune.pruned(model, strategy(name)) as handle:
        assert model(**inputs).logits.shape[1] < ref.shape[1]
        kept = handle.tokens_per_layer()["projector"]
        _generate(model, inputs)
    ratio = strategy(name).projector.ratio
    assert kept == [int(16 * ratio), int(16 * ratio), int(24 * ratio)]  # square, square, wide image
    assert torch.equal(model(**inputs).logits, ref)


# -- 2. cache -----------------------------------------------------------------------------------
@pytest.mark.parametrize("name, family", CELLS, ids=IDS)
def test_cached_decode_equals_uncached_forward(models, name, family):
    model = models[family]
    inputs = _inputs(model)
    with tokenprune.pruned(model, strategy(name)) as handle:
        ids, steps = _generate(model, inputs)
        logits = model(**_extend(inputs, ids), use_cache=False).logits
        for t, step in enumerate(steps):
            got = at_positions(logits, None, _column(handle, inputs, t))
            assert record("qwen projector cache", f"{name}-{family}-sdpa-mixed", _diff(got, step)) <= TOL


def test_manual_decode_without_position_ids_continues_the_original_positions(models):
    """A decode step without position ids (no generate) gets the full prompt's positions + rope_deltas."""
    model = models["qwen2_vl"]
    inputs = _inputs(model, "single")
    inputs.pop("attention_mask")
    with tokenprune.pruned(model, strategy("divprune")):
        ids, steps = _generate(model, inputs)
        out = model(**inputs, use_cache=True)
        step = model(input_ids=ids[:, -NEW_TOKENS:-NEW_TOKENS + 1], cache=out.cache).logits[:, -1]
    assert _diff(out.logits[:, -1], steps[0]) <= TOL and _diff(step, steps[1]) <= TOL


# -- 3. batch invariance ------------------------------------------------------------------------
@pytest.mark.parametrize("name, family", CELLS, ids=IDS)
def test_batch_invariance(models, name, family):
    model = models[family]
    inputs = _inputs(model)
    with tokenprune.pruned(model, strategy(name)) as handle:
        mine = at_positions(model(**inputs).logits, None, _column(handle, inputs))
        batch_ids, batch_steps = _generate(model, inputs)
        for i in range(inputs["input_ids"].shape[0]):
            alone = tm.single_row(inputs, i)
            theirs = at_positions(model(**alone).logits, None, _column(handle, alone))
            cell = f"{name}-{family}-sdpa-mixed"
            assert record("qwen projector batch invariance", cell, _diff(mine[i], theirs[0])) <= TOL, f"row {i}"
            ids, steps = _generate(model, alone)
            assert torch.equal(ids[0, -NEW_TOKENS:], batch_ids[i, -NEW_TOKENS:]), f"row {i} generated ids"
            assert all(_diff(a[i], b[0]) <= TOL for a, b in zip(batch_steps, steps)), f"row {i} decode"


# -- 4./5. masked reference and training ----------------------------------------------------------
class _Capture:
    """The ``inputs_embeds`` the language model receives (the features at every kept slot)."""

    def __init__(self, model):
        self.embeds = None
        self.handle = model.model.language_model.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, module, args, kwargs):
        self.embeds = kwargs["inputs_embeds"].detach().clone()

    def close(self):
        self.handle.remove()
        return self.embeds


def _masked_reference(model, inputs, cols, kept_embeds):
    """The unwrapped full-length model: the kept slots hold the pruned run's features, dropped visual
    tokens are hidden as keys in every layer; positions are the stock model's own."""
    batch, length = inputs["input_ids"].shape
    real = cols >= 0
    present = torch.zeros(batch, length, dtype=torch.bool)
    present[torch.arange(batch)[:, None].expand_as(cols)[real], cols[real]] = True
    keys = present & inputs["attention_mask"].bool()
    causal = torch.tril(torch.ones(length, length, dtype=torch.bool))
    allowed = ((causal[None] & keys[:, None, :]) | torch.eye(length, dtype=torch.bool)[None])[:, None]

    def substitute(module, args, kwargs):
        embeds = kwargs["inputs_embeds"].clone()
        rows = torch.arange(batch)[:, None].expand_as(cols)
        embeds[rows[real], cols[real]] = kept_embeds[real]
        return args, {**kwargs, "inputs_embeds": embeds}

    def mask(module, args, kwargs):
        return args, {**kwargs, "attention_mask": allowed}

    handles = [model.model.language_model.register_forward_pre_hook(substitute, with_kwargs=True)]
    handles += [layer.register_forward_pre_hook(mask, with_kwargs=True) for layer in model.model.language_model.layers]
    try:
        return model(**inputs)
    finally:
        for h in handles:
            h.remove()


def _pruned_run(model, name, inputs):
    with tokenprune.pruned(model, strategy(name)) as handle:
        capture = _Capture(model)
        try:
            out = model(**inputs)
        finally:
            embeds = capture.close()
        cols = handle.input_columns()
    return out, cols, embeds


@pytest.mark.parametrize("name, family", CELLS, ids=IDS)
def test_dropping_equals_masked_reference(models, name, family):
    model = models[family]
    inputs = _inputs(model)
    out, cols, embeds = _pruned_run(model, name, inputs)
    reference = _masked_reference(model, inputs, cols, embeds).logits
    real = cols >= 0
    ref = reference.gather(1, cols.clamp(min=0).unsqueeze(-1).expand(-1, -1, reference.shape[-1]))
    diff = record("qwen projector masked reference", f"{name}-{family}-sdpa-mixed", _diff(out.logits[real], ref[real]))
    assert diff <= TOL
    stock = _Capture(model)
    plain = model(**inputs).logits.gather(1, cols.clamp(min=0).unsqueeze(-1).expand(-1, -1, reference.shape[-1]))
    full_embeds = stock.close()
    assert _diff(out.logits[real], plain[real]) > 1e-6  # the check has teeth
    rows = torch.arange(cols.shape[0])[:, None].expand_as(cols)
    same = (full_embeds[rows[real], cols[real]] == embeds[real]).all(-1)
    if name in ("divprune", "downsample"):  # dropping reducers pass the kept features unchanged
        assert bool(same.all())
    else:  # merging reducers changed some features
        assert not bool(same.all())


@pytest.mark.parametrize("name, family", [("pooling", "qwen2_vl"), ("visionzip", "qwen2_5_vl")], ids=["pooling-qwen2_vl", "visionzip-qwen2_5_vl"])
def test_training_loss_equals_masked_reference_and_reaches_the_tower(models, name, family):
    model = models[family]
    inputs = tm.add_labels(_inputs(model))
    model.train()
    try:
        model.zero_grad(set_to_none=True)
        out, cols, embeds = _pruned_run(model, name, inputs)
        assert torch.isfinite(out.loss)
        out.loss.backward()
        tower = [p.grad for p in model.model.visual.parameters() if p.grad is not None]
        assert tower and all(torch.isfinite(g).all() for g in tower) and sum(g.abs().sum() for g in tower) > 0
        model.zero_grad(set_to_none=True)
        with torch.no_grad():
            ref = _masked_reference(model, inputs, cols, embeds).loss
    finally:
        model.zero_grad(set_to_none=True)
        model.eval()
    # transformers' loss upcasts logits to float32
    assert record("qwen projector training loss", f"{name}-{family}-sdpa-mixed", abs(out.loss.item() - ref.item())) <= 1e-6


# -- 6. defining behaviour ----------------------------------------------------------------------
def _image_features(model, inputs) -> list[torch.Tensor]:
    with torch.no_grad():
        return list(model.model.get_image_features(inputs["pixel_values"], inputs["image_grid_thw"]).pooler_output)


def _image_span(inputs, row: int, image: int) -> tuple[int, int]:
    """``[start, end)`` columns of the `image`-th placeholder run of `row`."""
    spans, start = [], None
    for j, tok in enumerate(inputs["input_ids"][row].tolist() + [None]):
        if tok == tm.IMAGE_ID and start is None:
            start = j
        elif tok != tm.IMAGE_ID and start is not None:
            spans.append((start, j))
            start = None
    return spans[image]


def _kept_in_image(cols, inputs, row: int, image: int) -> list[int]:
    """Raster indices (within the image) of the kept tokens of the `image`-th image of `row`."""
    lo, hi = _image_span(inputs, row, image)
    kept = cols[row][(cols[row] >= lo) & (cols[row] < hi)]
    return (kept - lo).tolist()


def _slots_of_image(cols, inputs, row: int, image: int) -> torch.Tensor:
    """Columns of the shortened prompt that hold the kept tokens of that image."""
    lo, hi = _image_span(inputs, row, image)
    return ((cols[row] >= lo) & (cols[row] < hi)).nonzero()[:, 0]


def test_downsample_and_pooling_use_the_real_non_square_grid(models):
    model = models["qwen2_vl"]
    inputs = _inputs(model)
    wide = _image_features(model, inputs)[2]  # row 1's second image: grid 4 x 6 merged tokens
    for name in ("downsample", "pooling"):
        out, cols, embeds = _pruned_run(model, name, inputs)
        kept = _kept_in_image(cols, inputs, 1, 1)
        assert kept == [0, 2, 4, 12, 14, 16]  # a 2 x 3 grid: rows {0, 2} x cols {0, 2, 4} of 4 x 6
        assert _kept_in_image(cols, inputs, 0, 0) == [0, 2, 8, 10]  # 2 x 2 of the square 4 x 4 image
        got = embeds[1, _slots_of_image(cols, inputs, 1, 1)]
        if name == "downsample":
            expect = wide[kept]
        else:  # every kept token is the mean of its 2 x 2 cell
            grid = wide.view(4, 6, -1)
            expect = torch.stack([grid[r : r + 2, c : c + 2].reshape(4, -1).mean(0) for r in (0, 2) for c in (0, 2, 4)])
        assert _diff(got, expect) <= TOL
    with tokenprune.pruned(model, strategy("pooling", ratio=0.5)):
        with pytest.raises(ScheduleError, match="regular grid of cells"):
            model(**inputs)


def test_divprune_keeps_the_greedy_max_min_set(models):
    model = models["qwen2_vl"]
    inputs = _inputs(model)
    features = _image_features(model, inputs)
    _, cols, _ = _pruned_run(model, "divprune", inputs)
    for (row, image), f in zip([(0, 0), (1, 0), (1, 1)], features):
        distance = 1 - cosine_similarity_matrix(f.unsqueeze(0))[0]
        assert _kept_in_image(cols, inputs, row, image) == greedy_max_min(distance, f.shape[0] // 2).tolist()


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen2_5_vl"])
def test_visionzip_keeps_the_tokens_most_attended_in_the_last_tower_block(models, family):
    """Dominant tokens (contextual=0) == top-k of the attention each merged token receives in the tower's
    last block, rebuilt here from the stock rotary code and checked against the block's own output.
    Qwen2.5-VL runs its blocks in window order: the merger's rows are matched to the output's to undo it."""
    model = models[family]
    inputs = _inputs(model)
    visual = model.model.visual
    block = visual.blocks[-1]
    seen = {}

    def grab(module, args, kwargs, output):
        seen.update(x=args[0], output=output, **kwargs)

    handles = [block.attn.register_forward_hook(grab, with_kwargs=True)]
    handles.append(visual.merger.register_forward_hook(lambda m, a, out: seen.update(merged=out)))
    try:
        features = _image_features(model, inputs)
    finally:
        for h in handles:
            h.remove()
    attn, x = block.attn, seen["x"]
    q, k, v = attn.qkv(x).reshape(x.shape[0], 3, attn.num_heads, -1).permute(1, 0, 2, 3).unbind(0)
    rotary = sys.modules[type(attn).__module__].apply_rotary_pos_emb_vision
    q, k = rotary(q, k, *seen["position_embeddings"])
    bounds = seen["cu_seqlens"].tolist()
    received, outputs = [], []
    for a, b in zip(bounds[:-1], bounds[1:]):
        probs = torch.softmax(torch.einsum("qhd,khd->hqk", q[a:b], k[a:b]) * attn.scaling, dim=-1)
        outputs.append(torch.einsum("hqk,khd->qhd", probs, v[a:b]).reshape(b - a, -1))
        received.append(probs.mean((0, 1)).view(-1, 4).mean(-1))  # per merged token, block order
    assert _diff(attn.proj(torch.cat(outputs)), seen["output"]) <= TOL  # these are the block's probabilities
    raster = torch.cat(features)
    order = torch.cdist(raster, seen["merged"]).argmin(-1)  # block row of every output row
    assert torch.equal(seen["merged"][order], raster)
    scores = torch.cat(received)[order].split([f.shape[0] for f in features])
    with tokenprune.pruned(model, strategy("visionzip", contextual=0.0)) as h:
        model(**inputs)
        cols = h.input_columns()
    for (row, image), score in zip([(0, 0), (1, 0), (1, 1)], scores):
        top = torch.sort(torch.topk(score, score.numel() // 2).indices).values.tolist()
        assert _kept_in_image(cols, inputs, row, image) == top


def test_merge_is_bipartite_soft_matching_of_each_image(models):
    """Half of an image's tokens: one round of ToMe matching. Set A (even raster index) merges into its
    most similar B token (odd index); every B token becomes the mean of itself and its A tokens."""
    model = models["qwen2_vl"]
    inputs = _inputs(model)
    features = _image_features(model, inputs)[0]
    _, cols, embeds = _pruned_run(model, "merge", inputs)
    assert _kept_in_image(cols, inputs, 0, 0) == list(range(1, 16, 2))
    a, b = features[0::2], features[1::2]
    partner = (torch.nn.functional.normalize(a, dim=-1) @ torch.nn.functional.normalize(b, dim=-1).T).argmax(-1)
    expect = torch.stack([(b[j] + a[partner == j].sum(0)) / (1 + (partner == j).sum()) for j in range(8)])
    assert _diff(embeds[0, _slots_of_image(cols, inputs, 0, 0)], expect) <= TOL


def test_unsupported_uses_raise_clearly(models):
    model = models["qwen2_vl"]
    inside = VisionLanguageStrategy(encoder=Strategy(ConstantRateScheduler(2, 1), NullScorer(), BipartiteMerge()))
    with pytest.raises(UnsupportedFeatureError, match=r"ProjectorSelection\(ratio, NullScorer\(\), BipartiteMerge\(\)\)"):
        tokenprune.wrap(model, inside)
    assert not hasattr(model, "tokenprune")
    with pytest.raises(UnsupportedFeatureError, match="BipartiteMerge"):
        tokenprune.wrap(model.model.visual, "tome", r=2)
    with tokenprune.pruned(model, get_registry().build("visionzip", scorer="cls")):  # forced [CLS] attention
        with pytest.raises(UnsupportedFeatureError, match="no class token"):
            model(**_inputs(model, "single"))
    qwen3 = tq.make_qwen3_vl(num_layers=2)
    with pytest.raises(UnsupportedFeatureError, match="DeepStack"):
        tokenprune.wrap(qwen3, strategy("divprune"))


def test_projector_selection_composes_with_llm_side_pyramiddrop(models):
    """DivPrune at the projector, then PyramidDrop in the LLM: every row of the mixed batch equals the row alone."""
    model = models["qwen2_vl"]
    inputs = _inputs(model)
    both = VisionLanguageStrategy(
        projector=strategy("divprune").projector, llm=get_registry().build("pyramiddrop", ratio=0.5)
    )
    with tokenprune.pruned(model, both) as handle:
        mine = at_positions(model(**inputs).logits, handle.kept_positions(), _column(handle, inputs))
        per_layer = handle.tokens_per_layer()
        for i in range(inputs["input_ids"].shape[0]):
            alone = tm.single_row(inputs, i)
            theirs = at_positions(model(**alone).logits, handle.kept_positions(), _column(handle, alone))
            assert _diff(mine[i], theirs[0]) <= TOL, f"row {i}"
    assert per_layer["projector"] == [8, 8, 12]
    assert per_layer["llm"][0] == [8, 20, 0] and per_layer["llm"][-1] == [1, 2, 0]


@pytest.mark.parametrize("name", ["pooling", "visionzip"])
def test_video_and_image_rows(models, name):
    """A 4-frame video (2 x 4 x 4 merged tokens; Qwen2-VL attends within each frame) next to an image row:
    per-frame cells for pooling, per-frame attention segments for visionzip; batch invariance, masked
    reference and cached decoding."""
    model = models["qwen2_vl"]
    inputs = _inputs(model, "video")
    out, cols, embeds = _pruned_run(model, name, inputs)
    reference = _masked_reference(model, inputs, cols, embeds).logits
    real = cols >= 0
    ref = reference.gather(1, cols.clamp(min=0).unsqueeze(-1).expand(-1, -1, reference.shape[-1]))
    assert record("qwen projector masked reference", f"{name}-qwen2_vl-sdpa-video", _diff(out.logits[real], ref[real])) <= TOL
    with tokenprune.pruned(model, strategy(name)) as handle:
        mine = at_positions(model(**inputs).logits, None, _column(handle, inputs))
        kept = handle.tokens_per_layer()["projector"]
        for i in range(2):
            alone = tm.single_row(inputs, i)
            theirs = at_positions(model(**alone).logits, None, _column(handle, alone))
            assert _diff(mine[i], theirs[0]) <= TOL, f"row {i}"
        ids, steps = _generate(model, inputs)
        logits = model(**_extend(inputs, ids), use_cache=False).logits
        for t, step in enumerate(steps):
            assert _diff(at_positions(logits, None, _column(handle, inputs, t)), step) <= TOL
    ratio = strategy(name).projector.ratio
    assert kept == [int(16 * ratio), int(32 * ratio)]  # the image, then the video
    if name == "pooling":  # 2 x 2 cells in each of the two frames
        video = cols[0][(inputs["input_ids"][0, cols[0].clamp(min=0)] == tm.VIDEO_ID) & real[0]]
        first = int((inputs["input_ids"][0] == tm.VIDEO_ID).nonzero()[0])
        assert (video - first).tolist() == [0, 2, 8, 10, 16, 18, 24, 26]


def test_beam_search_and_several_sequences_per_prompt(models):
    """generate repeats each prompt's encoded images for beams / num_return_sequences; every copy is
    still matched to its own image (its grid and scores)."""
    model = models["qwen2_vl"]
    inputs = _inputs(model)
    with tokenprune.pruned(model, strategy("pooling")) as handle:
        greedy = model.generate(**inputs, max_new_tokens=NEW_TOKENS, do_sample=False)
        twice = model.generate(**inputs, max_new_tokens=NEW_TOKENS, do_sample=False, num_return_sequences=2, num_beams=2)
        assert handle.tokens_per_layer()["projector"] == [4, 4, 4, 6, 4, 6]  # each image twice, in row order
        beams = model.generate(**inputs, max_new_tokens=NEW_TOKENS, num_beams=3, do_sample=False)
    assert twice.shape[0] == 6 and beams.shape == greedy.shape


def test_visionzip_default_scorer_uses_received_attention_on_a_tower_without_cls(models):
    """``scorer="auto"`` (the default) picks the attention each merged token receives on Qwen (no [CLS])."""
    model = models["qwen2_vl"]
    inputs = _inputs(model)
    with tokenprune.pruned(model, get_registry().build("visionzip", ratio=0.5, contextual=0.25, scorer="received")):
        ref = model(**inputs).logits
    with tokenprune.pruned(model, get_registry().build("visionzip", ratio=0.5, contextual=0.25)) as handle:
        assert torch.equal(model(**inputs).logits, ref)
        assert handle.tokens_per_layer()["projector"] == [8, 8, 12]
    with tokenprune.pruned(model, get_registry().build("visionzip", ratio=0.5, scorer="cls")):
        with pytest.raises(UnsupportedFeatureError, match="no class token"):
            model(**inputs)
