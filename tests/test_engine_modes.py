"""Engine modes beyond eager + DynamicCache: a static KV cache, torch.compile, and a stack with no host reads.

These are rows of the exactness contract (docs/concepts.md) for the new modes:

1. static cache == dynamic cache: ``generate(cache_implementation="static")`` and a user-supplied
   `StaticCache` give the same ids and step logits as the DynamicCache path (SDPA, float64, within
   1e-10), on every family, with single, left-padded and mixed (images + text-only) batches. Each
   reduced layer writes at its own offset; the cache holds fewer tokens in deeper layers.
2. compiled decode: generate's auto-compiled decode step (static cache + ``CompileConfig(fullgraph=True)``,
   the all-devices switch on CPU) traces with no graph break, equals the eager DynamicCache run, and
   a second prompt of the same shape does not recompile (LLaVA, Qwen2-VL with M-RoPE, InternVL;
   batch 1 and a left-padded batch of 2).
3. compiled prefill: the wrapped language model compiled with ``fullgraph=True`` (the VLM pre-hook
   plans on the host, outside it) equals eager, with no graph break and no recompile for a new prompt.
4. no host reads: a TorchFunctionMode, active from the first decoder layer's pre-hook to the last
   layer's output, records every device->host read (``item``, ``tolist``, ``bool``, ``int``, ``cpu``,
   ``nonzero``, ...) in prefill and decode. On a GPU each one would drain the launch queue.

Dynamo runs with its ``eager`` backend: graph breaks and recompiles are decided while tracing, before any
backend; the inductor cell checks that the traced graph also compiles and runs.
"""

from __future__ import annotations

import functools

import pytest
import torch
import torch._dynamo
from torch._dynamo.utils import counters
from torch.overrides import TorchFunctionMode
from transformers import CompileConfig, StaticCache

import tiny_models as tm
import tokenprune
from exactness import LogitTap, record

NEW_TOKENS = 4
SDPA64 = 1e-10
COMPILE_FAMILIES = ["llava", "qwen2_vl", "internvl_qwen2"]
STATIC_FAMILIES = list(tm.FAMILIES)
SYNC_FREE = ["pyramiddrop", "fastv"]
"""Strategies whose scorer and reducer queue kernels only (their reducer declares ``exact_count``)."""


COMPILE_LAYOUTS = pytest.mark.parametrize("layout", ["single", "left_padded"])
COMPILE_CELLS = pytest.mark.parametrize(
    "wrapped", [pytest.param((f, torch.float32, "pyramiddrop"), id=f) for f in COMPILE_FAMILIES], indirect=True
)


@functools.cache
def _model(family: str, dtype: torch.dtype):
    return tm.FAMILIES[family][0](attn="sdpa", dtype=dtype)


@pytest.fixture
def wrapped(request):
    """A wrapped tiny model of ``request.param = (family, dtype, strategy)``; unwrapped afterwards."""
    family, dtype, strategy = request.param
    model = _model(family, dtype)
    tokenprune.wrap(model, strategy)
    yield family, model
    tokenprune.unwrap(model)
    model._compiled_call_impl = None
    model.model.language_model._compiled_call_impl = None
    for attr in ("_compiled_call", "_last_compile_config"):
        model.__dict__.pop(attr, None)


def _inputs(model, family: str, layout: str, seed: int = 0) -> dict:
    inputs = tm.FAMILIES[family][1](model, layout=layout, seed=seed)
    return {k: v for k, v in inputs.items() if k != "position_ids"}


def _generate(model, inputs: dict, **kwargs):
    tap = LogitTap(model)
    ids = model.generate(**inputs, max_new_tokens=NEW_TOKENS, do_sample=False, **kwargs)
    return ids, [s[:, -1] for s in tap.close()]


def _max_diff(a: list, b: list) -> float:
    return max((x.double() - y.double()).abs().max().item() for x, y in zip(a, b))


def _compile_config() -> CompileConfig:
    config = CompileConfig(fullgraph=True, backend="eager", mode=None)
    config._compile_all_devices = True  # transformers compiles decode on GPUs only unless asked
    return config


# -- 1. static cache ---------------------------------------------------------------------------
@pytest.mark.parametrize("layout", ["single", "left_padded", "mixed"])
@pytest.mark.parametrize(
    "wrapped", [pytest.param((f, torch.float64, "pyramiddrop"), id=f) for f in STATIC_FAMILIES], indirect=True
)
def test_static_cache_equals_dynamic_cache(wrapped, layout):
    family, model = wrapped
    if layout not in tm.LAYOUTS.get(family, ()):
        pytest.skip(f"{family} has no {layout!r} layout in the tiny-model fixtures")
    inputs = _inputs(model, family, layout)
    ids, steps = _generate(model, inputs)
    assert model.tokenprune.stats.flops_saved > 0.3  # the prefill really removed tokens
    static_ids, static_steps = _generate(model, inputs, cache_implementation="static")
    diff = record("static cache == dynamic", f"{family}-sdpa-{layout}", _max_diff(steps, static_steps))
    assert torch.equal(ids, static_ids)
    assert diff <= SDPA64


@pytest.mark.parametrize("wrapped", [pytest.param(("llava", torch.float64, "pyramiddrop"), id="llava")], indirect=True)
def test_a_user_static_cache_holds_fewer_tokens_in_reduced_layers(wrapped):
    family, model = wrapped
    inputs = _inputs(model, family, "left_padded")
    length = inputs["input_ids"].shape[1]
    ids, steps = _generate(model, inputs)
    cache = StaticCache(config=model.config, max_cache_len=length + NEW_TOKENS + 3)
    static_ids, static_steps = _generate(model, inputs, cache=cache)
    assert torch.equal(ids, static_ids)
    assert _max_diff(steps, static_steps) <= SDPA64
    held = [int(layer.cumulative_length) for layer in cache.layers]
    widths = model.tokenprune.stats.sequence_lengths
    expected = [width + NEW_TOKENS - 1 for width in widths]
    assert held == expected and held[-1] < held[0]  # each reduced layer wrote at its own offset
    # ... into buffers sized to what it can ever hold: the static cache saves memory like the dynamic one
    capacity = cache.layers[0].keys.shape[2]
    assert [layer.keys.shape[2] for layer in cache.layers] == [w + capacity - length for w in widths]
    # A text-only prompt on the same (reset) cache gets full-size layers back.
    cache.reset()
    text = {"input_ids": inputs["input_ids"][:, :3], "attention_mask": inputs["attention_mask"][:, :3]}
    text_ids = model.generate(**text, max_new_tokens=NEW_TOKENS, do_sample=False, cache=cache)
    assert torch.equal(text_ids, model.generate(**text, max_new_tokens=NEW_TOKENS, do_sample=False))
    assert all(layer.keys.shape[2] == capacity for layer in cache.layers if layer.is_initialized)
    # The same cache object serves a new prompt once reset (generate does not reset a cache it is given);
    # the engine finds it empty and drops the previous prompt's record.
    cache.reset()
    again, again_steps = _generate(model, inputs, cache=cache)
    assert torch.equal(again, ids) and _max_diff(again_steps, steps) <= SDPA64


# -- 2. compiled decode ------------------------------------------------------------------------
@COMPILE_LAYOUTS
@COMPILE_CELLS
def test_compiled_decode_has_no_graph_break_and_no_recompile(wrapped, layout):
    family, model = wrapped
    inputs = _inputs(model, family, layout)
    if layout == "left_padded":
        assert inputs["input_ids"].shape[0] == 2 and not bool(inputs["attention_mask"].all())
    dynamic_ids, _ = _generate(model, inputs)
    eager_ids, eager_steps = _generate(model, inputs, cache_implementation="static")
    torch._dynamo.reset()
    counters.clear()
    ids, steps = _generate(model, inputs, cache_implementation="static", compile_config=_compile_config())
    graphs = counters["stats"]["unique_graphs"]
    assert graphs >= 1, "the decode step was not compiled"
    assert not counters["graph_break"], dict(counters["graph_break"])
    assert torch.equal(ids, eager_ids) and torch.equal(ids, dynamic_ids)
    # float32: under dynamo SDPA may dispatch another CPU kernel than eager (measured up to 2.4e-5).
    assert record("compiled decode == eager", f"{family}-sdpa-{layout}", _max_diff(steps, eager_steps)) <= 1e-4
    other = _inputs(model, family, layout, seed=1)
    assert other["input_ids"].shape == inputs["input_ids"].shape
    _generate(model, other, cache_implementation="static", compile_config=_compile_config())
    assert counters["stats"]["unique_graphs"] == graphs, "a new prompt of the same shape recompiled"


# -- 3. compiled prefill -----------------------------------------------------------------------
@COMPILE_LAYOUTS
@COMPILE_CELLS
def test_compiled_language_model_prefill_is_one_graph(wrapped, layout):
    family, model = wrapped
    inputs = _inputs(model, family, layout)
    with torch.no_grad():
        eager = model(**inputs).logits
        torch._dynamo.reset()
        counters.clear()
        model.model.language_model.compile(fullgraph=True, backend="eager")
        compiled = model(**inputs).logits
        graphs = counters["stats"]["unique_graphs"]
        assert compiled.shape[1] < inputs["input_ids"].shape[1]  # pruned inside the compiled stack
        assert graphs == 1 and not counters["graph_break"]
        assert torch.equal(compiled, eager)
        model(**_inputs(model, family, layout, seed=1))
    assert counters["stats"]["unique_graphs"] == graphs, "a new prompt of the same shape recompiled"


@pytest.mark.parametrize("wrapped", [pytest.param(("llava", torch.float32, "pyramiddrop"), id="llava")], indirect=True)
def test_compiled_decode_with_inductor(wrapped):
    """The traced decode step also compiles with inductor (C++ on CPU) and gives the eager ids."""
    family, model = wrapped
    inputs = _inputs(model, family, "single")
    eager_ids, eager_steps = _generate(model, inputs)
    config = CompileConfig(fullgraph=True, mode=None)
    config._compile_all_devices = True
    torch._dynamo.reset()
    ids, steps = _generate(model, inputs, cache_implementation="static", compile_config=config)
    assert torch.equal(ids, eager_ids)
    assert _max_diff(steps, eager_steps) <= 1e-4  # inductor fuses and reorders float32 reductions


# -- 4. no host reads inside the decoder stack ------------------------------------------------
_HOST_READS = {
    torch.Tensor.item, torch.Tensor.tolist, torch.Tensor.__bool__, torch.Tensor.__int__, torch.Tensor.__float__,
    torch.Tensor.__index__, torch.Tensor.cpu, torch.Tensor.numpy, torch.Tensor.nonzero, torch.nonzero,
    torch.Tensor.unique, torch.unique, torch.masked_select, torch.Tensor.masked_select,
}  # fmt: skip


_HOST_DATA_TO_DEVICE = {torch.tensor, torch.as_tensor}
"""Tensors built from host values on a device: on a GPU, a blocking host->device copy (a sync too)."""


def _has_values(args: tuple) -> bool:
    """Whether a tensor factory got values to copy (transformers' caches make empty device tensors: no copy)."""
    data = args[0] if args else None
    return not (isinstance(data, (list, tuple)) and len(data) == 0)


class HostReads(TorchFunctionMode):
    """Records every torch call that syncs with the device: a read of a tensor's values on the host, or
    a tensor made on a device from host values (``torch.tensor(..., device=...)``)."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in _HOST_READS:
            self.seen.append(getattr(func, "__name__", repr(func)))
        elif func in _HOST_DATA_TO_DEVICE and (kwargs or {}).get("device") is not None and _has_values(args):
            self.seen.append(f"{func.__name__}(device=...)")
        return func(*args, **(kwargs or {}))


def watch_stack(model) -> tuple[HostReads, list]:
    """Activate a `HostReads` from the first decoder layer's pre-hook to the last layer's output."""
    layers = model.model.language_model.layers
    mode = HostReads()

    def enter(module, args):
        mode.__enter__()

    def leave(module, args, output):
        mode.__exit__(None, None, None)

    # prepend: the watch starts before tokenprune's own pre-hook on layer 0 runs
    return mode, [layers[0].register_forward_pre_hook(enter, prepend=True), layers[-1].register_forward_hook(leave)]


def test_the_watch_sees_a_host_read():
    """The detector itself can fail: a bool() of a tensor inside the watched region is recorded."""
    mode = HostReads()
    with mode:
        bool(torch.ones(1) > 0)
        torch.arange(3).tolist()
        torch.tensor([1, 2], device="cpu")  # on a GPU: a blocking host->device copy
        torch.full((2,), 1, device="cpu")  # filled on the device: no copy, not recorded
    assert mode.seen == ["__bool__", "tolist", "tensor(device=...)"]


@pytest.mark.parametrize("layout", ["mixed", "left_padded"])
@pytest.mark.parametrize(
    "wrapped",
    [pytest.param((f, torch.float32, s), id=f"{s}-{f}") for f in COMPILE_FAMILIES for s in [*SYNC_FREE, "uniform", "random"]],
    indirect=True,
)
def test_no_host_read_inside_the_decoder_stack(wrapped, layout):
    family, model = wrapped
    if layout not in tm.LAYOUTS.get(family, ()):
        pytest.skip(f"{family} has no {layout!r} layout in the tiny-model fixtures")
    inputs = _inputs(model, family, layout)
    mode, handles = watch_stack(model)
    try:
        model.generate(**inputs, max_new_tokens=NEW_TOKENS, do_sample=False)
        model.generate(**inputs, max_new_tokens=NEW_TOKENS, do_sample=False, cache_implementation="static")
    finally:
        for handle in handles:
            handle.remove()
    assert model.tokenprune.stats.flops_saved > 0.3
    assert mode.seen == [], f"device->host reads inside the decoder stack: {mode.seen}"


@pytest.mark.parametrize("wrapped", [pytest.param(("llava", torch.float32, "dart"), id="dart")], indirect=True)
def test_a_reducer_without_exact_counts_is_seen_reading_back(wrapped):
    """A strategy that decides counts on the host is caught by the same watch (the test can fail)."""
    family, model = wrapped
    mode, handles = watch_stack(model)
    try:
        model(**_inputs(model, family, "mixed"))
    finally:
        for handle in handles:
            handle.remove()
    assert mode.seen


# -- 5. compiled selection ---------------------------------------------------------------------
def _longer(inputs: dict, extra: int) -> dict:
    """The same prompt with ``extra`` more text tokens at the end (the last column repeated): another length."""
    ids = inputs["input_ids"]

    def grow(t):
        if isinstance(t, torch.Tensor) and t.dim() == 2 and t.shape == ids.shape:
            return torch.cat([t, t[:, -1:].expand(-1, extra)], 1)
        return t

    return {k: grow(v) for k, v in inputs.items()}


def _prefill(model, inputs: dict):
    with torch.no_grad():
        logits = model(**inputs).logits
    return logits, [(layer, idx.clone(), valid.clone()) for layer, idx, valid in model.tokenprune.selection()]


@pytest.mark.parametrize("layout", ["single", "left_padded", "mixed"])
@pytest.mark.parametrize(
    "wrapped",
    [pytest.param((f, torch.float64, s), id=f"{f}-{s}") for f in COMPILE_FAMILIES for s in SYNC_FREE],
    indirect=True,
)
def test_compiled_selection_equals_eager_with_one_graph(wrapped, layout):
    """`compile_selection` keeps the eager selection and logits; a new prompt length compiles nothing new.

    The first boundary reads the model's own full-length rotary tables and mask (batch 1 tables,
    transformers' mask views), the later ones the engine's gathered ones, so dynamo may compile the first
    boundary apart: at most two graphs, none per layer or per length."""
    family, model = wrapped
    if layout not in tm.LAYOUTS.get(family, ()):
        pytest.skip(f"{family} has no {layout!r} layout in the tiny-model fixtures")
    inputs = _inputs(model, family, layout)
    eager, eager_stages = _prefill(model, inputs)
    eager_ids, eager_steps = _generate(model, inputs)
    assert len(eager_stages) >= 2  # the prefill removed tokens
    torch._dynamo.reset()
    counters.clear()
    model.tokenprune.compile_selection(backend="eager")  # dynamo traces; graph breaks are decided here
    compiled, stages = _prefill(model, inputs)
    graphs = counters["stats"]["unique_graphs"]
    assert 1 <= graphs <= 2 and not counters["graph_break"], dict(counters["graph_break"])
    assert [s[0] for s in stages] == [s[0] for s in eager_stages]
    assert all(torch.equal(a[1], b[1]) and torch.equal(a[2], b[2]) for a, b in zip(stages, eager_stages))
    assert torch.equal(compiled, eager)
    ids, steps = _generate(model, inputs)
    assert torch.equal(ids, eager_ids) and _max_diff(steps, eager_steps) == 0
    graphs = counters["stats"]["unique_graphs"]  # generate passes position ids: (B, L) rotary tables, not (1, L)
    longer = _longer(inputs, 3)  # another prompt length: dynamic shapes, no new graph
    _prefill(model, longer)
    _generate(model, longer)
    assert counters["stats"]["unique_graphs"] == graphs, "a new prompt length recompiled the selection"


@pytest.mark.parametrize("wrapped", [pytest.param(("llava", torch.float32, "pyramiddrop"), id="llava")], indirect=True)
def test_compiled_selection_with_inductor(wrapped):
    """Compiled with inductor (fused C++ kernels on CPU), the same tokens are kept and the ids match."""
    family, model = wrapped
    inputs = _inputs(model, family, "left_padded")
    eager, eager_stages = _prefill(model, inputs)
    eager_ids, _ = _generate(model, inputs)
    model.tokenprune.compile_selection()
    compiled, stages = _prefill(model, inputs)
    assert all(torch.equal(a[1], b[1]) for a, b in zip(stages, eager_stages))
    assert (compiled - eager).abs().max().item() <= 1e-5  # only the gathered features; the stack is eager
    ids, _ = _generate(model, inputs)
    assert torch.equal(ids, eager_ids)


def test_compiled_selection_needs_an_llm_side_reduction():
    from encoder_models import make_hf_clip

    encoder = tokenprune.wrap(make_hf_clip().module, "tome", r=2)
    with pytest.raises(tokenprune.UnsupportedFeatureError, match="reduces no tokens inside an LLM"):
        encoder.tokenprune.compile_selection()


@pytest.mark.parametrize("wrapped", [pytest.param(("llava", torch.float32, "pyramiddrop"), id="llava")], indirect=True)
def test_compiled_selection_trains_like_eager(wrapped):
    """A training step with the selection compiled (through AOTAutograd) gives the eager loss and gradients."""
    family, model = wrapped
    inputs = _inputs(model, family, "left_padded")
    labels = inputs["input_ids"].clone()
    labels[:, :-3] = -100

    def step() -> tuple[torch.Tensor, list[torch.Tensor]]:
        model.zero_grad()
        loss = model(**inputs, labels=labels).loss
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]

    model.train()
    try:
        loss, grads = step()
        model.tokenprune.compile_selection(backend="aot_eager")
        compiled_loss, compiled_grads = step()
    finally:
        model.eval()
        model.zero_grad()
    assert torch.equal(loss, compiled_loss)
    assert len(grads) == len(compiled_grads) and all(torch.equal(a, b) for a, b in zip(grads, compiled_grads))
