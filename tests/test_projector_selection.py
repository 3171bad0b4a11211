"""`tokenprune.projector_selection` keeps exactly the tokens the wrapped transformers model keeps.

These functions are what the vLLM plugin runs on vLLM's tower output; here they run on the tower
output of the same tiny transformers models that `tokenprune.wrap` prunes, so a change to the
projector-side selection (`tokenprune.encoder.vlm`, `tokenprune.encoder.packed`) that these
functions do not follow fails in the main test venv, without vLLM.
"""

from __future__ import annotations

import pytest
import torch

import tokenprune
from tiny_models import llava_inputs, make_llava
from tiny_models_qwen_internvl import make_qwen2_vl, qwen2_vl_inputs
from tokenprune.adapters.hf_vision import HFVisionAdapter
from tokenprune.encoder.context import EncoderContext
from tokenprune.projector_selection import kept_packed_count, kept_patch_count, select_packed, select_patches
from tokenprune.registry import get_registry


@pytest.fixture(scope="module")
def llava():
    return make_llava(dtype=torch.float32)


@pytest.fixture(scope="module")
def qwen2_vl():
    return make_qwen2_vl(dtype=torch.float32)


@pytest.mark.parametrize("name, options", [("visionzip", {"ratio": 0.5}), ("divprune", {"ratio": 0.25}),
                                           ("pooling", {"ratio": 0.25}), ("downsample", {"ratio": 0.25})])  # fmt: skip
def test_select_patches_equals_the_llava_bridge(llava, name, options):
    model = llava
    inputs = llava_inputs(model, "mixed")
    selection = get_registry().build(name, **options).projector
    vision = get_registry().adapter_for(model).vision_tower(model)
    with torch.no_grad():
        states = vision.tower(inputs["pixel_values"], output_hidden_states=True).hidden_states
    x = states[vision.feature_layer]
    batch, n = x.shape[:2]
    visual = torch.ones(batch, n, dtype=torch.bool)
    visual[:, 0] = False
    block = HFVisionAdapter().locate(vision.tower).blocks[vision.feature_layer]
    ctx = EncoderContext.at_block(HFVisionAdapter(), block, vision.feature_layer, x, positions=torch.arange(n).expand(batch, -1),
                                  valid=torch.ones_like(visual), visual=visual, num_prefix=1)  # fmt: skip
    index, features = select_patches(selection, ctx, kept_patch_count(selection, n - 1))
    with tokenprune.pruned(model, name, **options) as handle, torch.no_grad():
        model(**inputs)
        expected = handle._engine.bridge._local.selection
    assert torch.equal(index, expected)
    assert features.shape == (batch, 1 + kept_patch_count(selection, n - 1), x.shape[-1])


@pytest.mark.parametrize("name, options", [("divprune", {"ratio": 0.25}), ("pooling", {"ratio": 0.25}), ("downsample", {"ratio": 0.25})])
def test_select_packed_equals_the_qwen_selector(qwen2_vl, name, options):
    model = qwen2_vl
    inputs = qwen2_vl_inputs(model, "mixed")
    selection = get_registry().build(name, **options).projector
    merge = model.config.vision_config.spatial_merge_size
    grid = inputs["image_grid_thw"]
    with torch.no_grad():
        features = model.model.get_image_features(inputs["pixel_values"], grid, return_dict=True).pooler_output
    merged = torch.stack([grid[:, 0], grid[:, 1] // merge, grid[:, 2] // merge], dim=1)

    def no_attention():
        raise AssertionError("these strategies do not read attention")

    kept, index = select_packed(selection, list(features), merged, no_attention)
    assert [len(i) for i in index] == [kept_packed_count(selection, int(g.prod())) for g in merged]
    with tokenprune.pruned(model, name, **options) as handle, torch.no_grad():
        model(**inputs)
        columns = handle.input_columns()
    image_id = model.config.image_token_id
    runs = []
    for row, ids in enumerate(inputs["input_ids"].tolist()):
        start = None
        for i, t in enumerate([*ids, -1]):
            if t == image_id and start is None:
                start = i
            elif t != image_id and start is not None:
                runs.append((row, start, i))
                start = None
    expected = [[c - a for c in columns[row].tolist() if a <= c < b] for row, a, b in runs]
    assert [i.tolist() for i in index] == expected
