"""PEFT LoRA on a wrapped LLaVA, in both orders: wrap then `get_peft_model`, and the reverse.

Expected values come from an independent model: the same LoRA weights merged into the base
weights (`merge_and_unload`) and then wrapped. Both orders must match it, match each other
bitwise, leave the state_dict keys exactly as a never-wrapped PEFT model has them, and unwrap to
the plain PEFT model bitwise.
"""

from __future__ import annotations

import copy

import pytest
import torch

import tiny_models as tm
import tokenprune

peft = pytest.importorskip("peft")

SCHEDULE = dict(layer_list=[2, 4, 6], image_token_ratio_list=[0.5, 0.25, 0.125])
# LoRA on the language model's attention and MLP projections (not the vision tower).
TARGETS = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"


def _lora(model):
    """LoRA with random A and B (``init_lora_weights=False``) so the adapter changes the output."""
    torch.manual_seed(7)
    config = peft.LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS, init_lora_weights=False)
    return peft.get_peft_model(model, config)


@pytest.fixture(scope="module")
def setup():
    base = tm.make_llava(dtype=torch.float64)
    inputs = tm.add_labels(tm.llava_inputs(base, "left_padded"), answer_len=3)
    return base, inputs


def _run(model, inputs):
    with torch.no_grad():
        out = model(**inputs)
    return out.logits, out.loss


def _expected(base, inputs):
    merged = _lora(copy.deepcopy(base)).merge_and_unload()
    tokenprune.wrap(merged, "pyramiddrop", **SCHEDULE)
    logits, loss = _run(merged, inputs)
    return logits, loss, merged.tokenprune.kept_positions()


@pytest.mark.parametrize("order", ["wrap_then_peft", "peft_then_wrap"])
def test_lora_forward_equals_merged_reference(setup, order):
    base, inputs = setup
    if order == "wrap_then_peft":
        model = _lora(tokenprune.wrap(copy.deepcopy(base), "pyramiddrop", **SCHEDULE))
    else:
        model = tokenprune.wrap(_lora(copy.deepcopy(base)), "pyramiddrop", **SCHEDULE)
    assert isinstance(model, peft.PeftModel)
    logits, loss = _run(model, inputs)
    stats = model.tokenprune.stats  # the handle is reachable through the PEFT container
    assert [row for row in stats.visual_tokens][-1] == [2, 2]
    ref_logits, ref_loss, ref_kept = _expected(base, inputs)
    kept = model.tokenprune.kept_positions()
    assert torch.equal(kept[0], ref_kept[0]) and torch.equal(kept[1], ref_kept[1])
    assert logits.shape == ref_logits.shape
    assert torch.allclose(logits, ref_logits, atol=1e-10, rtol=0)
    assert abs(float(loss) - float(ref_loss)) < 1e-10
    # The adapter matters: without LoRA the same pruned model gives other logits.
    plain = tokenprune.wrap(copy.deepcopy(base), "pyramiddrop", **SCHEDULE)
    assert not torch.allclose(_run(plain, inputs)[0], logits, atol=1e-3)


def test_both_orders_agree_bitwise_and_train_the_same(setup):
    base, inputs = setup
    first = _lora(tokenprune.wrap(copy.deepcopy(base), "pyramiddrop", **SCHEDULE))
    second = tokenprune.wrap(_lora(copy.deepcopy(base)), "pyramiddrop", **SCHEDULE)
    grads = []
    for model in (first, second):
        model.train()
        loss = model(**inputs).loss
        loss.backward()
        named = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
        assert named and all("lora_" in n for n in named), "only LoRA weights train"
        assert all(g is not None and torch.isfinite(g).all() for g in named.values())
        grads.append((loss.item(), named))
    assert grads[0][0] == grads[1][0]
    assert grads[0][1].keys() == grads[1][1].keys()
    assert all(torch.equal(grads[0][1][n], grads[1][1][n]) for n in grads[0][1])


@pytest.mark.parametrize("order", ["wrap_then_peft", "peft_then_wrap"])
def test_state_dict_keys_and_unwrap(setup, order):
    base, inputs = setup
    reference = _lora(copy.deepcopy(base))  # never wrapped
    if order == "wrap_then_peft":
        model = _lora(tokenprune.wrap(copy.deepcopy(base), "pyramiddrop", **SCHEDULE))
    else:
        model = tokenprune.wrap(_lora(copy.deepcopy(base)), "pyramiddrop", **SCHEDULE)
    assert list(model.state_dict()) == list(reference.state_dict())
    # Apart from LoRA's own weights (and PEFT's base_layer indirection), the keys are the base model's.
    stripped = {
        k.removeprefix("base_model.model.").replace(".base_layer", "") for k in model.state_dict() if "lora_" not in k
    }
    assert stripped == set(base.state_dict())
    assert set(peft.get_peft_model_state_dict(model)) == set(peft.get_peft_model_state_dict(reference))
    tokenprune.unwrap(model)
    assert not hasattr(model, "tokenprune")
    for got, want in zip(_run(model, inputs), _run(reference, inputs)):
        assert torch.equal(got, want)
