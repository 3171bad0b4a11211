"""Qwen2-VL and Qwen2.5-VL in vLLM with projector-side selection (kept tokens keep their M-RoPE positions).

The same steps as `tokenprune.wrap` on the transformers model (`tokenprune.encoder.packed`):

* the tower and its 2x2 patch merger run whole; a forward hook on the last block's ``norm1`` (of this
  model instance) keeps that norm's output, from which the attention each merged token receives is
  recomputed with the block's own q/k projection and rotary embedding (`received_attention`:
  the computation `tokenprune.adapters.qwen_vl.QwenPackedVision.received_attention` does on
  transformers' modules);
* every image is then selected on its own by `tokenprune.projector_selection.select_packed`, which
  runs `PackedSelector.select`, the transformers path's own selection code;
* positions: `tokenprune.integrations.vllm.positions`.

Videos and precomputed embeddings pass through unchanged (dense).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from functools import partial
from typing import Any

import torch
from vllm.config import VllmConfig
from vllm.model_executor.models.qwen2_5_vl import (
    Qwen2_5_VLDummyInputsBuilder,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2_5_VLMultiModalProcessor,
    Qwen2_5_VLProcessingInfo,
)
from vllm.model_executor.models.qwen2_vl import (
    Qwen2VLDummyInputsBuilder,
    Qwen2VLForConditionalGeneration,
    Qwen2VLMultiModalProcessor,
    Qwen2VLProcessingInfo,
)
from vllm.multimodal import MULTIMODAL_REGISTRY
from vllm.multimodal.processing import PromptReplacement

from ...errors import UnsupportedFeatureError
from ...projector_selection import kept_packed_count, select_packed
from ._processing import CHOICE_FIELD, PruningInfoMixin, PruningProcessorMixin, choice_of_item
from .config import CONFIG_KEY, decode_choice, resolve_request
from .positions import attach_offsets, detach_offsets, grid_offsets, mrope_positions

__all__ = [
    "TokenpruneQwen2VLForConditionalGeneration",
    "TokenpruneQwen2_5_VLForConditionalGeneration",
    "received_attention",
]

RECORDS = 256
"""How many selections `tokenprune_records` keeps (for inspection and tests)."""


def received_attention(
    block: torch.nn.Module, normed: torch.Tensor, cu_seqlens: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, merge_unit: int
) -> torch.Tensor:
    """``(N / merge_unit,)`` attention each merged token receives in ``block`` (heads and queries averaged).

    Args:
        block: the tower's last block (its ``attn.qkv`` projection and rotary embedding are used).
        normed: ``(S, 1, d)`` the block's ``norm1`` output (captured by a forward hook).
        cu_seqlens: segment bounds the block attends within (each image or frame; Qwen2.5-VL's
            window segments for a windowed block).
        cos, sin: the rotary tables the block gets.

    Softmax in float32 over each segment, as `QwenPackedVision.received_attention` computes it on
    transformers' blocks.
    """
    attn = block.attn
    if getattr(attn, "tp_size", 1) > 1:
        raise UnsupportedFeatureError("tokenprune's vLLM plugin scores on one tensor-parallel rank; use tensor_parallel_size=1.")
    heads, head_dim = attn.num_attention_heads_per_partition, attn.hidden_size_per_attention_head
    qkv, _ = attn.qkv(normed)
    n = qkv.shape[0]
    qkv = qkv.view(n, 3, heads, head_dim)
    qk = torch.stack([qkv[:, 0], qkv[:, 1]]).contiguous()  # (2, S, H, hd): vLLM's "(2 b) s h d"
    qk = attn.apply_rotary_emb(qk, cos, sin)
    dtype = torch.promote_types(qk.dtype, torch.float32)
    q, k = qk[0].to(dtype), qk[1].to(dtype)
    scale = head_dim**-0.5
    received = torch.empty(n, dtype=dtype, device=normed.device)
    bounds = [int(b) for b in cu_seqlens.tolist()]
    for start, end in zip(bounds[:-1], bounds[1:]):
        if end <= start:
            continue
        qs, ks = q[start:end].transpose(0, 1), k[start:end].transpose(0, 1)  # (H, m, hd)
        probs = torch.softmax(qs @ ks.transpose(-1, -2) * scale, dim=-1)
        received[start:end] = probs.mean(dim=(0, 1))
    return received.view(-1, merge_unit).mean(-1)


# -- prompt processing ---------------------------------------------------------------------------
def _prompt_updates(processor, mm_items, hf_processor_mm_kwargs, out_mm_kwargs):
    """Qwen's image/video replacements, each pruned image shortened to the count its strategy keeps."""
    kwargs = {k: v for k, v in hf_processor_mm_kwargs.items() if k != "tokenprune"}
    hf_processor = processor.info.get_hf_processor(**kwargs)
    image_processor = processor.info.get_image_processor(**kwargs)
    vocab = processor.info.get_tokenizer().get_vocab()
    placeholder = {"image": vocab[hf_processor.image_token], "video": vocab[hf_processor.video_token]}
    merge_length = image_processor.merge_size**2

    def replacement(item_idx: int, modality: str) -> list[int]:
        item = out_mm_kwargs[modality][item_idx]
        count = int(item[f"{modality}_grid_thw"].data.prod()) // merge_length
        if modality == "image":
            pruning = choice_of_item(item)
            if pruning is not None:
                count = kept_packed_count(pruning.selection, count)
        return [placeholder[modality]] * count

    return [
        PromptReplacement(modality=m, target=[placeholder[m]], replacement=partial(replacement, modality=m))
        for m in ("image", "video")
    ]


class _QwenPruningProcessor(PruningProcessorMixin):
    def tokenprune_image_count(self, out: Mapping[str, Any]) -> int:
        grid = out.get("image_grid_thw")
        return 0 if grid is None else len(grid)

    def _get_prompt_updates(self, mm_items, hf_processor_mm_kwargs, out_mm_kwargs):
        if self.info.ctx.get_mm_config().is_multimodal_pruning_enabled():
            raise UnsupportedFeatureError("tokenprune's vLLM plugin and vLLM's video pruning (EVS) cannot run together.")
        return _prompt_updates(self, mm_items, hf_processor_mm_kwargs, out_mm_kwargs)


class TokenpruneQwen2VLProcessingInfo(PruningInfoMixin, Qwen2VLProcessingInfo):
    """Qwen2-VL processing info whose HF processor never sees the ``tokenprune`` request key."""


class TokenpruneQwen2VLProcessor(_QwenPruningProcessor, Qwen2VLMultiModalProcessor):
    """Qwen2-VL prompt processing: each image gets the placeholders its strategy keeps."""


class TokenpruneQwen2_5_VLProcessingInfo(PruningInfoMixin, Qwen2_5_VLProcessingInfo):
    """Qwen2.5-VL processing info whose HF processor never sees the ``tokenprune`` request key."""


class TokenpruneQwen2_5_VLProcessor(_QwenPruningProcessor, Qwen2_5_VLMultiModalProcessor):
    """Qwen2.5-VL prompt processing: each image gets the placeholders its strategy keeps."""


# -- the model -----------------------------------------------------------------------------------
class _QwenPruningModel:
    """What both Qwen families add to vLLM's model class (mixed in before it)."""

    supports_encoder_cudagraph = False  # the selection runs in Python between the tower and the LLM

    def _tokenprune_init(self) -> None:
        resolve_request(None, getattr(self.config, CONFIG_KEY, None))  # validate the model's default at load
        self.tokenprune_records: deque[dict[str, Any]] = deque(maxlen=RECORDS)
        self._tokenprune_normed: torch.Tensor | None = None
        self._tokenprune_offsets: torch.Tensor | None = None
        # vLLM calls its vision blocks' forward directly (support_torch_compile's __call__), so block hooks
        # never fire; the last block's norm1 is a plain module whose output is what scoring needs
        self.visual.blocks[-1].norm1.register_forward_hook(self._tokenprune_capture)

    def _tokenprune_capture(self, module, args, output):
        self._tokenprune_normed = output

    # positions -----------------------------------------------------------------------------
    def get_mrope_input_positions(self, input_tokens, mm_features):
        items = []
        ordered = sorted(mm_features, key=lambda f: f.mm_position.offset)
        for feature, (offset, t, h, w, t_factor) in zip(ordered, self.iter_mm_grid_thw(mm_features)):
            kept = t * h * w
            if feature.modality == "image":
                pruning = choice_of_item(feature.data)
                if pruning is not None:
                    kept = kept_packed_count(pruning.selection, kept)
            items.append((offset, t, h, w, t_factor, kept))
        return mrope_positions(len(input_tokens), items)

    def embed_input_ids(self, input_ids, multimodal_embeddings=None, *, is_multimodal=None):
        self._tokenprune_offsets = None
        if not multimodal_embeddings:
            return super().embed_input_ids(input_ids, multimodal_embeddings, is_multimodal=is_multimodal)
        features, offsets = zip(*(detach_offsets(e) for e in multimodal_embeddings))
        rows = torch.cat(offsets).to(input_ids.device)
        if bool(rows.any()):
            full = torch.zeros(3, input_ids.shape[0], dtype=torch.long, device=input_ids.device)
            full[:, is_multimodal.to(input_ids.device)] = rows.T
            self._tokenprune_offsets = full
        return super().embed_input_ids(input_ids, list(features), is_multimodal=is_multimodal)

    def forward(self, input_ids, positions, intermediate_tensors=None, inputs_embeds=None, **kwargs):
        offsets, self._tokenprune_offsets = self._tokenprune_offsets, None
        if offsets is not None and positions.dim() == 2 and offsets.shape[1] <= positions.shape[1]:
            positions = positions.clone()
            positions[:, : offsets.shape[1]] += offsets.to(positions.device)
        return super().forward(input_ids, positions, intermediate_tensors, inputs_embeds, **kwargs)

    # images --------------------------------------------------------------------------------
    def embed_multimodal(self, **kwargs: object):
        codes = kwargs.pop(CHOICE_FIELD, None)
        modalities = self._parse_and_validate_multimodal_inputs(**kwargs)
        if not modalities:
            return []
        out: tuple[torch.Tensor, ...] = ()
        for modality, data in modalities.items():
            if modality in ("image", "images"):  # Qwen2.5-VL / Qwen2-VL name them differently
                out += tuple(self._tokenprune_images(data, codes))
            elif modality in ("video", "videos"):
                out += tuple(attach_offsets(e, None) for e in self._process_video_input(data))
        return out

    def _tokenprune_images(self, image_input, codes) -> list[torch.Tensor]:
        grid_thw = image_input["image_grid_thw"]
        choices = [None] * len(grid_thw) if codes is None else [decode_choice(c) for c in codes]
        if image_input["type"] != "pixel_values" or all(c is None for c in choices):
            return [attach_offsets(e, None) for e in self._process_image_input(image_input)]
        if self.use_data_parallel:
            raise UnsupportedFeatureError("tokenprune's vLLM plugin does not support mm_encoder_tp_mode='data' yet.")
        merge = self.visual.spatial_merge_size
        grids = [[int(v) for v in g] for g in grid_thw.tolist()]
        meta = self.visual.prepare_encoder_metadata(grids)
        self._tokenprune_normed = None
        embeds = self.visual(image_input["pixel_values"], grid_thw=grids, encoder_metadata=meta)
        normed, self._tokenprune_normed = self._tokenprune_normed, None
        sizes = [t * h * w // merge // merge for t, h, w in grids]
        per_image = list(embeds.split(sizes))
        merged_grids = torch.tensor([[t, h // merge, w // merge] for t, h, w in grids])
        cache: dict[str, torch.Tensor] = {}

        def received() -> torch.Tensor:
            if "r" not in cache:
                if normed is None:
                    raise UnsupportedFeatureError("The vision tower's last block did not run; there is no attention to score by.")
                last = len(self.visual.blocks) - 1
                windowed = last not in getattr(self.visual, "fullatt_block_indexes", [last])
                cu_seqlens = meta["cu_window_seqlens" if windowed else "cu_seqlens"]
                with torch.no_grad():
                    scores = received_attention(
                        self.visual.blocks[-1], normed, cu_seqlens, meta["rotary_pos_emb_cos"], meta["rotary_pos_emb_sin"],
                        merge * merge,
                    )  # fmt: skip
                reverse = meta.get("reverse_indices")  # Qwen2.5-VL runs its blocks in window order
                cache["r"] = scores[reverse.to(scores.device)] if reverse is not None else scores
            return cache["r"]

        starts = [sum(sizes[:i]) for i in range(len(sizes))]
        result: list[torch.Tensor | None] = [None] * len(grids)
        groups: dict[int, list[int]] = {}
        for i, choice in enumerate(choices):
            groups.setdefault(id(choice), []).append(i)
        for members in groups.values():
            choice = choices[members[0]]
            if choice is None:
                for i in members:
                    result[i] = attach_offsets(per_image[i], None)
                continue
            spans = [(starts[i], starts[i] + sizes[i]) for i in members]
            kept, index = select_packed(
                choice.selection, [per_image[i] for i in members], merged_grids[members],
                lambda spans=spans: torch.cat([received()[a:b] for a, b in spans]), tower=self.visual,
            )  # fmt: skip
            for i, features, idx in zip(members, kept, index):
                self.tokenprune_records.append({"strategy": choice.name, "options": choice.options, "kept": idx.tolist()})
                offsets = grid_offsets(idx, merged_grids[i].tolist()) if features.shape[0] < sizes[i] else None
                result[i] = attach_offsets(features, offsets)
        return result  # type: ignore[return-value]


@MULTIMODAL_REGISTRY.register_processor(
    TokenpruneQwen2VLProcessor, info=TokenpruneQwen2VLProcessingInfo, dummy_inputs=Qwen2VLDummyInputsBuilder
)
class TokenpruneQwen2VLForConditionalGeneration(_QwenPruningModel, Qwen2VLForConditionalGeneration):
    """vLLM's Qwen2-VL with tokenprune's projector-side strategies (see the module docstring)."""

    def __init__(self, *, vllm_config: VllmConfig, prefix: str = "") -> None:
        super().__init__(vllm_config=vllm_config, prefix=prefix)
        self._tokenprune_init()


@MULTIMODAL_REGISTRY.register_processor(
    TokenpruneQwen2_5_VLProcessor, info=TokenpruneQwen2_5_VLProcessingInfo, dummy_inputs=Qwen2_5_VLDummyInputsBuilder
)
class TokenpruneQwen2_5_VLForConditionalGeneration(_QwenPruningModel, Qwen2_5_VLForConditionalGeneration):
    """vLLM's Qwen2.5-VL with tokenprune's projector-side strategies (see the module docstring)."""

    def __init__(self, *, vllm_config: VllmConfig, prefix: str = "") -> None:
        super().__init__(vllm_config=vllm_config, prefix=prefix)
        self._tokenprune_init()
