"""Checks of the tiny Qwen2-VL / Qwen2.5-VL / Qwen3-VL / InternVL builders.

They live in tests/tiny_models_qwen_internvl.py and are registered into tiny_models.FAMILIES.
Same contract as test_tiny_models.py for the LLaVA families: every family x {sdpa float64, eager
float32} x layout runs forward and `generate`; placeholder counts match the vision path; a sample
of a batch equals the same sample alone (`tiny_models.single_row`); `add_labels` gives a loss.
Plus the Qwen specifics: M-RoPE ids computed by the model == the ids `generate` passes, the
required `mm_token_type_ids`, Qwen3-VL DeepStack, and the Qwen3-VL per-frame video layout.
"""

from functools import lru_cache

import pytest
import torch

import tiny_models as tm
import tiny_models_qwen_internvl as tq

NEW = list(tq.FAMILIES)
QWEN = list(tq.QWEN_FAMILIES)
INTERNVL = list(tq.INTERNVL_FAMILIES)
BACKENDS = {"sdpa": torch.float64, "eager": torch.float32}
CELLS = [(fam, attn, layout) for fam in NEW for attn in BACKENDS for layout in tq.LAYOUTS[fam]]


@lru_cache(maxsize=None)
def model_for(family: str, attn: str = "sdpa"):
    """Models are only read by these tests, so one instance per configuration is shared."""
    return tm.FAMILIES[family][0](attn=attn, dtype=BACKENDS[attn])


def inputs_for(model, family: str, layout: str) -> dict:
    return tm.FAMILIES[family][1](model, layout=layout)


def last_real(attention_mask: torch.Tensor) -> torch.Tensor:
    ar = torch.arange(attention_mask.shape[1])
    return torch.where(attention_mask.bool(), ar, -1).max(1).values


def test_registered_in_tiny_models():
    for fam in NEW:
        assert tm.FAMILIES[fam] == tq.FAMILIES[fam] and tm.LAYOUTS[fam] == tq.LAYOUTS[fam]
        assert tm.VISUAL_IDS[fam] == tq.VISUAL_IDS[fam]
    assert tm.VISUAL_IDS["qwen2_vl"] == (tm.IMAGE_ID, tm.VIDEO_ID)
    assert tm.VISUAL_IDS["internvl_llama"] == (tm.IMAGE_ID,)
    assert list(tm.FAMILIES)[:3] == ["llava", "llava_next", "llava_onevision"]
    for fam in QWEN:
        assert "video" in tm.LAYOUTS[fam]
    for fam in INTERNVL:
        assert "multi_tile" in tm.LAYOUTS[fam]


@pytest.mark.parametrize("family, attn, layout", CELLS)
def test_forward_and_generate(family, attn, layout):
    model = model_for(family, attn)
    inputs = inputs_for(model, family, layout)
    for key in ("pixel_values", "pixel_values_videos"):
        if key in inputs:
            assert inputs[key].dtype == model.dtype
    with torch.no_grad():
        logits = model(**inputs).logits
    batch, length = inputs["input_ids"].shape
    assert logits.shape == (batch, length, tm.VOCAB_SIZE)
    assert torch.isfinite(logits[inputs["attention_mask"].bool()]).all()

    gen_inputs = {k: v for k, v in inputs.items() if k != "position_ids"}  # generate builds its own
    out = model.generate(**gen_inputs, max_new_tokens=4, do_sample=False)
    assert out.shape == (batch, length + 4)
    assert torch.equal(out[:, :length], inputs["input_ids"])
    assert not torch.isin(out[:, length:], torch.tensor(tq.SPECIAL_IDS)).any()


@pytest.mark.parametrize("family", NEW)
def test_config_and_attention_implementation(family):
    for attn in BACKENDS:
        model = model_for(family, attn)
        cfg, text = model.config, model.config.text_config
        assert model.dtype == BACKENDS[attn] and not model.training
        configs = [getattr(m, "config", None) for m in model.modules()]
        configs = [c for c in configs if hasattr(c, "_attn_implementation")]
        assert configs and {c._attn_implementation for c in configs} == {attn}
        assert cfg.vision_config._attn_implementation == attn
        assert cfg.image_token_id == tm.IMAGE_ID < text.vocab_size == tm.VOCAB_SIZE
        assert (text.hidden_size, text.num_attention_heads, text.num_key_value_heads) == (64, 4, 2)
        assert text.num_hidden_layers == len(model.model.language_model.layers) == 8
        assert model.model.language_model.layers[0].self_attn.head_dim == 16
        assert not cfg.tie_word_embeddings
        assert model.lm_head.weight is not model.get_input_embeddings().weight
    if family in QWEN:
        assert (cfg.video_token_id, cfg.vision_start_token_id, cfg.vision_end_token_id) == (
            tm.VIDEO_ID,
            tq.VISION_START_ID,
            tq.VISION_END_ID,
        )
        section = model.model.language_model.rotary_emb.mrope_section
        assert sum(section) == 16 // 2  # head_dim / 2 frequencies
        if family == "qwen3_vl":  # interleaved: h and w take every third frequency from 1 and 2
            assert 3 * max(section[1:]) <= 8
            assert len(model.model.visual.deepstack_merger_list) == tq.QWEN3_DEEPSTACK == 2
    assert len({tq.VISION_START_ID, tq.VISION_END_ID, tm.PAD_ID, tm.IMAGE_ID, tm.VIDEO_ID}) == 5
    assert max(tq.VISION_START_ID, tq.VISION_END_ID) < tm.FIRST_TEXT_ID  # never random text


def test_construction_is_deterministic_and_peaky():
    a, b, c = tq.make_qwen2_vl(seed=0), tq.make_qwen2_vl(seed=0), tq.make_qwen2_vl(seed=1)
    f32 = tq.make_qwen2_vl(dtype=torch.float32, seed=0)
    sa, sb, sc, s32 = a.state_dict(), b.state_dict(), c.state_dict(), f32.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert all(torch.equal(sa[k], s32[k].double()) for k in sa)  # drawn in float32, then cast
    assert not torch.equal(sa["lm_head.weight"], sc["lm_head.weight"])
    assert abs(sa["model.visual.blocks.0.attn.qkv.weight"].std().item() - tm.INIT_STD) < 0.02

    for family in NEW:
        model = model_for(family, "eager")
        inputs = inputs_for(model, family, "single")
        with torch.no_grad():
            attentions = model(**inputs, output_attentions=True).attentions
        length = inputs["input_ids"].shape[1]
        last_row = torch.stack([a[0, :, -1] for a in attentions])  # (layers, heads, keys)
        assert last_row.max(-1).values.min() > 3 / length, f"{family}: near-uniform attention"


# ----------------------------------------------------------------------------------------------
# Placeholders == vision features
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", QWEN)
def test_qwen_placeholder_counts_match_vision_path(family):
    model = model_for(family)
    cfg = model.config
    inputs = inputs_for(model, family, "mixed")
    with torch.no_grad():
        feats = model.model.get_image_features(inputs["pixel_values"], inputs["image_grid_thw"])
    lengths = [f.shape[0] for f in feats.pooler_output]
    square, wide = tm.num_image_tokens(cfg), tq.num_image_tokens(cfg, kind="W")
    assert lengths == [square, square, wide] == [16, 16, 24]
    assert inputs["image_grid_thw"].tolist() == [[1, 8, 8], [1, 8, 8], [1, 8, 12]]
    assert (inputs["input_ids"] == tm.IMAGE_ID).sum(1).tolist() == [16, 16 + 24, 0]
    if family == "qwen3_vl":  # one DeepStack level per injected decoder layer, same token counts
        assert len(feats.deepstack_features) == tq.QWEN3_DEEPSTACK
        assert all([f.shape[0] for f in level] == lengths for level in feats.deepstack_features)

    inputs = inputs_for(model, family, "video")
    with torch.no_grad():
        video = model.model.get_video_features(inputs["pixel_values_videos"], inputs["video_grid_thw"])
    assert [f.shape[0] for f in video.pooler_output] == [tm.num_video_tokens(cfg)] == [32]
    assert inputs["video_grid_thw"].tolist() == [[2, 8, 8]]
    assert (inputs["input_ids"] == tm.VIDEO_ID).sum(1).tolist() == [32, 0]
    assert (inputs["input_ids"] == tm.IMAGE_ID).sum(1).tolist() == [0, 16]


@pytest.mark.parametrize("family", INTERNVL)
def test_internvl_placeholder_counts_match_vision_path(family):
    model = model_for(family)
    for layout, per_row in (("mixed", [16, 32, 0]), ("multi_tile", [48, 16])):
        inputs = inputs_for(model, family, layout)
        with torch.no_grad():
            feats = model.model.get_image_features(inputs["pixel_values"]).pooler_output
        assert feats.shape[:2] == (inputs["pixel_values"].shape[0], tm.num_image_tokens(model.config))
        assert tq.INTERNVL_TILE_TOKENS == 16 and tq.num_image_tokens(model.config, tiles=3) == 48
        assert (inputs["input_ids"] == tm.IMAGE_ID).sum(1).tolist() == per_row
        assert feats.shape[0] * feats.shape[1] == sum(per_row)


@pytest.mark.parametrize("family, layout", [(f, l) for f in NEW for l in tq.LAYOUTS[f] if l != "single"])
def test_spans_are_delimited(family, layout):
    """Every visual run sits inside exactly one start/end pair; delimiters are never visual."""
    inputs = inputs_for(model_for(family), family, layout)
    qwen = family in QWEN
    start, end = (tq.VISION_START_ID, tq.VISION_END_ID) if qwen else (tq.IMG_START_ID, tq.IMG_END_ID)
    visual = torch.isin(inputs["input_ids"], torch.tensor(tq.VISUAL_IDS[family]))
    for ids, vis, keep in zip(inputs["input_ids"], visual, inputs["attention_mask"].bool()):
        ids, vis = ids[keep].tolist(), vis[keep].tolist()
        runs = [(s, e) for s, e in _runs(vis)]
        assert ids.count(start) == ids.count(end) == len(runs)
        for s, e in runs:
            assert ids[s - 1] == start and ids[e] == end
    if "mm_token_type_ids" in inputs:
        assert torch.equal(inputs["mm_token_type_ids"], tq.mm_token_type_ids(inputs["input_ids"]))
        assert set(inputs["mm_token_type_ids"].unique().tolist()) <= {0, 1, 2}
    if family == "qwen3_vl" and layout == "video":  # 2 frames: timestamp, <vs>, 16 video, <ve> each
        ids = inputs["input_ids"][0][inputs["attention_mask"][0].bool()].tolist()
        assert len(_runs([i == tm.VIDEO_ID for i in ids])) == 2
        first = ids.index(tq.VISION_START_ID)
        assert ids[first + 17] == tq.VISION_END_ID
        assert ids[first + 18 + tq.QWEN3_TIMESTAMP_LEN] == tq.VISION_START_ID


def _runs(flags):
    """(start, end) of every maximal True run."""
    out, start = [], None
    for k, f in enumerate(list(flags) + [False]):
        if f and start is None:
            start = k
        elif not f and start is not None:
            out.append((start, k))
            start = None
    return out


# ----------------------------------------------------------------------------------------------
# Batch invariance, single_row, add_labels
# ----------------------------------------------------------------------------------------------
def _row_cells():
    return [(fam, lay) for fam in NEW for lay in tq.LAYOUTS[fam] if lay != "single"]


@pytest.mark.parametrize("family, layout", _row_cells())
def test_row_in_batch_equals_row_alone(family, layout):
    model = model_for(family)  # sdpa, float64
    inputs = inputs_for(model, family, layout)
    last = last_real(inputs["attention_mask"])
    with torch.no_grad():
        logits = model(**inputs).logits
        batched = logits[torch.arange(len(last)), last]
        for i in range(inputs["input_ids"].shape[0]):
            alone = model(**tm.single_row(inputs, i)).logits[0, -1]
            assert (alone - batched[i]).abs().max() <= 1e-10, f"row {i}"


def test_single_row_selects_own_media():
    model = model_for("qwen2_5_vl")
    inputs = inputs_for(model, "qwen2_5_vl", "mixed")  # images: 64, 64, 96 patch rows
    rows = [tm.single_row(inputs, i) for i in range(3)]
    assert [r["input_ids"].shape[1] for r in rows] == inputs["attention_mask"].sum(1).tolist()
    assert all(r["attention_mask"].all() and "position_ids" not in r for r in rows)
    assert all(torch.equal(r["mm_token_type_ids"], tq.mm_token_type_ids(r["input_ids"])) for r in rows)
    assert torch.equal(rows[0]["pixel_values"], inputs["pixel_values"][:64])
    assert torch.equal(rows[1]["pixel_values"], inputs["pixel_values"][64:])
    assert rows[1]["image_grid_thw"].tolist() == [[1, 8, 8], [1, 8, 12]]
    assert not {"pixel_values", "image_grid_thw"} & set(rows[2])

    inputs = inputs_for(model, "qwen2_5_vl", "video")
    video_row, image_row = tm.single_row(inputs, 0), tm.single_row(inputs, 1)
    assert torch.equal(video_row["pixel_values_videos"], inputs["pixel_values_videos"])
    assert torch.equal(video_row["second_per_grid_ts"], inputs["second_per_grid_ts"])
    assert not {"pixel_values", "image_grid_thw"} & set(video_row)
    assert torch.equal(image_row["pixel_values"], inputs["pixel_values"])
    assert not {"pixel_values_videos", "video_grid_thw", "second_per_grid_ts"} & set(image_row)

    model = model_for("internvl_llama")
    inputs = inputs_for(model, "internvl_llama", "multi_tile")
    assert torch.equal(tm.single_row(inputs, 0)["pixel_values"], inputs["pixel_values"][:3])
    assert torch.equal(tm.single_row(inputs, 1)["pixel_values"], inputs["pixel_values"][3:])
    assert torch.equal(tm.single_row(inputs, 1)["position_ids"], torch.arange(4 + 18 + 6)[None])


@pytest.mark.parametrize("family, layout", [(f, l) for f in NEW for l in tq.LAYOUTS[f]])
def test_add_labels(family, layout):
    model = model_for(family)
    inputs = inputs_for(model, family, layout)
    labeled = tm.add_labels(inputs, answer_len=3)
    ids, mask, labels = labeled["input_ids"], labeled["attention_mask"].bool(), labeled["labels"]
    assert ids.shape[1] == inputs["input_ids"].shape[1] + 3
    for b in range(ids.shape[0]):
        real = labels[b][mask[b]]
        assert (real[-3:] == ids[b][mask[b]][-3:]).all() and (real[:-3] == -100).all()
        assert (labels[b][~mask[b]] == -100).all()
        prompt = inputs["input_ids"][b][inputs["attention_mask"][b].bool()]
        assert torch.equal(ids[b][mask[b]][:-3], prompt), "prompt unchanged"
    if family in QWEN:
        assert "position_ids" not in labeled
        assert torch.equal(labeled["mm_token_type_ids"], tq.mm_token_type_ids(ids))
    else:
        assert torch.equal(labeled["position_ids"], tm._positions(labeled["attention_mask"]))
    with torch.no_grad():
        loss = model(**labeled).loss
    assert torch.isfinite(loss)
    # a labelled row alone gives the same loss as in the batch when it is the only supervised row
    if ids.shape[0] > 1:
        only0 = dict(labeled, labels=torch.where(torch.arange(ids.shape[0])[:, None] == 0, labels, -100))
        with torch.no_grad():
            alone = model(**tm.single_row(labeled, 0)).loss
            assert torch.allclose(model(**only0).loss, alone, atol=1e-10)


# ----------------------------------------------------------------------------------------------
# Positions: what the model computes, what generate passes
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", QWEN)
@pytest.mark.parametrize("layout", ["left_padded", "right_padded", "mixed", "video"])
def test_qwen_model_positions_equal_generate_positions(family, layout):
    """Forward without position_ids == forward with generate's (4, B, L) ids, bit for bit, and
    generate's prefill logits == forward logits of the last token (bit for bit with the same
    `logits_to_keep=1` generate uses; a full-width lm_head matmul rounds differently, ~1e-15)."""
    model = model_for(family)
    inputs = inputs_for(model, family, layout)
    gen_ids = tq.generate_position_ids(model, inputs)
    assert gen_ids.shape == (4, *inputs["input_ids"].shape)
    rope, _ = model.model.get_rope_index(
        inputs["input_ids"],
        inputs["mm_token_type_ids"],
        inputs.get("image_grid_thw"),
        inputs.get("video_grid_thw"),
        attention_mask=inputs["attention_mask"],
        **{k: inputs[k] for k in ("second_per_grid_ts",) if k in inputs},
    )
    keep = inputs["attention_mask"].bool()
    assert torch.equal(gen_ids[1:][:, keep], rope[:, keep])
    assert torch.equal(gen_ids[0], tm._positions(inputs["attention_mask"]))
    with torch.no_grad():
        plain = model(**inputs).logits
        explicit = model(**inputs, position_ids=gen_ids).logits
    assert torch.equal(plain[keep], explicit[keep])

    if layout != "right_padded":
        captured = []
        handle = model.lm_head.register_forward_hook(lambda m, a, out: captured.append(out.detach()))
        try:
            model.generate(**inputs, max_new_tokens=1, do_sample=False)
        finally:
            handle.remove()
        with torch.no_grad():
            last = model(**inputs, logits_to_keep=1).logits[:, -1]
        assert torch.equal(captured[0][:, -1], last)
        assert (last - plain[:, -1]).abs().max() <= 1e-12


def test_qwen_requires_mm_token_type_ids():
    model = model_for("qwen2_vl")
    inputs = inputs_for(model, "qwen2_vl", "single")
    inputs.pop("mm_token_type_ids")
    with pytest.raises(ValueError, match="mm_token_type_ids"):
        model(**inputs)


def test_qwen_video_temporal_positions():
    """The video's two temporal patches get t positions 0 and 1 (Qwen2-VL), 0 and 2 (Qwen2.5-VL:
    tokens_per_second * second_per_grid_ts), or separate spans with text between (Qwen3-VL)."""
    steps = {}
    for family in QWEN:
        model = model_for(family)
        inputs = inputs_for(model, family, "video")
        ids = tq.generate_position_ids(model, inputs)[1:, 0]  # row 0 (the video row), (3, L)
        video = inputs["input_ids"][0] == tm.VIDEO_ID
        t = ids[0][video]
        steps[family] = (t[16] - t[0]).item()
    assert steps == {"qwen2_vl": 1, "qwen2_5_vl": 2, "qwen3_vl": 4 + tq.QWEN3_TIMESTAMP_LEN + 2}


def test_qwen3_deepstack_reaches_the_decoder():
    model = model_for("qwen3_vl")
    seen = {}

    def hook(module, args, kwargs):
        seen["masks"], seen["embeds"] = kwargs["visual_pos_masks"], kwargs["deepstack_visual_embeds"]

    for layout, n_visual in (("mixed", 56), ("video", 48)):
        inputs = inputs_for(model, "qwen3_vl", layout)
        handle = model.model.language_model.register_forward_pre_hook(hook, with_kwargs=True)
        try:
            with torch.no_grad():
                model(**inputs)
        finally:
            handle.remove()
        visual = torch.isin(inputs["input_ids"], torch.tensor(tq.VISUAL_IDS["qwen3_vl"]))
        assert torch.equal(seen["masks"], visual)
        assert [e.shape for e in seen["embeds"]] == [torch.Size([n_visual, 64])] * tq.QWEN3_DEEPSTACK
    for levels in (0, 3):
        other = tq.make_qwen3_vl(deepstack=levels)
        assert len(other.model.visual.deepstack_merger_list) == levels
        with torch.no_grad():
            assert torch.isfinite(other(**inputs_for(other, "qwen3_vl", "video")).logits).all()


@pytest.mark.parametrize("family", INTERNVL)
def test_internvl_position_ids_are_what_generate_derives(family):
    model = model_for(family)
    inputs = inputs_for(model, family, "multi_tile")
    without = {k: v for k, v in inputs.items() if k != "position_ids"}
    with_ids = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    assert torch.equal(with_ids, model.generate(**without, max_new_tokens=4, do_sample=False))
