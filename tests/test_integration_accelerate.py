"""accelerate placement: device maps, CPU offload and disk offload keep pruning exact.

This machine has no GPU, so every "device" is the CPU; what can be checked here is the code path
accelerate adds: ``AlignDevicesHook`` on modules, weights on the ``meta`` device until a module's
own hook loads them (offloading), and inputs moved by hooks *after* the engine's pre-hooks ran.
Each placed model must give the same logits and generated ids as the same pruned model without
accelerate, bitwise (float64). Several real GPUs (scores on each layer's device) are not testable
here; see docs/integrations.md.
"""

from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest
import torch
from torch import nn
from transformers import LlavaForConditionalGeneration

import tiny_models as tm
import tokenprune
from tokenprune.engine.placement import execution_device

accelerate = pytest.importorskip("accelerate")

SCHEDULE = dict(layer_list=[2, 4, 6], image_token_ratio_list=[0.5, 0.25, 0.125])
GEN = dict(max_new_tokens=4, do_sample=False)


@pytest.fixture(scope="module")
def reference():
    base = tm.make_llava(dtype=torch.float64)
    inputs = tm.llava_inputs(base, "left_padded")
    model = tokenprune.wrap(copy.deepcopy(base), "pyramiddrop", **SCHEDULE)
    with torch.no_grad():
        logits = model(**inputs).logits
    ids = model.generate(**inputs, **GEN)
    return base, inputs, logits, ids


def _check(model, reference):
    _, inputs, logits, ids = reference
    with torch.no_grad():
        got = model(**inputs).logits
    assert model.tokenprune.stats.visual_tokens[-1] == [2, 2]
    assert torch.equal(got, logits)
    assert torch.equal(model.generate(**inputs, **GEN), ids)


def _disk_map(num_layers: int = 8) -> dict[str, str]:
    """Everything on the CPU except the second half of the decoder layers, offloaded to disk."""
    device_map = {
        "model.vision_tower": "cpu",
        "model.multi_modal_projector": "cpu",
        "model.language_model.embed_tokens": "cpu",
        "model.language_model.rotary_emb": "cpu",
        "model.language_model.norm": "cpu",
        "lm_head": "cpu",
    }
    for i in range(num_layers):
        device_map[f"model.language_model.layers.{i}"] = "cpu" if i < num_layers // 2 else "disk"
    return device_map


@pytest.mark.parametrize("order", ["wrap_then_offload", "offload_then_wrap"])
def test_cpu_offload(reference, order):
    """Weights live on "meta" and each module's hook loads them for its call."""
    base = reference[0]
    model = copy.deepcopy(base)
    if order == "wrap_then_offload":
        model = accelerate.cpu_offload(tokenprune.wrap(model, "pyramiddrop", **SCHEDULE), execution_device="cpu")
    else:
        model = tokenprune.wrap(accelerate.cpu_offload(model, execution_device="cpu"), "pyramiddrop", **SCHEDULE)
    q_proj = model.model.language_model.layers[4].self_attn.q_proj
    assert q_proj.weight.device.type == "meta"  # the scorer must not take its device from here
    _check(model, reference)


def test_dispatch_model_with_disk_offload(reference, tmp_path):
    model = accelerate.dispatch_model(
        copy.deepcopy(reference[0]), device_map=_disk_map(), main_device="cpu", offload_dir=str(tmp_path)
    )
    tokenprune.wrap(model, "pyramiddrop", **SCHEDULE)
    _check(model, reference)
    tokenprune.unwrap(model)
    with torch.no_grad():  # unwrap restores the dense model, offloaded or not
        dense = copy.deepcopy(reference[0])(**reference[1]).logits
        assert torch.equal(model(**reference[1]).logits, dense)


@pytest.mark.parametrize("device_map", ["auto", "disk"])
def test_from_pretrained_device_map(reference, tmp_path, device_map):
    """transformers' own loading path: ``from_pretrained(device_map=...)``, then wrap."""
    reference[0].save_pretrained(tmp_path / "ckpt")
    kwargs = {"device_map": "auto"} if device_map == "auto" else {
        "device_map": _disk_map(), "offload_folder": str(tmp_path / "offload")}
    model = LlavaForConditionalGeneration.from_pretrained(tmp_path / "ckpt", dtype=torch.float64, **kwargs)
    if device_map == "disk":
        assert "disk" in model.hf_device_map.values()
        assert model.model.language_model.layers[6].self_attn.q_proj.weight.device.type == "meta"
    model.generation_config = reference[0].generation_config
    tokenprune.wrap(model, "pyramiddrop", **SCHEDULE)
    _check(model, reference)


def test_inputs_embeds_on_an_offloaded_model(reference):
    """Visual tokens found from ``inputs_embeds`` when the embedding weights are offloaded."""
    base, inputs, logits, _ = reference
    model = tokenprune.wrap(accelerate.cpu_offload(copy.deepcopy(base), execution_device="cpu"), "pyramiddrop", **SCHEDULE)
    assert model.get_input_embeddings().weight.device.type == "meta"
    embeds_inputs = dict(inputs)
    with torch.no_grad():
        embeds_inputs["inputs_embeds"] = model.get_input_embeddings()(embeds_inputs.pop("input_ids"))
        got = model(**embeds_inputs).logits
    assert torch.equal(got, logits)


def test_execution_device_prefers_the_hook():
    layer = nn.Sequential(nn.Linear(2, 2))
    assert execution_device(layer) == torch.device("cpu")  # no hook: the first real parameter
    with torch.device("meta"):
        offloaded = nn.Linear(2, 2)
    offloaded._hf_hook = SimpleNamespace(execution_device="cpu", offload=True)
    assert execution_device(offloaded) == torch.device("cpu")
    offloaded._hf_hook = SimpleNamespace(hooks=[SimpleNamespace(execution_device=0)])  # a SequentialHook
    assert execution_device(offloaded) == torch.device(0)
