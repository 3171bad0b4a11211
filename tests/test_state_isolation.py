"""Per-call state is isolated: across threads, across models, and after a failed call."""

from __future__ import annotations

import threading

import torch

import tiny_models as tm
import tokenprune


def _run(model, inputs):
    logits = model(**inputs).logits
    return logits, model.tokenprune.stats.visual_tokens, model.tokenprune.kept_positions()[0]


def test_two_threads_on_one_wrapped_model_keep_their_own_state():
    model = tm.make_llava()
    one = tm.llava_inputs(model, layout="single", seed=1)
    many = tm.llava_inputs(model, layout="mixed", seed=2)
    tokenprune.wrap(model, "pyramiddrop")
    expected = {"one": _run(model, one), "many": _run(model, many)}
    results: dict[str, list] = {"one": [], "many": []}
    errors: list[BaseException] = []

    def worker(name, inputs):
        try:
            for _ in range(8):
                results[name].append(_run(model, inputs))
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n, x)) for n, x in (("one", one), ("many", many))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for name, runs in results.items():
        logits, tokens, kept = expected[name]
        for got_logits, got_tokens, got_kept in runs:
            assert torch.equal(got_logits, logits)
            assert got_tokens == tokens
            assert torch.equal(got_kept, kept)


def test_two_wrapped_models_do_not_share_state():
    a, b = tm.make_llava(seed=0), tm.make_llava_next(seed=0)
    xa, xb = tm.llava_inputs(a, layout="single"), tm.llava_next_inputs(b, layout="mixed")
    tokenprune.wrap(a, "pyramiddrop")
    tokenprune.wrap(b, "pyramiddrop", ratio=0.25)
    a(**xa)
    b(**xb)
    assert a.tokenprune.stats.num_visual == [16]
    assert a.tokenprune.stats.visual_tokens[2] == [8]
    assert b.tokenprune.stats.visual_tokens[2] == [n // 4 for n in b.tokenprune.stats.num_visual]


def test_an_exception_mid_forward_does_not_leak_into_the_next_call():
    model = tm.make_llava()
    inputs = tm.llava_inputs(model, layout="left_padded")
    tokenprune.wrap(model, "pyramiddrop")
    expected = model(**inputs).logits
    layer = model.model.language_model.layers[5]

    def boom(module, args, kwargs):
        raise RuntimeError("boom")

    handle = layer.register_forward_pre_hook(boom, with_kwargs=True)
    try:
        model(**inputs)
    except RuntimeError as exc:
        assert "boom" in str(exc)
    finally:
        handle.remove()
    # Text-only call next: must not see the half-finished plan of the failed call.
    text = {k: v for k, v in inputs.items() if k not in ("pixel_values",)}
    text["input_ids"] = text["input_ids"].masked_fill(text["input_ids"] == tm.IMAGE_ID, 5)
    assert model(**text).logits.shape[1] == inputs["input_ids"].shape[1]
    assert torch.equal(model(**inputs).logits, expected)


def test_deepcopy_of_a_wrapped_model_is_an_independent_wrapped_model():
    import copy

    model = tm.make_llava()
    inputs = tm.llava_inputs(model, layout="mixed")
    tokenprune.wrap(model, "pyramiddrop")
    expected = model(**inputs).logits
    twin = copy.deepcopy(model)
    engine = twin.tokenprune._engine
    assert engine is not model.tokenprune._engine and engine.model is twin
    hooks = [h for layer in twin.model.language_model.layers for h in layer._forward_pre_hooks.values()]
    assert hooks and all(h.func.__self__ is engine for h in hooks)  # no hook still points at the original
    assert torch.equal(twin(**inputs).logits, expected)
    tokenprune.unwrap(twin)
    assert twin(**inputs).logits.shape[1] == inputs["input_ids"].shape[1]
    assert model.tokenprune.active and torch.equal(model(**inputs).logits, expected)


def test_a_freshly_wrapped_model_pickles_and_loads_wrapped(tmp_path):
    model = tm.make_llava()
    inputs = tm.llava_inputs(model, layout="single")
    tokenprune.wrap(model, "pyramiddrop")
    torch.save(model, tmp_path / "model.pt")  # before any forward: transformers' own capture hooks are not there yet
    loaded = torch.load(tmp_path / "model.pt", weights_only=False)
    assert torch.equal(loaded(**inputs).logits, model(**inputs).logits)
    assert loaded.tokenprune.stats.visual_tokens[-1] == [2]


def test_a_reused_cache_forgets_the_previous_prompts_reduction():
    """An emptied cache reused for a text-only prompt must not decode with the old index maps."""
    from transformers import DynamicCache

    from tokenprune.engine.state import RECORD_ATTR

    model = tm.make_llava()
    inputs = tm.llava_inputs(model, layout="left_padded")
    text = {"input_ids": inputs["input_ids"].masked_fill(inputs["input_ids"] == tm.IMAGE_ID, 5),
            "attention_mask": inputs["attention_mask"]}
    expected = model.generate(**text, max_new_tokens=4, do_sample=False)
    tokenprune.wrap(model, "pyramiddrop")
    used = DynamicCache(config=model.config.text_config)
    model.generate(**{k: v for k, v in inputs.items() if k != "position_ids"}, past_key_values=used,
                   max_new_tokens=2, do_sample=False)
    record = getattr(used, RECORD_ATTR)
    assert len(record.stages) == 4
    cache = DynamicCache(config=model.config.text_config)
    setattr(cache, RECORD_ATTR, record)  # an empty cache that still carries a previous prompt's maps
    got = model.generate(**text, past_key_values=cache, max_new_tokens=4, do_sample=False)
    assert torch.equal(got, expected)
    assert not hasattr(cache, RECORD_ATTR)
