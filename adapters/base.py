"""The adapter contract: an adapter locates the parts of one model family the engine needs.

An adapter says *where* things are (decoder layers, visual-token ids, rotary module, how a layer
computes its queries and keys); it never says *what to do*. Dispatch is by
``model.config.model_type`` (`Adapter.matches`), never by class name in core.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from ..cost import VisionDims, tower_vision_dims
from ..engine.placement import execution_device
from ..video_layout import VideoGrid, VideoShape

__all__ = ["Adapter", "DecoderStack", "PackedVision", "VisionTower", "pad_token_id"]


@dataclass
class DecoderStack:
    """The located parts of one wrapped model.

    Attributes:
        head: the module that receives ``labels`` and computes the loss (``None`` when the user
            wrapped a headless model).
        vlm: the module whose forward receives ``input_ids`` before visual features are scattered.
        language_model: the decoder stack (a base model with ``layers``).
        layers: its decoder layers.
        rotary: the module computing ``(cos, sin)`` from position ids (for compact positions).
        text_config: the decoder's config (dims, attention implementation).
        visual_token_ids: placeholder ids whose positions hold visual features.
        embeddings: the input embedding module (to spot visual tokens in ``inputs_embeds``).
    """

    head: nn.Module | None
    vlm: nn.Module
    language_model: nn.Module
    layers: nn.ModuleList
    rotary: nn.Module | None
    text_config: Any
    visual_token_ids: tuple[int, ...]
    embeddings: nn.Module

    @property
    def num_layers(self) -> int:
        """Number of decoder layers."""
        return len(self.layers)

    @property
    def attn_implementation(self) -> str:
        """The text stack's attention backend (`"sdpa"`, `"eager"`, ...); `"eager"` when unset."""
        return str(getattr(self.text_config, "_attn_implementation", None) or "eager")


class PackedVision(ABC):
    """A vision side that packs every image of a call into one token sequence (Qwen2-VL, Qwen2.5-VL).

    Each image gives its own number of projected tokens (its merged ``(t, h, w)`` grid), the tower's
    output holds all of them in image order, and the LLM positions visual tokens by their grid
    (M-RoPE), so kept tokens keep their original positions. The adapter answers *where* and *how*
    for such a family; `tokenprune.encoder.packed` decides what to keep.

    Attributes:
        tower: the module whose output's ``pooler_output`` holds every image's projected tokens.
        score_block: the tower block whose attention scorers read (its input is captured), or
            ``None`` for a vision side whose tokens no single tower call describes (LLaVA-OneVision's
            videos: frames are encoded as separate images and pooled after the projector); such a
            family reads each output's layout from its shape in `describe`, and no tower hook runs.
        modalities: ``{"image": placeholder id, "video": placeholder id}``; the keys are those of
            the VLM's ``mm_encoder_outputs`` that the selection reduces (other modalities pass whole).
    """

    tower: nn.Module
    score_block: nn.Module | None
    modalities: dict[str, int]

    def describe(self, output: Any) -> Any:
        """The `tokenprune.encoder.packed.PackedRecord` of one modality's encoder output, or ``None``.

        The default reads the record the tower hook attached to the output (grids from the tower
        call); a family with ``score_block = None`` builds it from the output itself.
        """
        from ..encoder.packed import RECORD_ATTR

        return getattr(output, RECORD_ATTR, None)

    def pack(self, features: list[Tensor]) -> Any:
        """The ``pooler_output`` the VLM reads, from each image's kept features (default: a tuple, one per image)."""
        return tuple(features)

    def check_selection(self, selection: Any) -> None:
        """Raise a clear error, at wrap time, for a ``ProjectorSelection`` this vision side cannot run."""

    def encoder_refusal(self, model_name: str) -> str:
        """Why reduction between the tower's blocks is not available, and what to use instead."""
        return (
            f"Reduction inside the vision tower of {model_name} is not supported: its packed visual tokens are only "
            "final after the tower. Reduce at the projector instead (VisionLanguageStrategy(projector=...))."
        )

    @abstractmethod
    def grids(self, args: tuple, kwargs: dict[str, Any]) -> Tensor:
        """``(images, 3)`` ``(frames, rows, cols)`` projected-token grid of every image of one tower call."""

    @abstractmethod
    def received_attention(self, block_args: tuple, block_kwargs: dict[str, Any], tower_args: tuple, tower_kwargs: dict[str, Any]) -> Tensor:
        """``(N,)`` attention each projected token receives in ``score_block``, in the tower output's order.

        Computed from the block's own norm, q/k projection and rotary embedding on its captured
        input (``block_args``/``block_kwargs``); softmax in at least float32 within the block's own
        attention segments, mean over heads and queries, then over the patches the token merges.
        """

    @abstractmethod
    def encode(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        """The VLM call's kwargs with raw pixel inputs replaced by ``mm_encoder_outputs`` (as ``generate`` does)."""

    @abstractmethod
    def prompt_positions(self, kwargs: dict[str, Any]) -> Tensor:
        """Position ids of the whole prompt of a prefill call, exactly as the model would compute them."""

    @abstractmethod
    def decode_positions(self, text_positions: Tensor) -> Tensor:
        """Position ids of decode tokens from their ``(B, n)`` 1-D positions in the original prompt."""


@dataclass
class VisionTower:
    """Where a VLM's vision tower hands its features to the projector (encoder-side reduction).

    Attributes:
        tower: the vision encoder module (wrapped by an encoder adapter).
        feature_layer: index into the tower's ``hidden_states`` the projector reads (non-negative;
            ``hidden_states[f]`` is the output of block ``f - 1``).
        strip_prefix: the VLM drops the tower's prefix tokens before the projector (LLaVA "default").
        image_token_id: the placeholder id of one image feature in ``input_ids``.
        patches_per_image: patch tokens the tower makes of one image (prefix tokens not counted).
        pad_token_id: id written into slots that only pad a shortened row.
        projector: see below.
    """

    tower: nn.Module
    feature_layer: int
    strip_prefix: bool
    image_token_id: int
    patches_per_image: int
    pad_token_id: int
    projector: nn.Module | None = None
    """Set for families whose features can only be reduced after the projector (their tower output
    feeds a reshape that needs the full grid, e.g. InternVL's pixel shuffle): projector-side
    selection then runs on the projector's output, ``patches_per_image`` counts projected tokens
    per tile, and reduction inside the tower is not available."""
    packed: PackedVision | None = None
    """Set for families whose images give different numbers of tokens, packed into one sequence
    (Qwen-VL): projector-side selection runs per image on the tower's output, kept tokens keep their
    original positions, and ``patches_per_image`` is not used."""


def pad_token_id(model: nn.Module) -> int:
    """The id that pads a row shortened by encoder-side reduction: the generation config's pad token,
    else the text config's, else 0 (the slot is masked either way)."""
    pad = getattr(getattr(model, "generation_config", None), "pad_token_id", None)
    if pad is None:
        pad = getattr(model.config.text_config, "pad_token_id", None)
    return int(pad) if pad is not None else 0


class Adapter(ABC):
    """Locates the decoder stack of one model family and computes a layer's attention rows."""

    name: ClassVar[str]
    """Registry name, e.g. ``"llava"``."""
    model_types: ClassVar[tuple[str, ...]]
    """``config.model_type`` values this adapter handles."""
    supports_compact_positions: ClassVar[bool] = True
    """Whether ``positions="compact"`` is defined (1-D RoPE only)."""
    preset_types: ClassVar[dict[str, str]] = {}
    """Cost-model preset name prefixes of this family -> the ``model_type`` whose default transformers
    config describes them (for layouts the presets do not spell out, e.g. `video_grid`)."""

    def matches(self, model: object) -> bool:
        """True when this adapter handles ``model`` (by ``config.model_type``, `handles_config`)."""
        return self.handles_config(getattr(model, "config", None))

    def handles_config(self, config: object) -> bool:
        """True when this adapter handles models of ``config`` (its ``model_type`` is in `model_types`)."""
        return getattr(config, "model_type", None) in self.model_types

    def vision_dims(self, config: Any, text_hidden: int) -> VisionDims | None:
        """The vision encoder and projector of a model of ``config``, for the cost model (`tokenprune.cost`).

        The default reads a CLIP/SigLIP-style tower run once per crop with LLaVA's projector
        (`tokenprune.cost.tower_vision_dims`); families with another vision side override this.
        ``None``: not modelled (the costs then leave the vision side out).
        """
        return tower_vision_dims(config, text_hidden)

    def video_grid(self, config: Any, shape: VideoShape) -> VideoGrid | None:
        """The token grid a model of ``config`` makes of a video of ``shape`` (for the cost model).

        ``None`` (the default): the family takes no video. Families with a video path override this,
        reading patch sizes and merge factors from ``config``, so a checkpoint is costed as it runs.
        """
        return None

    def check(self, model: nn.Module) -> None:
        """Raise a clear error for a model of this family that the adapter cannot handle."""

    def min_reduction_layer(self, model: nn.Module) -> tuple[int, str]:
        """The earliest layer that may see fewer tokens, and why (for the error message).

        Layer 0 never shrinks (transformers reads positions and mask sizes from cache layer 0);
        a family that injects visual features into its first layers raises this bound.
        """
        return 1, "layer 0 always sees every token"

    def vision_tower(self, model: nn.Module) -> VisionTower:
        """Where the vision tower of ``model`` feeds the projector, for encoder-side reduction.

        Raises:
            UnsupportedFeatureError: the family does not support encoder-side reduction (yet).
        """
        from ..errors import UnsupportedFeatureError

        raise UnsupportedFeatureError(
            f"Encoder-side reduction inside {type(model).__name__} is not supported yet (its placeholder layout "
            "depends on the image). Use LLM-side reduction only (e.g. tokenprune.wrap(model, 'pyramiddrop'))."
        )

    @abstractmethod
    def locate(self, model: nn.Module) -> DecoderStack:
        """Find the parts of ``model`` the engine needs."""

    reads_cached_keys: ClassVar[bool] = False
    """Whether `query_attention` and `layer_keys` accept ``keys=``: the layer's post-rotary keys
    ``(B, H_kv, n, head_dim)`` as its attention cached them in this prefill, used instead of computing them."""

    @abstractmethod
    def query_attention(
        self,
        layer: nn.Module,
        hidden: Tensor,
        position_embeddings: tuple[Tensor, Tensor],
        query: Tensor | None,
        allowed: Tensor | None,
    ) -> Tensor:
        """Head-mean attention probabilities of the query rows, as ``layer`` would compute them.

        Args:
            layer: the decoder layer.
            hidden: ``(B, n, d)`` the layer's input.
            position_embeddings: ``(cos, sin)``, each ``(B, n, head_dim)``.
            query: ``(B, Q)`` slot indices of the query rows, or ``None``: one row, the last slot of every
                sample (the engine knows this on the host at inference without padding; a slice, no gather).
            allowed: ``(B, Q, n)`` which keys each query row may see; ``None`` when every row sees every
                key (the engine knows this on the host: one query, the last slot, no padding), so
                nothing needs masking.

        Returns:
            ``(B, Q, n)`` probabilities (rows sum to 1 over allowed keys).
        """

    def layer_keys(self, layer: nn.Module, hidden: Tensor, position_embeddings: tuple[Tensor, Tensor]) -> Tensor:
        """``(B, n, H * head_dim)`` post-rotary keys of every slot, as ``layer`` computes them.

        KV heads are repeated to the query heads (grouped-query attention), so every family gives one
        vector per token of the same layout. Optional: scorers that read keys (e.g. DART's pivots)
        need it; an adapter without it makes them raise this error.
        """
        raise NotImplementedError(
            f"Adapter {self.name!r} does not compute attention keys; scorers that read keys (ScoreContext.keys) "
            "need an adapter that implements layer_keys."
        )

    def has_visual_inputs(self, kwargs: dict[str, Any]) -> bool:
        """Whether a forward call carries images or videos.

        Either raw ``pixel_values*`` arguments, or ``mm_encoder_outputs``: transformers 5.x
        ``generate`` encodes the images once and passes the encoder outputs to the prefill.
        """
        if any(key.startswith("pixel_values") and value is not None for key, value in kwargs.items()):
            return True
        encoded = kwargs.get("mm_encoder_outputs")
        return bool(encoded) and any(value is not None for value in encoded.values())

    def visual_mask(self, stack: DecoderStack, input_ids: Tensor | None, inputs_embeds: Tensor | None) -> Tensor:
        """``(B, L)`` True at visual placeholder positions.

        With ``inputs_embeds`` only, placeholders are recognised by their embedding, as transformers
        itself does; this must run before the VLM scatters visual features into them.
        """
        if input_ids is not None:
            if len(stack.visual_token_ids) == 1:  # the common case: one comparison kernel
                return input_ids == stack.visual_token_ids[0]
            ids = torch.tensor(stack.visual_token_ids, device=input_ids.device)
            return torch.isin(input_ids, ids)
        if inputs_embeds is None:
            raise ValueError("The model was called with neither input_ids nor inputs_embeds.")
        mask = torch.zeros(inputs_embeds.shape[:2], dtype=torch.bool, device=inputs_embeds.device)
        device = execution_device(stack.embeddings)  # called, not indexed: offloaded weights load in the call
        for token in stack.visual_token_ids:
            with torch.no_grad():
                emb = stack.embeddings(torch.tensor([token], device=device))[0]
            mask |= (inputs_embeds == emb.to(device=inputs_embeds.device, dtype=inputs_embeds.dtype)).all(-1)
        return mask
