"""LLaVA-1.5 in vLLM with projector-side selection (`TokenpruneLlavaForConditionalGeneration`).

The same steps as `tokenprune.wrap` on a transformers LLaVA (`tokenprune.encoder.vlm`):

* vLLM's CLIP tower runs up to the feature layer (it never builds the blocks after it); its output,
  class token included, is what transformers' ``hidden_states[vision_feature_layer]`` holds.
* The scores come from the block after the feature layer, as in the transformers path. vLLM does not
  load that block, so the plugin loads its norm and q/k projections from the checkpoint into a
  transformers ``CLIPEncoderLayer`` and scores with tokenprune's own encoder adapter
  (`tokenprune.adapters.hf_vision.HFVisionAdapter`), context (`EncoderContext.at_block`), scorer and
  reducer (`tokenprune.projector_selection.select_patches`): the same code, so the same tokens.
* The projector runs on the kept features only; the prompt holds that many placeholders
  (`TokenpruneLlavaProcessor`), so kept tokens get consecutive positions, as in the transformers path.

Precomputed ``image_embeds`` inputs pass through unchanged (there is no tower output to score).
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn
from vllm.config import VllmConfig
from vllm.model_executor.models.clip import CLIPVisionModel
from vllm.model_executor.models.llava import (
    LlavaDummyInputsBuilder,
    LlavaForConditionalGeneration,
    LlavaMultiModalProcessor,
    LlavaProcessingInfo,
)
from vllm.multimodal import MULTIMODAL_REGISTRY
from vllm.multimodal.parse import ImageEmbeddingItems, ImageProcessorItems
from vllm.multimodal.processing import PromptReplacement

from ...adapters.hf_vision import HFVisionAdapter
from ...encoder.context import EncoderContext
from ...errors import UnsupportedFeatureError
from ...projector_selection import kept_patch_count, select_patches
from ._processing import CHOICE_FIELD, PruningInfoMixin, PruningProcessorMixin, choice_of_item
from .config import CONFIG_KEY, decode_choice, resolve_request

__all__ = ["TokenpruneLlavaForConditionalGeneration", "TokenpruneLlavaProcessingInfo", "TokenpruneLlavaProcessor"]

RECORDS = 256
"""How many selections `tokenprune_records` keeps (for inspection and tests)."""


class TokenpruneLlavaProcessingInfo(PruningInfoMixin, LlavaProcessingInfo):
    """LLaVA processing info whose HF processor never sees the ``tokenprune`` request key."""


class TokenpruneLlavaProcessor(PruningProcessorMixin, LlavaMultiModalProcessor):
    """LLaVA prompt processing: each image gets the placeholders its strategy keeps."""

    def tokenprune_image_count(self, out) -> int:
        pixels = out.get("pixel_values")
        return 0 if pixels is None else len(pixels)

    def _get_prompt_updates(self, mm_items, hf_processor_mm_kwargs, out_mm_kwargs):
        image_token_id = self.info.get_hf_config().image_token_index

        def replacement(item_idx: int) -> list[int]:
            images = mm_items.get_items("image", (ImageEmbeddingItems, ImageProcessorItems))
            if isinstance(images, ImageEmbeddingItems):
                return [image_token_id] * images.get_feature_size(item_idx)
            size = images.get_image_size(item_idx)
            count = self.info.get_num_image_tokens(image_width=size.width, image_height=size.height)
            pruning = choice_of_item(out_mm_kwargs["image"][item_idx])
            if pruning is not None:
                count = kept_patch_count(pruning.selection, count)
            return [image_token_id] * count

        return [PromptReplacement(modality="image", target=[image_token_id], replacement=replacement)]


@MULTIMODAL_REGISTRY.register_processor(
    TokenpruneLlavaProcessor, info=TokenpruneLlavaProcessingInfo, dummy_inputs=LlavaDummyInputsBuilder
)
class TokenpruneLlavaForConditionalGeneration(LlavaForConditionalGeneration):
    """vLLM's LLaVA with tokenprune's projector-side strategies (see the module docstring).

    Attributes:
        tokenprune_records: the last selections, one dict per image (``strategy``, ``options``,
            ``kept``: kept patch indices in raster order), newest last; for inspection and tests.
    """

    def __init__(self, *, vllm_config: VllmConfig, prefix: str = "") -> None:
        super().__init__(vllm_config=vllm_config, prefix=prefix)
        config = self.config
        resolve_request(None, getattr(config, CONFIG_KEY, None))  # validate the model's default at load
        if not isinstance(self.vision_tower, CLIPVisionModel):
            raise UnsupportedFeatureError(
                f"The tokenprune vLLM plugin supports LLaVA with a CLIP tower; this checkpoint has "
                f"{type(self.vision_tower).__name__}. Serve it without the tokenprune architecture."
            )
        if config.vision_feature_select_strategy != "default" or not isinstance(config.vision_feature_layer, int):
            raise UnsupportedFeatureError(
                "The tokenprune vLLM plugin supports LLaVA-1.5's feature selection (one feature layer, class token "
                f"dropped: 'default'); this checkpoint has {config.vision_feature_select_strategy!r} on layer(s) "
                f"{config.vision_feature_layer}."
            )
        self.tokenprune_feature = len(self.vision_tower.vision_model.encoder.layers)
        if self.tokenprune_feature >= config.vision_config.num_hidden_layers:
            raise UnsupportedFeatureError(
                "Projector-side selection scores with the tower block after the feature layer, but the projector reads "
                "the last block's output."
            )
        self.tokenprune_score_block = _score_block(config.vision_config)
        self.tokenprune_records: deque[dict[str, Any]] = deque(maxlen=RECORDS)
        self._tokenprune_adapter = HFVisionAdapter()

    # -- weights ----------------------------------------------------------------------------
    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> set[str]:
        """Load vLLM's modules as usual, and the scoring block (skipped by vLLM's CLIP) into ours."""
        pattern = re.compile(rf"^(?:model\.)?vision_tower\.vision_model\.encoder\.layers\.{self.tokenprune_feature}\.(.+)$")
        block: dict[str, torch.Tensor] = {}

        def others():
            for name, tensor in weights:
                match = pattern.match(name)
                if match is None:
                    yield name, tensor
                else:
                    block[match.group(1)] = tensor

        loaded = set(super().load_weights(others()))
        wanted = dict(self.tokenprune_score_block.named_parameters())
        missing = sorted(set(wanted) - set(block))
        if missing:
            raise UnsupportedFeatureError(
                f"The checkpoint has no weights for vision block {self.tokenprune_feature} ({missing}); projector-side "
                "selection scores with that block."
            )
        with torch.no_grad():
            for name, param in wanted.items():
                param.copy_(block[name].to(param.dtype))
        return loaded | {f"tokenprune_score_block.{name}" for name in wanted}

    # -- images -----------------------------------------------------------------------------
    def embed_multimodal(self, **kwargs: object):
        codes = kwargs.pop(CHOICE_FIELD, None)
        image_input = self._parse_and_validate_image_input(**kwargs)
        if image_input is None:
            return []
        if image_input["type"] != "pixel_values" or codes is None:
            return self._process_image_input(image_input)
        choices = [decode_choice(code) for code in codes]
        if all(choice is None for choice in choices):
            return self._process_image_input(image_input)
        pixels = image_input["pixel_values"]
        if not isinstance(pixels, torch.Tensor):
            pixels = torch.stack(list(pixels))
        features = self.vision_tower(pixels, feature_select_strategy="full")  # (B, 1 + patches, d)
        embeds: list[torch.Tensor | None] = [None] * features.shape[0]
        groups: dict[int, list[int]] = {}
        for row, choice in enumerate(choices):
            groups.setdefault(id(choice), []).append(row)
        for rows in groups.values():
            choice = choices[rows[0]]
            x = features[rows]
            if choice is None:
                kept = x[:, 1:]
            else:
                index, kept = self._select(choice, x)
                for idx in index:  # slot 0 is [CLS]: patch p sits in slot p + 1
                    self.tokenprune_records.append(
                        {"strategy": choice.name, "options": choice.options, "kept": (idx[1:] - 1).tolist()}
                    )
                kept = kept[:, 1:]
            projected = self.multi_modal_projector(kept)
            for r, e in zip(rows, projected):
                embeds[r] = e
        return embeds

    def _select(self, choice, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        batch, n = x.shape[:2]
        visual = torch.ones(batch, n, dtype=torch.bool, device=x.device)
        visual[:, :1] = False
        ctx = EncoderContext.at_block(
            self._tokenprune_adapter, self.tokenprune_score_block, self.tokenprune_feature, x,
            positions=torch.arange(n, device=x.device).expand(batch, -1), valid=torch.ones_like(visual),
            visual=visual, num_prefix=1,
        )  # fmt: skip
        return select_patches(choice.selection, ctx, kept_patch_count(choice.selection, n - 1))


def _score_block(vision_config: Any) -> nn.Module:
    """A transformers CLIP block holding only what scoring reads: ``layer_norm1``, ``q_proj``, ``k_proj``."""
    from transformers.models.clip.modeling_clip import CLIPEncoderLayer

    block = CLIPEncoderLayer(vision_config)
    del block.mlp, block.layer_norm2
    del block.self_attn.v_proj, block.self_attn.out_proj
    block.requires_grad_(False)
    return block
