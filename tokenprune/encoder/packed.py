"""Projector-side selection for VLMs that pack every image into one token sequence (Qwen2-VL, Qwen2.5-VL),
and for LLaVA-OneVision's videos (pooled per frame after the projector; `tokenprune.adapters.onevision_video`).

Design (see `tokenprune.adapters.base.PackedVision` for what the adapter provides):

* **Selection after the merger, per image.** The tower's blocks and its 2x2 patch merger need whole
  windows, so nothing inside the tower changes. A forward hook on the tower attaches a
  `PackedRecord` to its output (each image's merged grid, and a lazy score of the attention every
  merged token receives in the tower's last block, recomputed from that block's captured input).
  The record travels with the output through ``get_image_features`` into ``mm_encoder_outputs``,
  which is exactly how ``generate`` hands encoded images to the prefill.
* **The VLM pre-hook encodes the images itself** when it receives raw pixels (a plain forward or a
  training step), as ``generate`` does, then selects ``max(1, int(tokens * ratio))`` tokens of every
  image with the strategy's scorer and reducer (`PackedSelector.select`), passes only the kept (or
  merged) features, and removes the other placeholders from the prompt (`plan_removal`).
* **Positions stay the original ones.** The full prompt's position ids (given, as ``generate``
  passes them, or computed by the model's own M-RoPE code over the full prompt, which also sets
  ``rope_deltas`` as the stock forward does) are taken at the surviving columns, so every kept
  token keeps its (t, h, w) position and decode positions (text position + ``rope_deltas`` of the
  full prompt) stay right. The result equals the full-length model in which the dropped tokens are
  masked out as keys.
* Batches: every image is selected on its own, so a row's result never depends on the other rows;
  rows that lose different numbers of tokens are re-padded (`tokenprune.encoder.placeholders`).
* A vision side whose tokens no single tower call describes (OneVision encodes every frame as its
  own image) has no scoring block: `PackedVision.describe` reads each output's grid from its shape,
  and tokens after the grid (OneVision's newline, `PackedRecord.extra`) always stay.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from ..vision_language import ProjectorSelection
from ..errors import UnsupportedFeatureError
from ..interfaces import LayerChoice
from ..engine.hooks import HookOwner
from ..engine.selection import select
from .context import EncoderContext
from .engine import _in_backward

__all__ = ["PackedContext", "PackedRecord", "PackedSelector", "RECORD_ATTR"]

RECORD_ATTR = "_tokenprune_packed"
"""Attribute of a tower output (and so of ``mm_encoder_outputs[modality]``) holding its `PackedRecord`."""


@dataclass
class PackedRecord:
    """What one tower call tells the selection.

    Attributes:
        grids: ``(images, 3)`` ``(frames, rows, cols)`` merged-token grid of every image, in output order.
        attention: ``() -> (N,)`` attention each output token receives in the scoring block (lazy).
        features: ``(N, d)`` the tower's output; the per-image tensors ``get_image_features`` splits off
            are views of it, which identifies each image even after ``generate`` repeated them for
            beams or ``num_return_sequences``.
        extra: tokens after every image's grid that always stay (LLaVA-OneVision's newline feature
            ending each video); they are never candidates and keep their place.
    """

    grids: Tensor
    attention: Callable[[], Tensor]
    features: Tensor | None = None
    extra: int = 0

    def sizes(self) -> list[int]:
        """Tokens of every image: its grid plus the ``extra`` ones."""
        return [int(g.prod()) + self.extra for g in self.grids]

    def images_of(self, parts: list[Tensor]) -> list[int]:
        """Index of the image each per-image tensor of ``parts`` holds."""
        tokens = self.sizes()
        starts, total = {}, 0
        for i, n in enumerate(tokens):
            starts[total] = i
            total += n
        base = self.features
        found: list[int | None] = []
        for part in parts:
            index = None
            if base is not None and part.dim() == 2 and part.untyped_storage().data_ptr() == base.untyped_storage().data_ptr():
                row, rest = divmod(part.data_ptr() - base.data_ptr(), base.stride(0) * base.element_size())
                index = starts.get(row) if rest == 0 else None
            found.append(index)
        if all(i is not None for i in found):
            return found  # type: ignore[return-value]
        if len(parts) == len(tokens):
            return list(range(len(tokens)))
        raise RuntimeError(
            f"The vision output holds {len(parts)} images but the tower encoded {len(tokens)}; tokenprune cannot tell "
            "which is which. Encode the images with the wrapped model."
        )


@dataclass
class PackedContext(EncoderContext):
    """The `EncoderContext` of one image's merged tokens: no class token, no causal mask.

    ``match_features`` are the merged (projected) features themselves; ``attention_received`` is the
    attention every merged token receives in the tower's last block (VisionZip without [CLS]);
    ``grid`` is the image's ``(frames, rows, cols)``.
    """

    _received: Callable[[], Tensor] | None = field(repr=False, default=None)

    def attention_received(self, *, layer: LayerChoice = "current") -> Tensor:
        """``(1, n)`` attention each merged token receives in the tower's last block, heads and queries averaged.

        ``layer`` does not apply after the patch merger (there is one tower to read) and is ignored.
        """
        if "received" not in self._cache:
            self._cache["received"] = self._received()
        return self._cache["received"]

    def match_features(self) -> Tensor:
        """``(1, n, d)`` the merged features (what the LLM reads)."""
        return self.hidden


class PackedSelector(HookOwner):
    """Records every tower call and selects each image's tokens for a `ProjectorSelection`.

    Args:
        packed: the adapter's description of the packed vision side.
        selection: the ratio, scorer and reducer.
    """

    def __init__(self, packed: Any, selection: ProjectorSelection):
        super().__init__()
        self.packed = packed
        self.selection = selection

    def install(self) -> None:
        """Attach the capture hook (scoring block) and the record hook (tower output), where the
        vision side has a scoring block (otherwise `PackedVision.describe` reads each output's layout)."""
        if self.packed.score_block is None:
            return
        self._handles.append(self.packed.score_block.register_forward_pre_hook(self._capture, with_kwargs=True))
        self._handles.append(self.packed.tower.register_forward_hook(self._record, with_kwargs=True))

    def remove(self) -> None:
        """Detach both hooks (idempotent)."""
        self._detach_hooks()

    def _capture(self, module: nn.Module, args: tuple, kwargs: dict):
        if not _in_backward():  # a checkpointed block re-runs in backward: keep the forward's input
            self._local.block_call = (args, dict(kwargs))

    def _record(self, module: nn.Module, args: tuple, kwargs: dict, output: Any):
        call = getattr(self._local, "block_call", None)
        self._local.block_call = None
        if _in_backward() or output is None or not hasattr(output, "pooler_output"):
            return None
        grids = self.packed.grids(args, kwargs)
        kwargs = dict(kwargs)
        cached: dict[str, Tensor] = {}

        def attention() -> Tensor:
            if "a" not in cached:
                if call is None:
                    raise UnsupportedFeatureError("The vision tower's last block did not run; there is no attention to score by.")
                with torch.no_grad():
                    cached["a"] = self.packed.received_attention(call[0], call[1], args, kwargs)
            return cached["a"]

        features = output.pooler_output if isinstance(output.pooler_output, Tensor) else None
        object.__setattr__(output, RECORD_ATTR, PackedRecord(grids, attention, features))
        return None

    def kept_count(self, tokens: int, grid: tuple[int, int, int] | None = None) -> int:
        """Tokens one image of ``tokens`` (merged grid ``grid``) keeps: the selection's own rule."""
        return self.selection.kept_count(tokens, grid)

    def select(self, output: Any) -> tuple[Any, Tensor, list[int]]:
        """Reduce one modality's encoder output.

        Returns:
            ``(reduced output, keep, kept counts)``: a copy of ``output`` whose ``pooler_output``
            holds each image's kept (or merged) features; ``(N,)`` True for the kept tokens of all
            images in order; the kept count of every image.
        """
        record: PackedRecord | None = self.packed.describe(output)
        if record is None:
            raise UnsupportedFeatureError(
                "These mm_encoder_outputs were not computed by the wrapped model's vision tower, so tokenprune cannot "
                "tell each image's grid. Pass pixel_values (and the grids) instead, or encode after wrapping."
            )
        features = list(output.pooler_output)
        sizes = record.sizes()
        starts = [sum(sizes[:i]) for i in range(len(sizes))]
        images = record.images_of(features)
        if any(f.shape[0] != sizes[i] for f, i in zip(features, images)):
            raise RuntimeError(f"The tower output holds {[f.shape[0] for f in features]} tokens per image, not {sizes}.")
        reduced, keeps, counts = [], [], []
        for feature, i in zip(features, images):
            n = sizes[i] - record.extra  # the grid's tokens: the candidates
            k = self.kept_count(n, tuple(int(x) for x in record.grids[i]))
            if k >= n:
                keep = torch.ones(sizes[i], dtype=torch.bool, device=feature.device)
                reduced.append(feature)
            else:
                keep, merged = self._select_image(feature, record.grids[i], k, record, starts[i])
                reduced.append(merged)
            keeps.append(keep)
            counts.append(int(keep.sum()))
        new = copy.copy(output)
        new.pooler_output = self.packed.pack(reduced)
        object.__setattr__(new, RECORD_ATTR, None)
        return new, torch.cat(keeps), counts

    def _select_image(self, feature: Tensor, grid: Tensor, k: int, record: PackedRecord, start: int) -> tuple[Tensor, Tensor]:
        n = feature.shape[0]
        device = feature.device
        ones = torch.ones(1, n, dtype=torch.bool, device=device)
        candidates = ones.clone()
        candidates[:, n - record.extra :] = False  # the extra tokens after the grid always stay
        ctx = PackedContext(
            layer_index=-1,
            layer=self.packed.tower,
            hidden=feature.unsqueeze(0),
            positions=torch.arange(n, device=device).unsqueeze(0),
            valid=ones,
            visual=ones,
            query=torch.zeros(1, 1, dtype=torch.long, device=device),
            query_weight=torch.ones(1, 1, device=device),
            grid=tuple(int(x) for x in grid),
            num_prefix=0,
            _received=lambda: record.attention()[start : start + n].unsqueeze(0).to(device),
        )
        chosen = select(
            ctx, self.selection.scorer, self.selection.reducer, candidates, torch.tensor([k], device=device),
            protected=~candidates, expect=k + record.extra,
            miscount=lambda counts: f"The projector reducer kept {counts[0]} of an image's {n} tokens, not {k + record.extra}.",
        )  # fmt: skip
        return chosen.keep[0], chosen.features[0]
