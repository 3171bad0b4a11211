"""Analytic cost model: FLOPs and KV-cache bytes of a token-reduction schedule.

Two conventions, both counting one multiply-accumulate as one "FLOP", as the papers do (multiply
by 2 for hardware FLOPs; ratios and savings do not change):

* **Paper** (PyramidDrop Sec. 4.1, following FastV): per decoder layer, prefill, counting only the
  ``n`` visual tokens, ``4nd^2 + 2n^2d + 3ndm`` (``d`` hidden size, ``m`` MLP width; the 3 is
  LLaMA's three-matrix MLP). Summed over layers it reproduces the paper's printed numbers, e.g.
  LLaVA-1.5-7B (576 tokens, 32 layers, d=4096, m=11008): 3.82 TFLOPs dense, 1.78 with PyramidDrop.
  Use it to compare with the literature, not to predict time: it ignores text tokens, grouped-query
  attention, the decode phase and everything outside the decoder layers.
* **Full**: every token a layer runs on (text + visual), attention over all keys with the real
  projection sizes (grouped-query K/V projections are smaller), the MLP, optionally the LM head,
  the vision encoder and projector, and decode steps against a KV cache holding the per-layer
  lengths the schedule left. This is the convention whose ratio a measured speedup is compared
  with (see ``tokenprune bench``).

Attention scores count the full ``n x n`` square in prefill (as the paper does); pass
``causal=True`` to count only the causal half. Norms, rotary embeddings, softmax and activations
are not counted (they are elementwise and small next to the matmuls).

A model's shape comes from a transformers config (`ModelDims.from_config`), from a preset
(`ModelDims.preset`, `PRESETS`) or from explicit numbers (`ModelDims(...)`); a schedule from a
strategy's scheduler (``scheduler.plan(num_layers, [N])``). `estimate` puts them together.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from .schedule import Schedule

__all__ = [
    "layer_flops",
    "stack_flops",
    "ModelDims",
    "VisionDims",
    "tower_vision_dims",
    "PRESETS",
    "DTYPE_BYTES",
    "paper_flops",
    "full_layer_flops",
    "prefill_flops",
    "decode_flops",
    "lm_head_flops",
    "vision_flops",
    "kv_cache_bytes",
    "visual_tokens_per_layer",
    "CostEstimate",
    "estimate",
]

DTYPE_BYTES: dict[str, int] = {
    "float32": 4, "fp32": 4, "float": 4,
    "bfloat16": 2, "bf16": 2, "float16": 2, "fp16": 2, "half": 2,
    "float8": 1, "fp8": 1, "int8": 1,
}  # fmt: skip
"""Bytes per element of the KV-cache dtypes `kv_cache_bytes` accepts by name."""


# -- the paper convention (kept as it was: CallStats and the demo use it) --------------------
def layer_flops(n: float, d: int, m: int) -> float:
    """Paper-convention FLOPs of one decoder layer over ``n`` visual tokens."""
    return 4 * n * d * d + 2 * n * n * d + 3 * n * d * m


def stack_flops(tokens_per_layer: Iterable[float], d: int, m: int) -> float:
    """Paper-convention FLOPs of a stack whose layer ``i`` sees ``tokens_per_layer[i]`` visual tokens."""
    return sum(layer_flops(n, d, m) for n in tokens_per_layer)


# -- shapes ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class VisionDims:
    """The vision encoder and projector in front of the LLM (the same for dense and pruned runs).

    The encoder runs on crops (LLaVA-1.5: one 336 px image; LLaVA-NeXT: base image + tiles;
    InternVL: 448 px tiles); each crop yields ``visual_tokens_per_crop`` LLM visual tokens from
    ``visual_tokens_per_crop * patches_per_visual_token + extra_tokens`` encoder tokens (CLS
    included). ``visual_tokens_per_crop=None`` means one sequence per image of any size (Qwen2-VL).

    Attributes:
        num_layers: encoder layers that run (transformers runs all of them, also when an earlier
            layer's features are selected).
        hidden_size: encoder width.
        intermediate_size: encoder MLP width.
        num_heads: encoder attention heads (not needed for FLOPs; kept for building models).
        visual_tokens_per_crop: LLM visual tokens per crop, or ``None`` (one sequence per image).
        patches_per_visual_token: encoder tokens merged into one LLM token (4 for 2x2 merges).
        extra_tokens: encoder tokens per crop that do not become LLM tokens (CLS).
        mlp_matrices: 2 for a GELU MLP, 3 for a gated one.
        projector: ``(in, out)`` of each linear layer of the projector, applied per LLM visual
            token (after any merge).
    """

    num_layers: int
    hidden_size: int
    intermediate_size: int
    num_heads: int
    visual_tokens_per_crop: int | None
    patches_per_visual_token: int = 1
    extra_tokens: int = 1
    mlp_matrices: int = 2
    projector: tuple[tuple[int, int], ...] = ()

    def crops(self, visual_tokens: int) -> list[int]:
        """Encoder sequence length of each crop that yields ``visual_tokens`` LLM tokens."""
        if visual_tokens <= 0:
            return []
        per = self.visual_tokens_per_crop
        if per is None:
            return [visual_tokens * self.patches_per_visual_token + self.extra_tokens]
        full, rest = divmod(visual_tokens, per)
        sizes = [per] * full + ([rest] if rest else [])
        return [s * self.patches_per_visual_token + self.extra_tokens for s in sizes]


@dataclass(frozen=True)
class ModelDims:
    """The shape of a VLM's language model (and optionally its vision side), for costing.

    ``num_kv_heads`` defaults to ``num_heads`` and ``head_dim`` to ``hidden_size // num_heads``.

    Attributes:
        num_layers: decoder layers.
        hidden_size: ``d``.
        intermediate_size: ``m``, the MLP width.
        num_heads: query heads.
        num_kv_heads: key/value heads (grouped-query attention when fewer than ``num_heads``).
        head_dim: per-head width.
        vocab_size: LM-head rows (``None``: the LM head is not counted).
        mlp_matrices: 3 for a gated (SwiGLU) MLP, 2 for a plain one.
        visual_tokens: visual tokens of a typical prompt (a preset's default), or ``None``.
        text_tokens: text tokens of a typical prompt (a preset's default).
        vision: the vision encoder and projector, or ``None`` (not modelled).
        name: a label for reports.
    """

    num_layers: int
    hidden_size: int
    intermediate_size: int
    num_heads: int
    num_kv_heads: int | None = None
    head_dim: int | None = None
    vocab_size: int | None = None
    mlp_matrices: int = 3
    visual_tokens: int | None = None
    text_tokens: int = 64
    vision: VisionDims | None = None
    name: str | None = None

    def __post_init__(self) -> None:
        if self.num_kv_heads is None:
            object.__setattr__(self, "num_kv_heads", self.num_heads)
        if self.head_dim is None:
            object.__setattr__(self, "head_dim", self.hidden_size // self.num_heads)
        for attr in ("num_layers", "hidden_size", "intermediate_size", "num_heads", "num_kv_heads", "head_dim"):
            if int(getattr(self, attr)) < 1:
                raise ValueError(f"ModelDims.{attr} must be a positive integer, got {getattr(self, attr)!r}.")
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"num_heads={self.num_heads} is not a multiple of num_kv_heads={self.num_kv_heads}.")

    @property
    def q_dim(self) -> int:
        """Width of the query projection output (``num_heads * head_dim``)."""
        return self.num_heads * self.head_dim  # type: ignore[operator]

    @property
    def kv_dim(self) -> int:
        """Width of each of the key and value projection outputs (``num_kv_heads * head_dim``)."""
        return self.num_kv_heads * self.head_dim  # type: ignore[operator]

    def with_(self, **changes: Any) -> ModelDims:
        """A copy with some fields changed (e.g. ``dims.with_(visual_tokens=2880)``)."""
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """The dimensions as a plain dict (JSON-ready)."""
        return asdict(self)

    @classmethod
    def preset(cls, name: str) -> ModelDims:
        """A known model shape by name (see `PRESETS`); raises ``KeyError`` listing the names."""
        key = name.lower()
        if key not in PRESETS:
            raise KeyError(f"Unknown model preset {name!r}. Known presets: {', '.join(PRESETS)}.")
        return PRESETS[key]

    @classmethod
    def load(cls, model: str) -> ModelDims:
        """A preset by name, or the dims of a local ``config.json`` (a file, or a model directory holding one).

        Local paths are read with ``AutoConfig.from_pretrained(..., local_files_only=True)``: nothing is
        downloaded.

        Raises:
            ValueError: neither a preset nor a readable local config (the message lists the presets).
        """
        if model.lower() in PRESETS:
            return cls.preset(model)
        path = Path(model).expanduser()
        if not path.exists():
            raise ValueError(
                f"{model!r} is neither a model preset ({', '.join(PRESETS)}) nor an existing local path "
                "(a directory with config.json, or a config.json file)."
            )
        if path.is_dir() and not (path / "config.json").is_file():
            raise ValueError(f"{path} has no config.json; point at a model directory or a config.json file.")
        from transformers import AutoConfig

        try:
            config = AutoConfig.from_pretrained(str(path), local_files_only=True)
        except (ValueError, OSError, KeyError, TypeError) as exc:  # unknown model_type, broken JSON, ...
            raise ValueError(f"Could not read a transformers config from {path}: {exc}") from None
        return cls.from_config(config, name=path.parent.name if path.is_file() else path.name)

    @classmethod
    def from_config(cls, config: Any, name: str | None = None) -> ModelDims:
        """Read the dims from a transformers config (a VLM config with a ``text_config``, or a text config).

        Reads ``hidden_size``, ``intermediate_size``, ``num_attention_heads``,
        ``num_key_value_heads``, ``head_dim``, ``num_hidden_layers`` and ``vocab_size`` of the text
        config; ``image_seq_length`` (LLaVA, InternVL) as the default visual-token count; and the
        vision encoder where its config has the usual fields (CLIP/SigLIP/InternViT-style, or
        Qwen2-VL's ``depth``/``embed_dim``). Anything missing is left out, never guessed.
        """
        text = _sub_config(config, ("text_config", "llm_config", "language_config")) or config
        missing = [k for k in ("hidden_size", "intermediate_size", "num_attention_heads", "num_hidden_layers")
                   if getattr(text, k, None) is None]  # fmt: skip
        if missing:
            raise ValueError(
                f"The config of type {type(config).__name__} has no {', '.join(missing)} in its text config: "
                "cannot read the language model's dims. Give them explicitly with ModelDims(...)."
            )
        heads = int(text.num_attention_heads)
        head_dim = getattr(text, "head_dim", None)
        visual = getattr(config, "image_seq_length", None)
        return cls(
            num_layers=int(text.num_hidden_layers),
            hidden_size=int(text.hidden_size),
            intermediate_size=int(text.intermediate_size),
            num_heads=heads,
            num_kv_heads=int(getattr(text, "num_key_value_heads", None) or heads),
            head_dim=int(head_dim) if head_dim else None,
            vocab_size=int(text.vocab_size) if getattr(text, "vocab_size", None) else None,
            visual_tokens=int(visual) if visual else None,
            vision=_vision_from_config(config, int(text.hidden_size)),
            name=name or getattr(config, "model_type", None),
        )


def _sub_config(config: Any, names: Sequence[str]) -> Any:
    for name in names:
        sub = getattr(config, name, None)
        if sub is not None:
            return sub
    return None


def _vision_from_config(config: Any, text_hidden: int) -> VisionDims | None:
    """The vision encoder and projector of a VLM config, as the model family's adapter reads them.

    Model knowledge (Qwen2-VL's packed tower, InternVL's pixel shuffle) lives in the adapters
    (`tokenprune.adapters.base.Adapter.vision_dims`); a config no adapter handles is read as a
    CLIP/SigLIP-style tower (`tower_vision_dims`), and ``None`` means not modelled.
    """
    if _sub_config(config, ("vision_config",)) is None:
        return None
    from .registry import get_registry

    adapter = get_registry().adapter_for_config(config)
    return adapter.vision_dims(config, text_hidden) if adapter is not None else tower_vision_dims(config, text_hidden)


def tower_vision_dims(
    config: Any,
    text_hidden: int,
    patches_per_visual_token: int = 1,
    projector: tuple[tuple[int, int], ...] | None = None,
) -> VisionDims | None:
    """A ViT tower with a [CLS] token that runs once per crop (CLIP, SigLIP, InternViT), from ``config.vision_config``.

    Every crop of ``image_size`` px in ``patch_size`` px patches gives ``patches // patches_per_visual_token``
    LLM tokens (a pixel shuffle merges ``patches_per_visual_token`` patches into one). ``projector``
    defaults to LLaVA's two-layer MLP, its input as wide as the selected tower layer(s)
    (``vision_feature_layer``). ``None`` when the vision config lacks the usual fields.
    """
    vision = _sub_config(config, ("vision_config",))
    needed = ("num_hidden_layers", "hidden_size", "intermediate_size", "image_size", "patch_size")
    if vision is None or any(getattr(vision, k, None) is None for k in needed):
        return None
    image, patch = _first(vision.image_size), _first(vision.patch_size)
    hidden = int(vision.hidden_size)
    if projector is None:
        layers = getattr(config, "vision_feature_layer", -1)
        width = hidden * (len(layers) if isinstance(layers, (list, tuple)) else 1)
        projector = ((width, text_hidden), (text_hidden, text_hidden))
    return VisionDims(
        num_layers=int(vision.num_hidden_layers), hidden_size=hidden, intermediate_size=int(vision.intermediate_size),
        num_heads=int(getattr(vision, "num_attention_heads", 1)),
        visual_tokens_per_crop=(image // patch) ** 2 // patches_per_visual_token,
        patches_per_visual_token=patches_per_visual_token, extra_tokens=1, projector=projector,
    )  # fmt: skip


def _first(value: Any) -> int:
    return int(value[0] if isinstance(value, (list, tuple)) else value)


_CLIP_L_336 = dict(num_layers=24, hidden_size=1024, intermediate_size=4096, num_heads=16, visual_tokens_per_crop=576)
_LLAVA_7B = dict(num_layers=32, hidden_size=4096, intermediate_size=11008, num_heads=32, vocab_size=32064)
_QWEN2_7B = dict(num_layers=28, hidden_size=3584, intermediate_size=18944, num_heads=28, num_kv_heads=4)

PRESETS: dict[str, ModelDims] = {
    "llava-1.5-7b": ModelDims(
        **_LLAVA_7B, visual_tokens=576, name="llava-1.5-7b",
        vision=VisionDims(**_CLIP_L_336, projector=((1024, 4096), (4096, 4096))),
    ),
    "llava-1.5-13b": ModelDims(
        num_layers=40, hidden_size=5120, intermediate_size=13824, num_heads=40, vocab_size=32064,
        visual_tokens=576, name="llava-1.5-13b",
        vision=VisionDims(**_CLIP_L_336, projector=((1024, 5120), (5120, 5120))),
    ),
    # AnyRes 672x672: base image + 4 tiles = 5 crops of 576 (the paper's count; newline tokens not counted).
    "llava-next-7b": ModelDims(
        **_LLAVA_7B, visual_tokens=2880, name="llava-next-7b",
        vision=VisionDims(**_CLIP_L_336, projector=((1024, 4096), (4096, 4096))),
    ),
    # Dynamic resolution: 1024 visual tokens = one 896x896 image (14 px patches, 2x2 merge).
    "qwen2-vl-7b": ModelDims(
        **_QWEN2_7B, vocab_size=152064, visual_tokens=1024, name="qwen2-vl-7b",
        vision=VisionDims(num_layers=32, hidden_size=1280, intermediate_size=5120, num_heads=16,
                          visual_tokens_per_crop=None, patches_per_visual_token=4, extra_tokens=0,
                          projector=((5120, 5120), (5120, 3584))),
    ),
    # Same LLM; window-attention ViT with a gated MLP (windows not modelled: full attention per image counted).
    "qwen2.5-vl-7b": ModelDims(
        **_QWEN2_7B, vocab_size=152064, visual_tokens=1024, name="qwen2.5-vl-7b",
        vision=VisionDims(num_layers=32, hidden_size=1280, intermediate_size=3420, num_heads=16, mlp_matrices=3,
                          visual_tokens_per_crop=None, patches_per_visual_token=4, extra_tokens=0,
                          projector=((5120, 5120), (5120, 3584))),
    ),
    # SigLIP-so400m (384 px, 27x27 patches, no [CLS]) + Qwen2-7B; default one 384 px crop (videos: tokenprune.video_cost).
    "llava-onevision-7b": ModelDims(
        **_QWEN2_7B, vocab_size=152128, visual_tokens=729, name="llava-onevision-7b",
        vision=VisionDims(num_layers=27, hidden_size=1152, intermediate_size=4304, num_heads=16,
                          visual_tokens_per_crop=729, patches_per_visual_token=1, extra_tokens=0,
                          projector=((1152, 3584), (3584, 3584))),
    ),
    # InternViT-300M (448 px tiles, pixel shuffle 0.5: 256 tokens per tile) + Qwen2.5-7B; default one tile.
    "internvl3-8b": ModelDims(
        **_QWEN2_7B, vocab_size=151674, visual_tokens=256, name="internvl3-8b",
        vision=VisionDims(num_layers=24, hidden_size=1024, intermediate_size=4096, num_heads=16,
                          visual_tokens_per_crop=256, patches_per_visual_token=4, extra_tokens=1,
                          projector=((4096, 3584), (3584, 3584))),
    ),
}  # fmt: skip
"""Known shapes. The LLM dims are the released checkpoints'; ``visual_tokens`` is a typical prompt
(LLaVA-1.5: one 336 px image; LLaVA-NeXT: 672x672 AnyRes; Qwen2-VL: one 896x896 image; InternVL3:
one 448 px tile); ``text_tokens`` defaults to 64."""


# -- FLOPs ----------------------------------------------------------------------------------
def paper_flops(dims: ModelDims, visual_per_layer: Sequence[float]) -> float:
    """Paper convention: ``sum over layers of 4nd^2 + 2n^2d + 3ndm`` over the visual tokens only."""
    return stack_flops(visual_per_layer, dims.hidden_size, dims.intermediate_size)


def full_layer_flops(dims: ModelDims, n: float, keys: float | None = None, causal: bool = False) -> float:
    """Full convention: one decoder layer running ``n`` query tokens against ``keys`` keys.

    ``keys`` defaults to ``n`` (prefill without a cache). Q/K/V/O projections with the real
    (grouped-query) widths, ``QK^T`` and ``AV`` over every head, and the MLP. ``causal=True``
    counts only the keys each query may see in a square prefill (``n(n+1)/2`` pairs).
    """
    d = dims.hidden_size
    keys = n if keys is None else keys
    projections = n * d * dims.q_dim + 2 * n * d * dims.kv_dim + n * dims.q_dim * d
    pairs = n * (n + 1) / 2 if causal and keys == n else n * keys
    attention = 2 * pairs * dims.q_dim
    mlp = dims.mlp_matrices * n * d * dims.intermediate_size
    return projections + attention + mlp


def lm_head_flops(dims: ModelDims, tokens: float) -> float:
    """The LM head over ``tokens`` positions (0 when the vocabulary size is unknown)."""
    return tokens * dims.hidden_size * (dims.vocab_size or 0)


def prefill_flops(
    dims: ModelDims,
    tokens_per_layer: Sequence[float],
    lm_head_tokens: float = 0,
    causal: bool = False,
) -> float:
    """Full convention: decoder layers where layer ``i`` runs on ``tokens_per_layer[i]`` tokens (text + visual), plus the LM head."""
    return sum(full_layer_flops(dims, n, causal=causal) for n in tokens_per_layer) + lm_head_flops(dims, lm_head_tokens)


def decode_flops(dims: ModelDims, cache_per_layer: Sequence[float], new_tokens: int, lm_head: bool = True) -> float:
    """Full convention: ``new_tokens`` greedy steps after a prefill that left ``cache_per_layer[i]`` entries in layer ``i``.

    Step ``t`` (0-based) runs one token per layer against ``cache + t + 1`` keys (its own included).
    """
    total = 0.0
    for t in range(new_tokens):
        total += sum(full_layer_flops(dims, 1, keys=c + t + 1) for c in cache_per_layer)
        if lm_head:
            total += lm_head_flops(dims, 1)
    return total


def vision_flops(dims: ModelDims, visual_tokens: int) -> float:
    """Vision encoder + projector producing ``visual_tokens`` LLM tokens (0 when ``dims.vision`` is None)."""
    vision = dims.vision
    if vision is None or visual_tokens <= 0:
        return 0.0
    h, m = vision.hidden_size, vision.intermediate_size
    per_layer = sum(
        4 * s * h * h + 2 * s * s * h + vision.mlp_matrices * s * h * m for s in vision.crops(visual_tokens)
    )
    projector = sum(visual_tokens * i * o for i, o in vision.projector)
    return vision.num_layers * per_layer + projector


# -- KV cache -------------------------------------------------------------------------------
def kv_cache_bytes(
    dims: ModelDims, cache_per_layer: Sequence[float], dtype: str | int = "bfloat16", batch: int = 1
) -> int:
    """Bytes of a KV cache whose layer ``i`` holds ``cache_per_layer[i]`` positions.

    ``sum over layers of length x 2 (K and V) x num_kv_heads x head_dim x bytes``, times ``batch``.
    ``dtype`` is a name in `DTYPE_BYTES` or a byte count.
    """
    size = dtype if isinstance(dtype, int) else _dtype_bytes(dtype)
    return int(batch * sum(cache_per_layer) * 2 * dims.kv_dim * size)


def _dtype_bytes(name: str) -> int:
    key = str(name).lower().removeprefix("torch.")
    if key not in DTYPE_BYTES:
        raise ValueError(f"Unknown dtype {name!r} for KV-cache bytes; known: {', '.join(sorted(set(DTYPE_BYTES)))}.")
    return DTYPE_BYTES[key]


# -- schedules ------------------------------------------------------------------------------
def visual_tokens_per_layer(
    schedule: Schedule | None, num_layers: int, visual_tokens: int, sample: int = 0
) -> list[int]:
    """Visual tokens layer ``i`` holds for one sample; every layer holds all of them without a schedule."""
    if schedule is None:
        return [visual_tokens] * num_layers
    if schedule.num_layers != num_layers:
        raise ValueError(f"The schedule is for {schedule.num_layers} layers, the model has {num_layers}.")
    return [row[sample] for row in schedule.tokens_per_layer()]


@dataclass(frozen=True)
class CostEstimate:
    """Dense vs. reduced cost of one prompt under one schedule (see `estimate`).

    FLOP counts are multiply-accumulates (the papers' "FLOPs"). ``*_dense`` / ``*_pruned`` pairs
    are the same quantity without and with the schedule.

    Attributes:
        dims: the model shape.
        visual_tokens: visual tokens at the input.
        text_tokens: text tokens (never removed).
        new_tokens: decode steps costed.
        layers: reduction layers of the schedule (empty: dense).
        visual_per_layer: visual tokens each layer holds with the schedule.
        paper_dense / paper_pruned: paper convention (prefill, visual tokens only).
        full_dense / full_pruned: full convention, LLM prefill (all tokens, decoder layers, LM head
            over ``lm_head_tokens``).
        vision: vision encoder + projector (the same with and without the schedule; 0 if not modelled).
        decode_dense / decode_pruned: full convention, all ``new_tokens`` decode steps.
        kv_dense / kv_pruned: KV-cache bytes after prefill (plus the new tokens).
        kv_dtype: the dtype the KV bytes assume.
        lm_head_tokens: LM-head rows counted in the dense prefill.
        causal: whether prefill attention counts only the causal half.
    """

    dims: ModelDims
    visual_tokens: int
    text_tokens: int
    new_tokens: int
    layers: tuple[int, ...]
    visual_per_layer: tuple[int, ...]
    paper_dense: float
    paper_pruned: float
    full_dense: float
    full_pruned: float
    vision: float
    decode_dense: float
    decode_pruned: float
    kv_dense: int
    kv_pruned: int
    kv_dtype: str
    lm_head_tokens: int
    causal: bool = False
    stages: tuple[dict[str, Any], ...] = field(default=(), repr=False)

    @property
    def average_visual_tokens(self) -> float:
        """Mean visual tokens per layer (the literature's "average tokens")."""
        return sum(self.visual_per_layer) / len(self.visual_per_layer)

    @property
    def paper_saving(self) -> float:
        """Share of the paper-convention (visual-token) FLOPs saved (0 to 1)."""
        return _saving(self.paper_dense, self.paper_pruned)

    @property
    def full_saving(self) -> float:
        """Share of the full-convention prefill FLOPs saved (0 to 1)."""
        return _saving(self.full_dense, self.full_pruned)

    @property
    def ideal_speedup(self) -> float:
        """FLOPs-ideal speedup of the LLM prefill (full convention)."""
        return _ratio(self.full_dense, self.full_pruned)

    @property
    def ideal_speedup_with_vision(self) -> float:
        """FLOPs-ideal speedup of the whole prefill forward: vision encoder + projector + LLM."""
        return _ratio(self.full_dense + self.vision, self.full_pruned + self.vision)

    @property
    def ideal_decode_speedup(self) -> float:
        """Dense over pruned per-token decode FLOPs: the speedup of a decode step if it were compute-bound."""
        return _ratio(self.decode_dense, self.decode_pruned)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready numbers (FLOPs in units of 1e12 as ``*_tflops``)."""
        t = 1e12
        return {
            "model": self.dims.name, "dims": self.dims.to_dict(),
            "visual_tokens": self.visual_tokens, "text_tokens": self.text_tokens, "new_tokens": self.new_tokens,
            "layers": list(self.layers), "visual_tokens_per_layer": list(self.visual_per_layer),
            "avg_visual_tokens": self.average_visual_tokens,
            "dense_tflops": self.paper_dense / t, "pruned_tflops": self.paper_pruned / t, "saving": self.paper_saving,
            "full": {
                "dense_tflops": self.full_dense / t, "pruned_tflops": self.full_pruned / t,
                "saving": self.full_saving, "ideal_speedup": self.ideal_speedup,
                "lm_head_tokens": self.lm_head_tokens, "causal": self.causal,
            },
            "vision_tflops": self.vision / t,
            "with_vision": {
                "dense_tflops": (self.full_dense + self.vision) / t, "pruned_tflops": (self.full_pruned + self.vision) / t,
                "saving": _saving(self.full_dense + self.vision, self.full_pruned + self.vision),
                "ideal_speedup": self.ideal_speedup_with_vision,
            },
            "decode": {
                "dense_tflops": self.decode_dense / t, "pruned_tflops": self.decode_pruned / t,
                "saving": _saving(self.decode_dense, self.decode_pruned), "ideal_speedup": self.ideal_decode_speedup,
            },
            "kv_cache_bytes": {"dense": self.kv_dense, "pruned": self.kv_pruned, "dtype": self.kv_dtype,
                               "saving": _saving(self.kv_dense, self.kv_pruned)},
            "stages": [dict(s) for s in self.stages],
            "units": "TFLOPs count multiply-accumulates (1e12), as the papers do",
        }  # fmt: skip


def _saving(dense: float, pruned: float) -> float:
    return 1.0 - pruned / dense if dense else 0.0


def _ratio(dense: float, pruned: float) -> float:
    return dense / pruned if pruned else math.inf


def estimate(
    dims: ModelDims,
    schedule: Schedule | None = None,
    *,
    visual_tokens: int | None = None,
    text_tokens: int | None = None,
    new_tokens: int = 0,
    kv_dtype: str = "bfloat16",
    lm_head_tokens: int = 1,
    causal: bool = False,
) -> CostEstimate:
    """Cost one prompt dense and under ``schedule`` in both conventions.

    Args:
        dims: the model shape.
        schedule: a one-sample schedule for ``dims.num_layers`` layers (``None``: dense only);
            e.g. ``get_registry().build("pyramiddrop").scheduler.plan(dims.num_layers, [576])``.
        visual_tokens: visual tokens of the prompt (default: the schedule's, else ``dims.visual_tokens``).
        text_tokens: text tokens of the prompt (default ``dims.text_tokens``).
        new_tokens: decode steps to cost (their KV entries are added to the cache bytes).
        kv_dtype: KV-cache dtype name.
        lm_head_tokens: LM-head rows in prefill (1: ``generate`` computes only the last position's
            logits; pass the sequence length for a training forward; 0 leaves the head out).
        causal: count only the causal half of the prefill attention scores.

    Example:
        ```pycon
        >>> from tokenprune.cost import ModelDims, estimate
        >>> from tokenprune.registry import get_registry
        >>> dims = ModelDims.preset("llava-1.5-7b")
        >>> plan = get_registry().build("pyramiddrop").scheduler.plan(dims.num_layers, [576])
        >>> cost = estimate(dims, plan)
        >>> round(cost.paper_dense / 1e12, 2), round(cost.paper_pruned / 1e12, 2)
        (3.82, 1.78)
        ```
    """
    if visual_tokens is None:
        visual_tokens = schedule.num_visual[0] if schedule is not None else dims.visual_tokens
    if visual_tokens is None:
        raise ValueError(f"No visual-token count: give visual_tokens (the shape {dims.name!r} has no default).")
    if schedule is not None and schedule.num_visual[0] != visual_tokens:
        raise ValueError(f"The schedule was planned for {schedule.num_visual[0]} visual tokens, not {visual_tokens}.")
    text = dims.text_tokens if text_tokens is None else text_tokens
    layers_n = dims.num_layers
    dense_visual = [visual_tokens] * layers_n
    visual = visual_tokens_per_layer(schedule, layers_n, visual_tokens)
    dense_tokens = [text + v for v in dense_visual]
    tokens = [text + v for v in visual]
    # The head runs on the positions the last layer kept (all of them in training, the last one in generate).
    dense_rows, kept_rows = min(lm_head_tokens, dense_tokens[-1]), min(lm_head_tokens, tokens[-1])
    stages = _stages(dims, visual, text, causal)
    return CostEstimate(
        dims=dims, visual_tokens=visual_tokens, text_tokens=text, new_tokens=new_tokens,
        layers=tuple(schedule.layers) if schedule is not None else (), visual_per_layer=tuple(visual),
        paper_dense=paper_flops(dims, dense_visual), paper_pruned=paper_flops(dims, visual),
        full_dense=prefill_flops(dims, dense_tokens, dense_rows, causal),
        full_pruned=prefill_flops(dims, tokens, kept_rows, causal),
        vision=vision_flops(dims, visual_tokens),
        decode_dense=decode_flops(dims, dense_tokens, new_tokens, lm_head=bool(dims.vocab_size)),
        decode_pruned=decode_flops(dims, tokens, new_tokens, lm_head=bool(dims.vocab_size)),
        kv_dense=kv_cache_bytes(dims, [n + new_tokens for n in dense_tokens], kv_dtype),
        kv_pruned=kv_cache_bytes(dims, [n + new_tokens for n in tokens], kv_dtype),
        kv_dtype=kv_dtype, lm_head_tokens=lm_head_tokens, causal=causal, stages=tuple(stages),
    )  # fmt: skip


def _stages(dims: ModelDims, visual: Sequence[int], text: int, causal: bool) -> list[dict[str, Any]]:
    """Consecutive layers with the same visual-token count, with their FLOPs in both conventions."""
    rows: list[dict[str, Any]] = []
    for i, v in enumerate(visual):
        if rows and rows[-1]["visual_tokens"] == v:
            rows[-1]["last_layer"] = i
            continue
        rows.append({"first_layer": i, "last_layer": i, "visual_tokens": v, "tokens": v + text})
    for row in rows:
        count = row["last_layer"] - row["first_layer"] + 1
        row["layers"] = count
        row["paper_tflops"] = count * layer_flops(row["visual_tokens"], dims.hidden_size, dims.intermediate_size) / 1e12
        row["full_tflops"] = count * full_layer_flops(dims, row["tokens"], causal=causal) / 1e12
    return rows
