"""The cost of video prompts: visual tokens of a video shape per family, and dense vs. strategy FLOPs."""

from __future__ import annotations

import pytest

from tokenprune.cost import ModelDims, full_layer_flops, paper_flops
from tokenprune.registry import get_registry
from tokenprune.video_cost import VideoShape, video_cost, video_grid


def test_video_tokens_per_family():
    # Qwen2.5-VL: 32 frames at 448x448 -> 16 temporal patches x 16 x 16 merged tokens (the issue's ~4,096)
    assert video_grid("qwen2.5-vl-7b", VideoShape(32, 448, 448)).tokens == 4096
    grid = video_grid("qwen2-vl-7b", VideoShape(33, 360, 640))  # 33 frames pad to 17 patches; sides round to 28 px
    assert grid.grid == (17, 13, 23) and grid.encoder_sequences == (13 * 23 * 4,) * 17
    assert video_grid("qwen2-vl-7b", VideoShape(32, 448, 448, temporal_patch=1)).grid == (32, 16, 16)
    one = video_grid("llava-onevision-7b", VideoShape(32, 720, 1280))  # every frame resized to 384 px
    assert (one.grid, one.extra, one.tokens) == ((32, 14, 14), 1, 32 * 196 + 1)
    assert one.encoder_sequences == (729,) * 32


def test_bad_video_shapes_and_families_raise_clearly():
    assert VideoShape.parse("32x448x448") == VideoShape(32, 448, 448)
    assert VideoShape.parse("16x224x336x2") == VideoShape(16, 224, 336, 2)
    with pytest.raises(ValueError, match="FRAMESxHEIGHTxWIDTH"):
        VideoShape.parse("32 frames")
    with pytest.raises(ValueError, match="positive"):
        VideoShape(0, 448, 448)
    with pytest.raises(ValueError, match="no temporal patch"):
        video_grid("llava-onevision-7b", VideoShape(8, 384, 384, temporal_patch=2))
    with pytest.raises(ValueError, match="takes no video"):
        video_grid("llava-1.5-7b", VideoShape(8, 336, 336))


@pytest.mark.parametrize("model", ["qwen2-vl-7b", "qwen2.5-vl-7b", "llava-onevision-7b"])
def test_strategies_cost_what_the_llm_receives(model):
    dims = ModelDims.preset(model)
    shape = VideoShape(32, 448, 448)
    grid = video_grid(model, shape)
    registry = get_registry()
    dense = video_cost(dims, model, shape)
    assert dense["llm_visual_tokens"] == grid.tokens
    assert dense["paper"]["pruned_tflops"] == dense["paper"]["dense_tflops"]
    evs = video_cost(dims, model, shape, registry.build("evs", ratio=0.5))
    kept = registry.build("evs", ratio=0.5).projector.kept_count(grid.tokens - grid.extra, grid.grid) + grid.extra
    assert evs["llm_visual_tokens"] == kept
    assert evs["paper"]["pruned_tflops"] == pytest.approx(paper_flops(dims, [kept] * dims.num_layers) / 1e12)
    text = dims.text_tokens
    expected = sum(full_layer_flops(dims, text + kept) for _ in range(dims.num_layers)) + dims.hidden_size * dims.vocab_size
    assert evs["full"]["pruned_tflops"] == pytest.approx(expected / 1e12)
    assert evs["vision_tflops"] == dense["vision_tflops"] > 0  # the tower runs on every frame either way
    both = video_cost(dims, model, shape, registry.build("temporal_pyramiddrop", temporal_ratio=0.5))
    per_layer = both["visual_tokens_per_layer"]
    assert per_layer[0] == both["llm_visual_tokens"] and per_layer[-1] == int(both["llm_visual_tokens"] * 0.125)
    assert both["paper"]["pruned_tflops"] < evs["paper"]["pruned_tflops"] < dense["paper"]["dense_tflops"]


def test_flops_command_takes_a_video_shape(capsys):
    import json

    from tokenprune.tools.cli import main

    assert main(["flops", "--model", "qwen2.5-vl-7b", "--video", "32x448x448", "--strategy", "evs", "--option", "ratio=0.5", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert (data["visual_tokens"], data["llm_visual_tokens"], data["grid"]) == (4096, 2048, [16, 16, 16])
    assert main(["flops", "--model", "llava-onevision-7b", "--video", "32x384x384"]) == 0
    assert "6273 visual tokens" in capsys.readouterr().out
    assert main(["flops", "--model", "llava-1.5-7b", "--video", "8x336x336"]) == 2
    assert "takes no video" in capsys.readouterr().err
    assert main(["flops", "--model", "qwen2-vl-7b", "--video", "32x448x448", "--visual-tokens", "5"]) == 2
    assert "drop --visual-tokens" in capsys.readouterr().err


def test_a_checkpoint_is_laid_out_from_its_own_config(tmp_path, capsys):
    """The adapters read the layout from the config: a checkpoint with another patch size, merge factor
    or tower image size is costed as it runs, and its directory works as `--model`."""
    import json

    from transformers import AutoConfig

    from tokenprune.tools.cli import main

    qwen = AutoConfig.for_model("qwen2_vl")
    qwen.vision_config.patch_size, qwen.vision_config.spatial_merge_size = 16, 2  # 32 px per merged token
    grid = video_grid(qwen, VideoShape(8, 448, 448))
    assert (grid.grid, grid.encoder_sequences) == ((4, 14, 14), (14 * 14 * 4,) * 4)
    qwen3 = AutoConfig.for_model("qwen3_vl")  # patch 16 by default
    assert video_grid(qwen3, VideoShape(8, 448, 448)).grid == (4, 14, 14)
    onevision = AutoConfig.for_model("llava_onevision")
    onevision.vision_config.image_size = 336  # 24 x 24 patches per frame, pooled to 12 x 12
    one = video_grid(onevision, VideoShape(4, 720, 1280))
    assert (one.grid, one.extra, one.encoder_sequences) == ((4, 12, 12), 1, (576,) * 4)
    with pytest.raises(ValueError, match="takes no video"):
        video_grid(AutoConfig.for_model("llava"), VideoShape(8, 336, 336))

    qwen.save_pretrained(tmp_path)
    assert main(["flops", "--model", str(tmp_path), "--video", "8x448x448", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert (data["grid"], data["visual_tokens"]) == ([4, 14, 14], 4 * 14 * 14)
    assert main(["flops", "--model", str(tmp_path / "missing"), "--video", "8x448x448"]) == 2
    assert "neither a model preset" in capsys.readouterr().err
