"""Encoder-side reduction: the exactness contract for every encoder adapter (timm, open_clip, HF CLIP/SigLIP).

* keep-all is bitwise identical, and so is the model after unwrap;
* dropping == the unwrapped model with the dropped tokens masked out as keys (float64);
* merging conserves token mass (sum of sizes = original count) and is permutation-equivariant in
  the sample dimension; every sample of a batch equals the sample run alone;
* recomputed scores == the attention probabilities eager attention returns, with and without the
  proportional-attention bias.
"""

from __future__ import annotations

import pytest
import torch
from encoder_models import FACTORIES, make_hf_clip, make_open_clip, make_timm, pixels
from exactness import record

import tokenprune
from tokenprune import Strategy
from tokenprune.components import (
    BipartiteMerge,
    QueryAttentionScorer,
    ReceivedAttentionScorer,
    SimilarityMerge,
    StageScheduler,
    TopKDrop,
)
from tokenprune.errors import UnsupportedFeatureError
from tokenprune.registry import get_registry

ADAPTERS = list(FACTORIES)
TOME = "tome"
"""The registered strategy these cells run by name (test_exactness_coverage.py reads it: its exactness row)."""
BOUNDARIES, RATIOS = [1, 3], [0.5, 0.25]


def _scorer(name: str):
    return ReceivedAttentionScorer() if name == "hf_siglip" else QueryAttentionScorer()


def _strategy(name: str, reducer, boundaries=BOUNDARIES, ratios=RATIOS) -> Strategy:
    return Strategy(StageScheduler(boundaries, ratios), _scorer(name), reducer, name="test")


REDUCERS = {
    "drop": lambda: TopKDrop(),
    "merge": lambda: SimilarityMerge(proportional_attention=False),
    "merge_prop": lambda: SimilarityMerge(proportional_attention=True),
    "bipartite": lambda: BipartiteMerge(proportional_attention=True),
}


@pytest.fixture(scope="module")
def cases():
    return {name: factory() for name, factory in FACTORIES.items()}


@pytest.mark.parametrize("name", ADAPTERS)
def test_adapter_is_found_by_the_registry(cases, name):
    adapter = get_registry().encoder_adapter_for(cases[name].module)
    assert adapter is not None
    stack = adapter.locate(cases[name].module)
    assert stack.num_prefix == cases[name].num_prefix and stack.num_layers == 4


@pytest.mark.parametrize("reducer", list(REDUCERS))
@pytest.mark.parametrize("name", ADAPTERS)
def test_keep_all_and_unwrap_are_bitwise_identical(cases, name, reducer):
    case = cases[name]
    x = pixels()
    ref, ref_tokens = case.tokens(x)
    keys = list(case.module.state_dict())
    with tokenprune.pruned(case.module, _strategy(name, REDUCERS[reducer](), ratios=[1.0, 1.0])) as handle:
        out, tokens = case.tokens(x)
        assert list(case.module.state_dict()) == keys
        assert handle.stats.sequence_lengths == [tokens.shape[1]] * 4
    assert torch.equal(out, ref) and torch.equal(tokens, ref_tokens)
    # after a reducing run, unwrap restores the exact model
    tokenprune.wrap(case.module, _strategy(name, REDUCERS[reducer]()))
    case.tokens(x)
    tokenprune.unwrap(case.module)
    again, again_tokens = case.tokens(x)
    assert torch.equal(again, ref) and torch.equal(again_tokens, ref_tokens)
    assert all(not block._forward_pre_hooks for block in get_registry().encoder_adapter_for(case.module).locate(case.module).blocks)


def _masked_reference(case, x: torch.Tensor, selection) -> torch.Tensor:
    """Last-block tokens of the UNWRAPPED encoder with removed tokens masked as keys from their block on."""
    adapter = get_registry().encoder_adapter_for(case.module)
    blocks = adapter.locate(case.module).blocks
    batch, n = selection[0][1].shape
    handles = []
    for i, block in enumerate(blocks):
        stage = [s for s in selection if s[0] <= i][-1]
        visible = torch.zeros(batch, n, dtype=torch.bool).scatter_(1, stage[1], True)
        if bool(visible.all()):
            continue
        bias = torch.zeros(batch, n, dtype=x.dtype).masked_fill(~visible, float("-inf"))

        def hook(module, args, kwargs, bias=bias):
            hidden = adapter.hidden_of(module, args, kwargs)
            return adapter.with_inputs(module, args, kwargs, hidden, bias)

        handles.append(block.register_forward_pre_hook(hook, with_kwargs=True))
    try:
        _, tokens = case.tokens(x)
    finally:
        for h in handles:
            h.remove()
    idx = selection[-1][1]
    return tokens.gather(1, idx.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))


@pytest.mark.parametrize("name", ADAPTERS)
def test_drop_equals_masked_reference(cases, name):
    case = cases[name]
    x = pixels()
    with tokenprune.pruned(case.module, _strategy(name, TopKDrop())) as handle:
        _, tokens = case.tokens(x)
        selection = handle.selection()
        assert [s[0] for s in selection] == [0, 1, 3]
        assert handle.stats.visual_tokens[3] == [16] * 3 and handle.stats.visual_tokens[1] == [32] * 3
    assert bool((selection[-1][1][:, : case.num_prefix] == torch.arange(case.num_prefix)).all()), "prefix kept"
    reference = _masked_reference(case, x, selection)
    diff = record("encoder_masked_reference", f"{name}-sdpa-f64", float((tokens - reference).abs().max()))
    assert diff < 1e-10


@pytest.mark.parametrize("reducer", ["merge", "merge_prop", "bipartite"])
@pytest.mark.parametrize("name", ADAPTERS)
def test_merge_conserves_mass_and_is_equivariant(cases, name, reducer):
    case = cases[name]
    x = pixels(batch=3)
    n = case.tokens(x[:1])[1].shape[1]
    with tokenprune.pruned(case.module, _strategy(name, REDUCERS[reducer]())) as handle:
        out, tokens = case.tokens(x)
        sizes = handle.token_sizes()
        assert sizes.shape == tokens.shape[:2]
        assert torch.equal(sizes.sum(1), torch.full((3,), float(n), dtype=sizes.dtype)), "sum of sizes = tokens in"
        assert bool((sizes[:, : case.num_prefix] == 1).all()), "prefix tokens absorb nothing"
        perm = torch.tensor([2, 0, 1])
        out_p, tokens_p = case.tokens(x[perm])
        sizes_p = handle.token_sizes()
        diff = max(float((out_p - out[perm]).abs().max()), float((tokens_p - tokens[perm]).abs().max()))
        assert diff < 1e-12 and torch.equal(sizes_p, sizes[perm])
        for b in range(3):  # batch invariance: each sample as if alone
            alone, alone_tokens = case.tokens(x[b : b + 1])
            diff = max(diff, float((alone - out[b : b + 1]).abs().max()), float((alone_tokens - tokens[b : b + 1]).abs().max()))
        record("encoder_batch_invariance", f"{name}-{reducer}-sdpa-f64", diff)
        assert diff < 1e-10


def test_merge_is_a_size_weighted_mean():
    from tokenprune.components.merge import merge_into

    hidden = torch.tensor([[[1.0], [2.0], [4.0], [8.0]]], dtype=torch.float64)
    sizes = torch.tensor([[1.0, 3.0, 1.0, 2.0]], dtype=torch.float64)
    source = torch.tensor([[False, True, False, True]])
    destination = torch.tensor([[0, 2, 0, 2]])
    merged, new_sizes = merge_into(hidden, sizes, source, destination)
    assert new_sizes[0, 2] == 6 and new_sizes[0, 0] == 1
    assert merged[0, 2, 0] == pytest.approx((1 * 4 + 3 * 2 + 2 * 8) / 6)
    assert merged[0, 0, 0] == 1.0  # untouched destination stays bitwise


@pytest.mark.parametrize("proportional", [False, True])
def test_recomputed_scores_match_eager_attention(proportional):
    """The [CLS] and received attention a scorer sees == HF eager probabilities of the same block on the
    same input (with the log-size bias after a merge); and the blocks after a merge really attend
    with that bias (their eager probabilities == softmax(q k^T * scale + log size))."""
    from tokenprune.adapters.encoder_base import EncoderAdapter
    from tokenprune.encoder.context import block_attention

    case = make_hf_clip(dtype=torch.float32, attn="eager")
    x = pixels(batch=2, dtype=torch.float32)
    seen, inputs = {}, {}

    class Recorder(QueryAttentionScorer):
        def score(self, ctx):
            seen[ctx.layer_index] = (ctx.hidden, ctx.key_bias, ctx.attention(), ctx.attention_received())
            return super().score(ctx)

    strategy = Strategy(StageScheduler([1, 3], [0.5, 0.25]), Recorder(), SimilarityMerge(proportional), name="rec")
    blocks = case.module.encoder.layers
    with tokenprune.pruned(case.module, strategy) as handle:
        capture = blocks[2].register_forward_pre_hook(lambda m, a, k: inputs.setdefault(2, (a, k)), with_kwargs=True)
        try:
            attentions = case.module(x, output_attentions=True).attentions
        finally:
            capture.remove()
        sizes = handle.token_sizes()
    assert (seen[3][1] is not None) == proportional
    for layer in (1, 3):
        hidden, bias, cls_row, received = seen[layer]
        block = blocks[layer]
        mask = None if bias is None else EncoderAdapter.bias_mask(bias, hidden.shape[1], hidden.dtype)
        with torch.no_grad():
            _, probs = block.self_attn(block.layer_norm1(hidden), attention_mask=mask)
        diff = max(float((cls_row - probs[:, :, 0].mean(1)).abs().max()), float((received - probs.mean((1, 2))).abs().max()))
        record("encoder_scores", f"hf_clip-prop{proportional}-eager-f32-layer{layer}", diff)
        assert diff <= 1e-6
    # block 2 ran on the merged sequence, with the log-size bias exactly when asked for
    args, kwargs = inputs[2]
    hidden = args[0]
    assert hidden.shape[1] == 33 and attentions[2].shape[-1] == 33
    q, k, scale = get_registry().encoder_adapter_for(case.module).queries_keys(blocks[2], hidden)
    expected = block_attention(q, k, scale, torch.log(sizes_at_block_2(seen, sizes)) if proportional else None)
    diff = float((attentions[2] - expected).abs().max())
    record("encoder_scores", f"hf_clip-prop{proportional}-eager-f32-block2-bias", diff)
    assert diff <= 1e-6


def sizes_at_block_2(seen, final_sizes):
    """Sizes blocks 1-2 saw: the key bias recorded when block 3 scored (before its own merge)."""
    return torch.exp(seen[3][1])


def test_proportional_attention_changes_later_blocks():
    case = make_timm()
    x = pixels()
    outs = []
    for proportional in (False, True):
        with tokenprune.pruned(case.module, _strategy("timm", SimilarityMerge(proportional))):
            outs.append(case.tokens(x)[1])
    assert float((outs[0] - outs[1]).abs().max()) > 1e-6


@pytest.mark.parametrize("factory", [make_timm, make_open_clip])
def test_tome_schedule_on_classifier_and_image_encoder_batched(factory):
    """A timm classifier and an open_clip image encoder run wrapped (batch 4) with the registered ToMe strategy:
    every sample of the batch equals the sample run alone."""
    case = factory()
    x = pixels(batch=4)
    with tokenprune.pruned(case.module, TOME, r=8) as handle:
        out = case.run(x)
        assert handle.stats.sequence_lengths == [65, 57, 49, 41]
        assert handle.stats.flops_saved > 0
        for b in (0, 3):
            assert float((case.run(x[b : b + 1]) - out[b : b + 1]).abs().max()) < 1e-10
    assert out.shape[0] == 4 and torch.isfinite(out).all()


def test_registered_tome_strategy_and_training_gradients():
    case = make_timm(dtype=torch.float32)
    model = case.module.train()
    tokenprune.wrap(model, TOME, r=8)
    try:
        loss = model(pixels(batch=2, dtype=torch.float32)).logsumexp(-1).mean()
        loss.backward()
        grad = model.patch_embed.proj.weight.grad
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0
        assert model.tokenprune.stats.sequence_lengths[-1] == 41
    finally:
        tokenprune.unwrap(model)
        model.eval()


def test_register_tokens_are_never_removed():
    case = make_timm(reg_tokens=2)
    with tokenprune.pruned(case.module, _strategy("timm", TopKDrop(), ratios=[0.1, 0.05])) as handle:
        case.run(pixels())
        final = handle.selection()[-1][1]
    assert bool((final[:, :3] == torch.arange(3)).all())
    assert final.shape[1] == 3 + 3


def test_siglip_without_class_token_needs_received_attention():
    case = make_hf_siglip_f64()
    with tokenprune.pruned(case.module, Strategy(StageScheduler([1], [0.5]), QueryAttentionScorer(), TopKDrop())):
        with pytest.raises(UnsupportedFeatureError, match="ReceivedAttentionScorer"):
            case.run(pixels())


def make_hf_siglip_f64():
    return FACTORIES["hf_siglip"]()


def test_unsupported_towers_raise_clearly():
    from transformers import Qwen2VLConfig
    from transformers.models.qwen2_vl.modeling_qwen2_vl import Qwen2VisionTransformerPretrainedModel

    vision = Qwen2VLConfig().vision_config
    vision.depth, vision.embed_dim, vision.hidden_size, vision.num_heads = 1, 32, 32, 2
    tower = Qwen2VisionTransformerPretrainedModel(vision)
    with pytest.raises(UnsupportedFeatureError, match="Qwen2-VL"):
        tokenprune.wrap(tower, _strategy("x", TopKDrop()))
    assert not hasattr(tower, "tokenprune")


def test_a_caller_mask_on_a_shrunk_block_is_rejected():
    case = make_timm()
    mask = torch.zeros(1, 1, 65, 65, dtype=torch.float64)
    with tokenprune.pruned(case.module, _strategy("timm", TopKDrop())):
        with pytest.raises(UnsupportedFeatureError, match="attention mask"):
            case.module.forward_features(pixels(), attn_mask=mask)


def _enable_checkpointing(name: str, module) -> None:
    if name == "timm":
        module.set_grad_checkpointing(True)
    elif name == "open_clip":
        module.set_grad_checkpointing(True)
    else:
        module.activation_checkpointing_enable() if hasattr(module, "activation_checkpointing_enable") else module.gradient_checkpointing_enable()


@pytest.mark.parametrize("name", ["timm", "open_clip", "hf_clip"])
def test_gradient_checkpointing_is_identical(name):
    """Block hooks run outside each checkpointed block: outputs and gradients are unchanged."""
    results = []
    for checkpointing in (False, True):
        case = FACTORIES[name]()
        case.module.train()
        if checkpointing:
            _enable_checkpointing(name, case.module)
        with tokenprune.pruned(case.module, _strategy(name, SimilarityMerge(proportional_attention=True))) as handle:
            out = case.run(pixels(batch=2))
            out.square().sum().backward()
            assert handle.stats.sequence_lengths[-1] == 16 + case.num_prefix
        grads = [p.grad.clone() for p in case.module.parameters() if p.grad is not None]
        results.append((out.detach(), grads))
    (out_a, grads_a), (out_b, grads_b) = results
    assert len(grads_a) == len(grads_b) > 0
    assert _max_diff(out_a, out_b) <= 1e-12
    assert max(_max_diff(a, b) for a, b in zip(grads_a, grads_b)) <= 1e-10


def _max_diff(a, b) -> float:
    return float((a - b).abs().max())


@pytest.mark.parametrize("name", ADAPTERS)
def test_keys_only_path_matches_queries_keys(cases, name):
    """The cheaper keys-only projection (used by merging) equals the keys of the full q/k path."""
    case = cases[name]
    adapter = get_registry().encoder_adapter_for(case.module)
    block = adapter.locate(case.module).blocks[1]
    hidden = torch.randn(2, 9, adapter.locate(case.module).hidden_size, dtype=torch.float64)
    assert torch.equal(adapter.keys(block, hidden), adapter.queries_keys(block, hidden)[1])
