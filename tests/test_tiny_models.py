"""Checks of the tiny-model builders themselves (tests/tiny_models.py), not of tokenprune.

If these fail, every exactness test built on them is meaningless, so they pin down: the models
run and generate in every family x attention x layout, placeholder counts match the vision path,
a sample in a padded batch equals the same sample alone, and labels / single_row are well formed.
"""

from functools import lru_cache

import pytest
import torch

import tiny_models as tm

CELLS = [
    (fam, attn, layout) for fam in tm.FAMILIES for attn in ("sdpa", "eager") for layout in tm.LAYOUTS[fam]
]


@lru_cache(maxsize=None)
def model_for(family: str, attn: str = "sdpa", dtype: torch.dtype = torch.float64):
    """Models are only read by these tests, so one instance per configuration is shared."""
    return tm.FAMILIES[family][0](attn=attn, dtype=dtype)


def inputs_for(model, family: str, layout: str) -> dict:
    return tm.FAMILIES[family][1](model, layout=layout)


def cell_dtype(attn: str, inputs: dict) -> torch.dtype:
    """float64, except eager with left padding: HF's eager softmax runs in fp32, where the float64
    mask minimum becomes -inf, so all-masked padding rows give NaN that spreads to every position
    through the value product. float32 keeps the mask minimum finite (docs/concepts.md, "The exactness contract")."""
    left_padded = bool((inputs["attention_mask"][:, 0] == 0).any())
    return torch.float32 if attn == "eager" and left_padded else torch.float64


@pytest.mark.parametrize("family, attn, layout", CELLS)
def test_forward_and_generate(family, attn, layout):
    probe = inputs_for(model_for(family), family, layout)
    model = model_for(family, attn, cell_dtype(attn, probe))
    inputs = inputs_for(model, family, layout)
    assert inputs["pixel_values"].dtype == model.dtype
    with torch.no_grad():
        logits = model(**inputs).logits
    batch, length = inputs["input_ids"].shape
    assert logits.shape == (batch, length, tm.VOCAB_SIZE)
    assert torch.isfinite(logits[inputs["attention_mask"].bool()]).all()

    out = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    assert out.shape == (batch, length + 4)
    assert torch.equal(out[:, :length], inputs["input_ids"])
    assert not torch.isin(out[:, length:], torch.tensor(tm.SPECIAL_IDS)).any()


@pytest.mark.parametrize("family", list(tm.FAMILIES))
def test_config_and_attention_implementation(family):
    for attn in ("sdpa", "eager"):
        model = model_for(family, attn)
        cfg = model.config
        assert model.dtype == torch.float64 and not model.training
        assert cfg._attn_implementation == attn
        assert cfg.text_config._attn_implementation == attn
        assert cfg.vision_config._attn_implementation == attn
        assert model.model.language_model.config._attn_implementation == attn
        assert cfg.image_token_id == tm.IMAGE_ID < cfg.text_config.vocab_size == tm.VOCAB_SIZE
        text = cfg.text_config
        assert (text.hidden_size, text.num_attention_heads, text.num_key_value_heads) == (64, 4, 2)
    assert model_for("llava_onevision").config.video_token_id == tm.VIDEO_ID


@pytest.mark.parametrize("family", list(tm.FAMILIES))
def test_placeholder_counts_match_vision_path(family):
    """num_image_tokens (processor arithmetic) == what get_image_features returns per image."""
    model = model_for(family)
    inputs = inputs_for(model, family, "mixed")
    kwargs = {k: inputs[k] for k in ("image_sizes", "batch_num_images", "image_grid_thw") if k in inputs}
    with torch.no_grad():
        feats = model.model.get_image_features(inputs["pixel_values"], **kwargs).pooler_output
    # NeXT/OneVision return one (tokens, hidden) tensor per image; LLaVA one (images, tokens, hidden).
    per_image = isinstance(feats, (list, tuple))
    lengths = [f.shape[0] for f in feats] if per_image else [feats.shape[1]] * len(feats)
    multi = family == "llava_onevision"  # its second and third images belong to a 2-image row
    expected = [tm.num_image_tokens(model.config)] + [tm.num_image_tokens(model.config, multi)] * 2
    if "image_grid_thw" in inputs:  # Qwen: the third image of "mixed" is the wide one (4x6 tokens)
        expected[2] = tm._more.num_image_tokens(model.config, kind="W")
    assert lengths == expected
    per_row = (inputs["input_ids"] == tm.IMAGE_ID).sum(1).tolist()
    assert per_row == [expected[0], expected[1] + expected[2], 0]


def test_video_placeholder_count():
    model = model_for("llava_onevision")
    inputs = inputs_for(model, "llava_onevision", "video")
    with torch.no_grad():
        feats = model.model.get_video_features(inputs["pixel_values_videos"]).pooler_output
    assert feats.shape[1] == tm.num_video_tokens(model.config)
    assert (inputs["input_ids"] == tm.VIDEO_ID).sum(1).tolist() == [feats.shape[1], 0]


def _batch_layouts():
    return [(fam, "mixed") for fam in tm.FAMILIES] + [("llava_onevision", "video")]


@pytest.mark.parametrize("family, layout", _batch_layouts())
def test_row_in_batch_equals_row_alone(family, layout):
    model = model_for(family)
    inputs = inputs_for(model, family, layout)
    with torch.no_grad():
        batched = model(**inputs).logits[:, -1]
        for i in range(inputs["input_ids"].shape[0]):
            alone = model(**tm.single_row(inputs, i)).logits[0, -1]
            assert (alone - batched[i]).abs().max() <= 1e-10, f"row {i}"


def test_single_row_selects_own_images():
    model = model_for("llava_next")
    inputs = inputs_for(model, "llava_next", "mixed")
    rows = [tm.single_row(inputs, i) for i in range(3)]
    assert [r["input_ids"].shape[1] for r in rows] == inputs["attention_mask"].sum(1).tolist()
    assert all(r["attention_mask"].all() for r in rows)
    assert torch.equal(rows[0]["pixel_values"], inputs["pixel_values"][:1])
    assert torch.equal(rows[1]["pixel_values"], inputs["pixel_values"][1:3])
    assert "pixel_values" not in rows[2] and "image_sizes" not in rows[2]


@pytest.mark.parametrize("family", list(tm.FAMILIES))
@pytest.mark.parametrize("layout", ["single", "left_padded", "right_padded", "mixed"])
def test_add_labels(family, layout):
    model = model_for(family)
    inputs = inputs_for(model, family, layout)
    labeled = tm.add_labels(inputs, answer_len=3)
    ids, mask, labels = labeled["input_ids"], labeled["attention_mask"].bool(), labeled["labels"]
    assert ids.shape[1] == inputs["input_ids"].shape[1] + 3
    for b in range(ids.shape[0]):
        real = labels[b][mask[b]]
        assert (real[-3:] == ids[b][mask[b]][-3:]).all(), "answer = last 3 real tokens"
        assert (real[:-3] == -100).all() and (labels[b][~mask[b]] == -100).all()
        prompt = inputs["input_ids"][b][inputs["attention_mask"][b].bool()]
        assert torch.equal(ids[b][mask[b]][:-3], prompt), "prompt unchanged"
    if layout == "right_padded":
        assert not mask[:, 0].logical_not().any(), "right padding stays on the right"
    with torch.no_grad():
        loss = model(**labeled).loss
    assert torch.isfinite(loss)


def test_construction_is_deterministic_and_peaky():
    a, b = tm.make_llava(seed=0), tm.make_llava(seed=0)
    c = tm.make_llava(seed=1)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["lm_head.weight"], sc["lm_head.weight"])

    model = model_for("llava", "eager", torch.float32)
    inputs = inputs_for(model, "llava", "single")
    with torch.no_grad():
        attentions = model(**inputs, output_attentions=True).attentions
    length = inputs["input_ids"].shape[1]
    last_row = torch.stack([a[0, :, -1] for a in attentions])  # (layers, heads, keys)
    assert last_row.max(-1).values.min() > 3 / length, "attention of the last token is not near-uniform"


@pytest.mark.parametrize("family", list(tm.FAMILIES))
def test_position_ids_are_what_generate_derives(family):
    """The builders pass `position_ids`; generate without them must give the same tokens."""
    model = model_for(family)
    inputs = inputs_for(model, family, "mixed")
    without = {k: v for k, v in inputs.items() if k != "position_ids"}
    with_ids = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    assert torch.equal(with_ids, model.generate(**without, max_new_tokens=4, do_sample=False))
