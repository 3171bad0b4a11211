"""Encoder-side reduction inside LLaVA, alone and composed with LLM-side PyramidDrop.

The exactness contract for `VisionLanguageStrategy` on the stock `LlavaForConditionalGeneration`:
keep-all is bitwise identity (forward and generate); projector-side selection equals the stock
model fed an independently built shorter prompt and independently selected features; cached
decoding equals an uncached replay; every sample of a mixed batch equals the sample alone;
training runs and reaches the vision tower.
"""

from __future__ import annotations

import pytest
import tiny_models as tm
import tiny_models_qwen_internvl as tq
import torch
from exactness import LogitTap, ReplayScorer, at_positions, last_positions, record
from transformers import LlavaConfig, LlavaForConditionalGeneration, SiglipVisionConfig
from transformers.modeling_outputs import BaseModelOutputWithPooling

import tokenprune
from tokenprune import ProjectorSelection, Strategy, VisionLanguageStrategy
from tokenprune.components import (
    BipartiteMerge,
    NullScorer,
    QueryAttentionScorer,
    ReceivedAttentionScorer,
    SimilarityMerge,
    StageScheduler,
    TopKDrop,
)
from tokenprune.errors import ScheduleError, UnsupportedFeatureError

NEW_TOKENS = 3
LLM_LAYERS, LLM_RATIOS = [2, 4], [0.5, 0.25]
TOL = 1e-10


def _llava(vision_layers: int, tower: str = "clip") -> LlavaForConditionalGeneration:
    config = tm.llava_config()
    if tower == "siglip":  # a SigLIP tower has no [CLS]; LLaVA then feeds every token ("full")
        config = LlavaConfig(
            vision_config=SiglipVisionConfig(**tm._vision_kwargs()),
            text_config=config.text_config,
            image_token_index=tm.IMAGE_ID,
            image_seq_length=16,
            vision_feature_select_strategy="full",
        )
    config.vision_config.num_hidden_layers = vision_layers
    return tm._finish(LlavaForConditionalGeneration, config, "sdpa", torch.float64, 0)


# setup -> (vision layers, encoder part, projector ratio, tower); the tiny towers give 16 tokens per image.
SETUPS = {
    "projector+pdrop": (2, None, 0.5, "clip"),
    "encoder_merge+projector+pdrop": (4, (1, 0.5), 0.25, "clip"),
    "siglip_full+projector+pdrop": (2, None, 0.5, "siglip"),
    "internvl_projected_merge+pdrop": (None, None, 0.5, "internvl"),  # after the projector: ToMe-style merge
}


def _strategy(setup: str, keep_all: bool = False, llm_scorer=None) -> VisionLanguageStrategy:
    _, encoder, projector, tower = SETUPS[setup]
    scorer = ReceivedAttentionScorer if tower == "siglip" else QueryAttentionScorer
    one = (lambda r: 1.0) if keep_all else (lambda r: r)
    enc = None
    if encoder is not None:
        enc = Strategy(StageScheduler([encoder[0]], [one(encoder[1])]), scorer(), SimilarityMerge(True))
    llm = Strategy(StageScheduler(LLM_LAYERS, [one(r) for r in LLM_RATIOS]), llm_scorer or QueryAttentionScorer(), TopKDrop())
    if tower == "internvl":
        selection = ProjectorSelection(one(projector), NullScorer(), BipartiteMerge(proportional_attention=False))
    else:
        selection = ProjectorSelection(one(projector), scorer(), TopKDrop())
    return VisionLanguageStrategy(llm=llm, encoder=enc, projector=selection)


def _model(setup: str):
    layers, _, _, tower = SETUPS[setup]
    if tower == "internvl":
        return tq.make_internvl_qwen2(attn="sdpa", dtype=torch.float64)
    return _llava(layers, tower)


def _inputs(model, layout: str) -> dict:
    if model.config.model_type == "internvl":
        return tq.internvl_inputs(model, layout)
    return tm.llava_inputs(model, layout)


@pytest.fixture(scope="module", params=list(SETUPS))
def setup(request):
    return request.param, _model(request.param)


def _generate(model, inputs):
    inputs = {k: v for k, v in inputs.items() if k != "position_ids"}
    tap = LogitTap(model)
    out = model.generate(**inputs, max_new_tokens=NEW_TOKENS, do_sample=False)
    return out, [s[:, -1] for s in tap.close()]


def _compacted_last(handle, inputs, offset: int = 0):
    """Column of each row's last prompt token (+ offset) in the layout the wrapped model ran on."""
    last = last_positions(inputs["attention_mask"]) + offset
    cols = handle.input_columns()
    return last if cols is None else (cols == last[:, None]).int().argmax(1)


def _diff(a, b) -> float:
    return (a.double() - b.double()).abs().max().item()


@pytest.mark.parametrize("layout", ["single", "mixed", "right_padded"])
def test_keep_all_is_bitwise_identity(setup, layout):
    name, model = setup
    inputs = _inputs(model, layout)
    ref = model(**inputs).logits
    ref_ids, ref_steps = _generate(model, inputs)
    with tokenprune.pruned(model, _strategy(name, keep_all=True)) as handle:
        assert torch.equal(model(**inputs).logits, ref)
        ids, steps = _generate(model, inputs)
        assert handle.input_columns() is None
    assert torch.equal(ids, ref_ids) and all(torch.equal(a, b) for a, b in zip(steps, ref_steps))
    # unwrap after a reducing run restores the stock model exactly
    with tokenprune.pruned(model, _strategy(name)):
        assert model(**inputs).logits.shape[1] < ref.shape[1]
        _generate(model, inputs)
    assert torch.equal(model(**inputs).logits, ref)


def _reference_prompt(inputs, per_image: int, kept: int):
    """The shorter prompt built by hand: each image keeps its first `kept` placeholders; re-padded."""
    rows, label_rows = [], []
    labels = inputs.get("labels", torch.full_like(inputs["input_ids"], -100))
    for ids, mask, lab in zip(inputs["input_ids"], inputs["attention_mask"], labels):
        row, row_labels, seen = [], [], 0
        for tok, target in zip(ids[mask.bool()].tolist(), lab[mask.bool()].tolist()):
            if tok == tm.IMAGE_ID:
                seen += 1
                if (seen - 1) % per_image >= kept:
                    continue
            row.append(tok)
            row_labels.append(target)
        rows.append(row)
        label_rows.append(row_labels)
    side = "right" if bool((inputs["attention_mask"][:, -1] == 0).any()) else "left"
    out = tm._pad(rows, side)
    if "labels" in inputs:
        pad = [[-100] * (out["input_ids"].shape[1] - len(r)) for r in label_rows]
        out["labels"] = torch.tensor([p + r if side == "left" else r + p for p, r in zip(pad, label_rows)])
    return out


@pytest.mark.parametrize("layout", ["mixed", "right_padded"])
def test_projector_selection_equals_the_stock_model_on_a_shorter_prompt(layout):
    """Independent reference: [CLS] attention from the tower's eager attention, top-k by hand,
    features projected by hand, placeholders removed by hand, fed to the unwrapped stock model."""
    model = _llava(2)
    inputs = tm.add_labels(tm.llava_inputs(model, layout))
    strategy = VisionLanguageStrategy(projector=ProjectorSelection(0.5, QueryAttentionScorer(), TopKDrop()))
    with tokenprune.pruned(model, strategy):
        out = model(**inputs)
        logits = out.loss, out.logits

    tower = model.model.vision_tower
    feats = tower(inputs["pixel_values"], output_hidden_states=True).hidden_states[1]  # LLaVA's layer -2
    block = tower.encoder.layers[1]
    tower.config._attn_implementation = "eager"
    try:
        _, probs = block.self_attn(block.layer_norm1(feats))
    finally:
        tower.config._attn_implementation = "sdpa"
    cls = probs[:, :, 0, 1:].mean(1)
    sel = torch.sort(torch.topk(cls, 8, dim=-1).indices, dim=-1).values
    patches = feats[:, 1:].gather(1, sel.unsqueeze(-1).expand(-1, -1, feats.shape[-1]))
    features = list(model.model.multi_modal_projector(patches))
    short = _reference_prompt(inputs, 16, 8)
    ref = model(**short, mm_encoder_outputs={"image": BaseModelOutputWithPooling(pooler_output=features)})
    (loss, logits), real = logits, short["attention_mask"].bool()
    assert logits.shape == ref.logits.shape
    diff = record("encoder_vlm_reference", f"llava-projector-{layout}-sdpa-f64", _diff(logits[real], ref.logits[real]))
    assert diff <= TOL
    assert record("encoder_vlm_reference", f"llava-projector-loss-{layout}-sdpa-f64", _diff(loss, ref.loss)) <= TOL


def test_cached_decode_equals_uncached_replay(setup):
    name, model = setup
    inputs = _inputs(model, "mixed")
    with tokenprune.pruned(model, _strategy(name)) as handle:
        ids, steps = _generate(model, inputs)
        selection = handle.selection()
        assert len(selection) == 3
    with tokenprune.pruned(model, _strategy(name, llm_scorer=ReplayScorer(selection))) as handle:
        full = {k: v for k, v in inputs.items() if k != "position_ids"}
        extra = ids.shape[1] - 1 - inputs["input_ids"].shape[1]
        full["input_ids"] = ids[:, :-1]
        full["attention_mask"] = torch.cat([inputs["attention_mask"], torch.ones(ids.shape[0], extra, dtype=torch.long)], 1)
        full["position_ids"] = (full["attention_mask"].cumsum(1) - 1).clamp(min=0)  # as generate passes them
        logits = model(**full, use_cache=False).logits
        kept = handle.kept_positions()
        for t, step in enumerate(steps):
            pos = _compacted_last(handle, inputs, t)
            assert record("encoder_vlm_cache", f"{name}-sdpa-f64", _diff(at_positions(logits, kept, pos), step)) <= TOL


def test_batch_invariance_and_stats_across_both_stacks(setup):
    name, model = setup
    inputs = _inputs(model, "mixed")
    with tokenprune.pruned(model, _strategy(name)) as handle:
        batch_logits = model(**inputs).logits
        mine = at_positions(batch_logits, handle.kept_positions(), _compacted_last(handle, inputs))
        per_layer = handle.tokens_per_layer()
        batch_ids, batch_steps = _generate(model, inputs)
        for i in range(inputs["input_ids"].shape[0]):
            alone = tm.single_row(inputs, i)
            logits = model(**alone).logits
            theirs = at_positions(logits, handle.kept_positions(), _compacted_last(handle, alone))
            assert record("encoder_vlm_batch_invariance", f"{name}-sdpa-f64", _diff(mine[i], theirs[0])) <= TOL
            ids, steps = _generate(model, alone)
            assert torch.equal(ids[0, -NEW_TOKENS:], batch_ids[i, -NEW_TOKENS:])
            for a, b in zip(batch_steps, steps):
                assert _diff(a[i], b[0]) <= TOL
    kept = 16 * SETUPS[name][2]
    assert per_layer["projector"][0] == kept
    assert per_layer["llm"][0] == [kept, 2 * kept, 0]  # rows hold 1, 2 and 0 images
    assert per_layer["llm"][LLM_LAYERS[1]] == [int(kept * 0.25), int(2 * kept * 0.25), 0]
    if SETUPS[name][1] is not None:
        assert [row[0] for row in per_layer["vision"]] == [16, 8, 8, 8]  # tower blocks, first image


def test_training_reaches_the_vision_tower_and_checkpointing_is_identical():
    results = []
    for checkpointing in (False, True):
        model = _llava(4)
        model.train()
        if checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})  # noqa: deprecated name kept for 5.23
        inputs = tm.add_labels(tm.llava_inputs(model, "mixed"))
        with tokenprune.pruned(model, _strategy("encoder_merge+projector+pdrop")):
            out = model(**inputs)
            assert torch.isfinite(out.loss)
            out.loss.backward()
        grad = model.model.vision_tower.embeddings.patch_embedding.weight.grad
        assert grad is not None and grad.abs().sum() > 0
        results.append((out.loss.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]))
    (loss_a, grads_a), (loss_b, grads_b) = results
    assert _diff(loss_a, loss_b) <= TOL and len(grads_a) == len(grads_b)
    assert max(_diff(a, b) for a, b in zip(grads_a, grads_b)) <= TOL


def test_unsupported_layouts_and_schedules_raise_clearly():
    model = _llava(4)
    late = VisionLanguageStrategy(encoder=Strategy(StageScheduler([3], [0.5]), QueryAttentionScorer(), TopKDrop()))
    with pytest.raises(ScheduleError, match="cannot change the features"):
        tokenprune.wrap(model, late)
    assert not hasattr(model, "tokenprune")
    next_model = tm.make_llava_next(attn="sdpa", dtype=torch.float64)
    with pytest.raises(UnsupportedFeatureError, match="not supported yet"):
        tokenprune.wrap(next_model, VisionLanguageStrategy(projector=ProjectorSelection(0.5, QueryAttentionScorer(), TopKDrop())))
    with pytest.raises(ScheduleError, match="at least one"):
        VisionLanguageStrategy()
    qwen = tq.make_qwen2_vl(attn="sdpa", dtype=torch.float64)
    inside_qwen = VisionLanguageStrategy(encoder=Strategy(StageScheduler([1], [0.5]), NullScorer(), BipartiteMerge()))
    with pytest.raises(UnsupportedFeatureError, match="patch merger"):  # projector-side works (test_zoo_qwen_projector)
        tokenprune.wrap(qwen, inside_qwen)
    internvl = tq.make_internvl_qwen2(attn="sdpa", dtype=torch.float64)
    inside = VisionLanguageStrategy(encoder=Strategy(StageScheduler([1], [0.5]), QueryAttentionScorer(), TopKDrop()))
    with pytest.raises(UnsupportedFeatureError, match="needs the full patch grid"):
        tokenprune.wrap(internvl, inside)
    attention = VisionLanguageStrategy(projector=ProjectorSelection(0.5, QueryAttentionScorer(), TopKDrop()))
    with tokenprune.pruned(internvl, attention):
        with pytest.raises(UnsupportedFeatureError, match="no attention to score by"):
            internvl(**tq.internvl_inputs(internvl, "single"))
    assert not any(hasattr(m, "tokenprune") for m in (model, next_model, qwen, internvl))


def test_headless_vlm_module_is_compacted_like_the_full_model():
    """Wrapping the inner `LlavaModel` (no head, no labels) shortens the prompt the same way."""
    model = _llava(2)
    inputs = tm.llava_inputs(model, "mixed")
    strategy = VisionLanguageStrategy(projector=ProjectorSelection(0.5, QueryAttentionScorer(), TopKDrop()))
    with tokenprune.pruned(model, strategy) as handle:
        logits = model(**inputs).logits
        columns = handle.input_columns()
    with tokenprune.pruned(model.model, strategy) as handle:
        inner = model.model(**inputs).last_hidden_state
        assert torch.equal(handle.input_columns(), columns)
    real = columns >= 0
    assert not bool(real.all())  # shorter rows were re-padded
    assert _diff(model.lm_head(inner)[real], logits[real]) <= TOL
