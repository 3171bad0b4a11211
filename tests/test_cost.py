"""The cost model: the paper's printed TFLOPs, the full convention, KV-cache bytes, shapes from configs."""

from __future__ import annotations

import pytest

from tokenprune.cost import (
    PRESETS,
    ModelDims,
    decode_flops,
    estimate,
    full_layer_flops,
    kv_cache_bytes,
    layer_flops,
    stack_flops,
    vision_flops,
)
from tokenprune.registry import get_registry


def plan(dims: ModelDims, n: int, **options):
    """The schedule exactly as the CLI resolves it: the strategy's own scheduler."""
    return get_registry().build("pyramiddrop", **options).scheduler.plan(dims.num_layers, [n])


FASTV = dict(layer_list=[2], image_token_ratio_list=[0.5])  # FastV K=2, R=50% as a schedule

# (preset, visual tokens, options, dense TFLOPs, pruned TFLOPs) as printed in the PyramidDrop paper
PAPER = [
    ("llava-1.5-7b", 576, {}, 3.82, 1.78),
    ("llava-1.5-7b", 576, FASTV, 3.82, 2.01),
    ("llava-1.5-7b", 576, {"ratio": 0.6}, 3.82, 2.06),
    ("llava-next-7b", 2880, {}, 20.8, 9.46),
    ("llava-next-7b", 2880, FASTV, 20.8, 10.6),
    ("llava-next-7b", 2880, {"ratio": 0.4}, 20.8, 8.22),
    ("llava-next-7b", 5184, {}, 40.6, 18.1),  # NeXT-p9: 9 x 576, newline tokens not counted
]


def _printed(value: float) -> float:
    """Rounded as the paper prints (3 significant digits: 3.82, 20.8, 9.46)."""
    return float(f"{value:.3g}")


@pytest.mark.parametrize(("preset", "n", "options", "dense", "pruned"), PAPER)
def test_paper_tflops(preset, n, options, dense, pruned):
    dims = PRESETS[preset]
    cost = estimate(dims, plan(dims, n, **options), visual_tokens=n)
    assert _printed(cost.paper_dense / 1e12) == dense
    assert _printed(cost.paper_pruned / 1e12) == pruned


def test_paper_convention_is_the_original_formula():
    assert layer_flops(576, 4096, 11008) == 4 * 576 * 4096**2 + 2 * 576**2 * 4096 + 3 * 576 * 4096 * 11008
    assert round(stack_flops([576] * 32, 4096, 11008) / 1e12, 2) == 3.82
    tokens = [576] * 8 + [288] * 8 + [144] * 8 + [72] * 8
    assert round(stack_flops(tokens, 4096, 11008) / 1e12, 2) == 1.78


def test_average_tokens_and_saving():
    dims = PRESETS["llava-1.5-7b"]
    cost = estimate(dims, plan(dims, 576))
    assert cost.layers == (8, 16, 24)
    assert cost.average_visual_tokens == 270.0
    assert cost.paper_saving == pytest.approx(1 - 1.7774 / 3.8172, abs=1e-3)
    data = cost.to_dict()
    assert data["avg_visual_tokens"] == 270.0
    assert round(data["dense_tflops"], 2) == 3.82 and round(data["pruned_tflops"], 2) == 1.78
    assert [s["visual_tokens"] for s in data["stages"]] == [576, 288, 144, 72]
    assert [s["layers"] for s in data["stages"]] == [8, 8, 8, 8]
    assert sum(s["paper_tflops"] for s in data["stages"]) == pytest.approx(data["pruned_tflops"])
    assert sum(s["full_tflops"] for s in data["stages"]) == pytest.approx(data["full"]["pruned_tflops"], rel=1e-3)


@pytest.mark.parametrize("preset", list(PRESETS))
@pytest.mark.parametrize("options", [{}, FASTV])
def test_full_convention_is_at_least_the_paper_convention(preset, options):
    """More is counted (text, LM head), so the full convention is >= the paper's, except that the paper
    counts K/V projections at full width (4nd^2): with grouped-query attention (Qwen2-VL, InternVL3)
    the real K/V projections are 7x narrower and the full count can come out lower."""
    dims = PRESETS[preset]
    cost = estimate(dims, plan(dims, dims.visual_tokens, **options), text_tokens=64, new_tokens=8)
    if dims.num_kv_heads == dims.num_heads:
        assert cost.full_dense >= cost.paper_dense
        assert cost.full_pruned >= cost.paper_pruned
    assert cost.full_pruned < cost.full_dense
    assert cost.full_dense + cost.vision > cost.full_dense
    assert cost.ideal_speedup_with_vision < cost.ideal_speedup  # the vision encoder is not reduced
    assert 1.0 < cost.ideal_decode_speedup < cost.ideal_speedup  # decode is dominated by the weights


def test_full_convention_equals_paper_for_visual_only_mha():
    """Without text, LM head or GQA, the full convention is the paper's formula."""
    dims = ModelDims(num_layers=32, hidden_size=4096, intermediate_size=11008, num_heads=32)
    assert full_layer_flops(dims, 576) == layer_flops(576, 4096, 11008)
    cost = estimate(dims, plan(dims, 576), text_tokens=0, lm_head_tokens=0)
    assert cost.full_dense == cost.paper_dense and cost.full_pruned == cost.paper_pruned


def test_gqa_projection_widths():
    dims = PRESETS["qwen2-vl-7b"]
    assert (dims.q_dim, dims.kv_dim, dims.head_dim) == (3584, 512, 128)
    n, d = 100, 3584
    expected = n * d * 3584 + 2 * n * d * 512 + n * 3584 * d + 2 * n * n * 3584 + 3 * n * d * 18944
    assert full_layer_flops(dims, n) == expected
    causal = full_layer_flops(dims, n, causal=True)
    assert causal == expected - 2 * (n * n - n * (n + 1) / 2) * 3584


def test_kv_bytes_follow_the_schedule():
    dims = PRESETS["llava-1.5-7b"]
    per_token = 2 * 32 * 128 * 2  # K and V, 32 KV heads x 128, bf16
    assert kv_cache_bytes(dims, [1] * 32) == 32 * per_token
    assert kv_cache_bytes(dims, [10] * 32, "float32") == 2 * kv_cache_bytes(dims, [10] * 32, "bfloat16")
    cost = estimate(dims, plan(dims, 576), text_tokens=64)
    assert cost.kv_dense == 32 * 640 * per_token
    assert cost.kv_pruned == 8 * (640 + 352 + 208 + 136) * per_token
    assert cost.kv_pruned < cost.kv_dense
    # the cache shrinks exactly in proportion to the tokens each layer keeps
    assert cost.kv_pruned / cost.kv_dense == pytest.approx((640 + 352 + 208 + 136) / (4 * 640))
    # more reduction, smaller cache; a keep-all schedule changes nothing
    harder = estimate(dims, plan(dims, 576, ratio=0.3), text_tokens=64)
    assert harder.kv_pruned < cost.kv_pruned
    keep_all = estimate(dims, plan(dims, 576, ratio=1.0), text_tokens=64)
    assert keep_all.kv_pruned == keep_all.kv_dense and keep_all.full_pruned == keep_all.full_dense
    # new tokens land in every layer
    grown = estimate(dims, plan(dims, 576), text_tokens=64, new_tokens=10)
    assert grown.kv_pruned - cost.kv_pruned == grown.kv_dense - cost.kv_dense == 32 * 10 * per_token
    qwen = PRESETS["qwen2-vl-7b"]
    assert kv_cache_bytes(qwen, [1] * 28) == 28 * 2 * 4 * 128 * 2  # 4 KV heads


def test_decode_counts_growing_keys():
    dims = ModelDims(num_layers=2, hidden_size=8, intermediate_size=16, num_heads=2, vocab_size=10)
    total = decode_flops(dims, [5, 3], new_tokens=2)
    expected = sum(full_layer_flops(dims, 1, keys=c + t + 1) for t in range(2) for c in (5, 3)) + 2 * 8 * 10
    assert total == expected


def test_vision_flops_of_presets():
    llava = PRESETS["llava-1.5-7b"]
    s, h, m = 577, 1024, 4096
    encoder = 24 * (4 * s * h * h + 2 * s * s * h + 2 * s * h * m)
    assert vision_flops(llava, 576) == encoder + 576 * (1024 * 4096 + 4096 * 4096)
    assert vision_flops(PRESETS["llava-next-7b"], 2880) == pytest.approx(
        5 * encoder + 2880 * (1024 * 4096 + 4096 * 4096)
    )
    assert vision_flops(llava.with_(vision=None), 576) == 0


def test_dims_from_config_match_the_preset():
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig

    vision = CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                              image_size=336, patch_size=14)  # fmt: skip
    text = LlamaConfig(vocab_size=32064, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                       num_attention_heads=32)  # fmt: skip
    config = LlavaConfig(vision_config=vision, text_config=text, image_seq_length=576)
    dims = ModelDims.from_config(config, name="llava-1.5-7b")
    preset = PRESETS["llava-1.5-7b"]
    assert dims == preset
    assert ModelDims.from_config(text).vision is None  # a text config alone


def test_dims_from_a_gqa_config():
    from transformers import Qwen2Config

    config = Qwen2Config(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
                         num_key_value_heads=4, vocab_size=152064)  # fmt: skip
    dims = ModelDims.from_config(config)
    assert (dims.num_kv_heads, dims.head_dim, dims.kv_dim) == (4, 128, 512)
    assert dims.visual_tokens is None


def test_explicit_dims_are_validated():
    with pytest.raises(ValueError, match="multiple of num_kv_heads"):
        ModelDims(num_layers=2, hidden_size=64, intermediate_size=128, num_heads=4, num_kv_heads=3)
    with pytest.raises(KeyError, match="Known presets"):
        ModelDims.preset("gpt-7")
    dims = ModelDims(num_layers=2, hidden_size=64, intermediate_size=128, num_heads=4)
    with pytest.raises(ValueError, match="visual_tokens"):
        estimate(dims)
    with pytest.raises(ValueError, match="schedule is for"):
        estimate(dims, plan(PRESETS["llava-1.5-7b"], 576))


def test_vision_dims_come_from_the_family_adapter():
    """Qwen2-VL's packed tower and InternVL's pixel shuffle are read by their adapters, not by the cost model."""
    import tiny_models as tm
    import tiny_models_qwen_internvl as tq

    from tokenprune.cost import VisionDims

    qwen = ModelDims.from_config(tq.qwen2_vl_config()).vision  # tower 32 wide, 2x2 merge, text 64 wide
    assert qwen == VisionDims(num_layers=2, hidden_size=32, intermediate_size=64, num_heads=2, visual_tokens_per_crop=None,
                              patches_per_visual_token=4, extra_tokens=0, projector=((128, 128), (128, 64)))  # fmt: skip
    internvl = ModelDims.from_config(tq.internvl_config()).vision  # 16 of 64 patches per tile after the shuffle
    assert internvl == VisionDims(num_layers=2, hidden_size=32, intermediate_size=64, num_heads=2,
                                  visual_tokens_per_crop=16, patches_per_visual_token=4, extra_tokens=1,
                                  projector=((128, 64), (64, 64)))  # fmt: skip
    llava = ModelDims.from_config(tm.llava_config()).vision
    assert (llava.visual_tokens_per_crop, llava.patches_per_visual_token, llava.projector) == (16, 1, ((32, 64), (64, 64)))
    registry = get_registry()
    assert registry.adapter_for_config(tq.qwen2_vl_config()).name == "qwen_vl"
    assert registry.adapter_for_config(tm.llava_config()).name == "llava"


def test_a_config_no_adapter_handles_is_read_as_a_clip_style_tower():
    import tiny_models as tm

    config = tm.llava_config()
    config.model_type = "someone_elses_vlm"  # no adapter handles it: the generic [CLS]-tower reading applies
    assert get_registry().adapter_for_config(config) is None
    assert ModelDims.from_config(config).vision == ModelDims.from_config(tm.llava_config()).vision


def test_no_core_module_names_a_model_type():
    """Model knowledge lives in adapters/: no other tokenprune module spells a registered ``model_type``."""
    import ast
    from pathlib import Path

    import tokenprune

    model_types = {t for spec in get_registry().adapters.values() for t in spec.adapter.model_types}
    model_types |= {"internvl_chat"}
    root = Path(tokenprune.__file__).resolve().parent
    offenders = []
    for path in root.rglob("*.py"):
        if "adapters" in path.relative_to(root).parts:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in model_types:
                offenders.append(f"{path.relative_to(root)}:{node.lineno} {node.value!r}")
    assert not offenders, f"model_type strings outside adapters/: {offenders}"
