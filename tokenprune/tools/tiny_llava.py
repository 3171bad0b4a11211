"""Random-weight stock LLaVA-1.5 models built from config objects: the one builder of the tools.

The demo (`tokenprune.tools.demo`), the benchmark (`tokenprune.tools.bench`) and the tiny VQA
model (`tokenprune.tools.vqa.model`) all need a `LlavaForConditionalGeneration` of a chosen shape
without a model hub: a CLIP vision tower, LLaVA's 2-layer MLP projector and a Llama decoder. They
differ only in widths, image geometry, token ids and initialisation, which are the arguments here,
so a fix to how the tools build a LLaVA (a transformers config change, say) is made once.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["LlavaDims", "llava_config", "build_llava", "redraw_weights"]


@dataclass(frozen=True)
class LlavaDims:
    """Depth and widths of a LLaVA-1.5-layout model, and its image geometry.

    ``(image_size // patch_size) ** 2`` patches per image become that many visual tokens (the CLS
    feature is dropped, LLaVA's ``"default"`` feature selection).
    """

    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    vocab: int
    vision_layers: int
    vision_hidden: int
    vision_intermediate: int
    vision_heads: int
    image_size: int = 336
    patch_size: int = 14

    @property
    def patches(self) -> int:
        """Visual tokens per image."""
        return (self.image_size // self.patch_size) ** 2


def llava_config(
    dims: LlavaDims,
    *,
    image_token_id: int,
    max_positions: int,
    pad_id: int = 0,
    bos_id: int = 1,
    eos_id: int = 2,
    tie_word_embeddings: bool = False,
):
    """A `LlavaConfig` of ``dims``: CLIP tower (projection width = tower width), Llama decoder.

    The projector reads the penultimate tower layer (LLaVA-1.5's ``vision_feature_layer=-2``,
    transformers' default), so projector-side strategies score with the last tower block.
    ``image_token_id`` must lie inside the vocabulary; the attention implementation is left to
    the caller (`build_llava` uses SDPA).
    """
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig

    vision = CLIPVisionConfig(
        hidden_size=dims.vision_hidden, intermediate_size=dims.vision_intermediate,
        num_hidden_layers=dims.vision_layers, num_attention_heads=dims.vision_heads,
        image_size=dims.image_size, patch_size=dims.patch_size, projection_dim=dims.vision_hidden,
    )  # fmt: skip
    text = LlamaConfig(
        vocab_size=dims.vocab, hidden_size=dims.hidden, intermediate_size=dims.intermediate,
        num_hidden_layers=dims.layers, num_attention_heads=dims.heads, num_key_value_heads=dims.kv_heads,
        max_position_embeddings=max_positions, pad_token_id=pad_id, bos_token_id=bos_id, eos_token_id=eos_id,
        tie_word_embeddings=tie_word_embeddings,
    )  # fmt: skip
    config = LlavaConfig(
        vision_config=vision, text_config=text, image_token_index=image_token_id, image_seq_length=dims.patches,
        vision_feature_layer=-2, vision_feature_select_strategy="default",
    )  # fmt: skip
    if tie_word_embeddings:
        config.tie_word_embeddings = True
    return config


def build_llava(
    config, seed: int = 0, device: str = "cpu", dtype: torch.dtype = torch.float32, init_std: float | None = None
) -> nn.Module:
    """A random-weight `LlavaForConditionalGeneration` of ``config``, built on ``device`` in ``dtype``, in eval mode.

    SDPA attention; ``generate`` gets the text config's pad/BOS/EOS ids. ``init_std`` redraws the
    weights with `redraw_weights` (peaky attention, so scores are meaningful); ``None`` keeps
    transformers' own init. ``device="meta"`` builds the structure only (no memory, no init).
    """
    from transformers import LlavaForConditionalGeneration

    config._attn_implementation = "sdpa"  # the setter reaches the text and vision sub-configs
    torch.manual_seed(seed)
    with torch.device(device):
        model = LlavaForConditionalGeneration._from_config(config, dtype=dtype)
    if init_std is not None:
        redraw_weights(model, seed, init_std)
    model.eval()
    text = config.text_config
    gen = model.generation_config
    gen.pad_token_id, gen.bos_token_id, gen.eos_token_id = text.pad_token_id, text.bos_token_id, text.eos_token_id
    return model


@torch.no_grad()
def redraw_weights(model: nn.Module, seed: int, std: float) -> None:
    """Redraw every non-norm parameter from N(0, std), seeded (norms keep their identity init).

    HF's default init (std 0.02) makes attention nearly uniform, so every token would score the
    same and a pruning choice would be arbitrary; a large std gives peaky, meaningful scores.
    """
    gen = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.LayerNorm) or type(module).__name__.endswith("RMSNorm"):
            continue
        for param in module.parameters(recurse=False):
            param.copy_(torch.randn(param.shape, generator=gen, dtype=torch.float32) * std)
