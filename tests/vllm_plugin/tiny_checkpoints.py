"""Tiny LLaVA-1.5, Qwen2-VL and Qwen2.5-VL checkpoints that both transformers and vLLM load offline.

Run inside the vLLM venv (its transformers writes the files). Each checkpoint is a random model
(seeded, init wide enough that attention is not uniform) with a WordLevel tokenizer and the
family's own processor, saved with ``save_pretrained``:

* LLaVA-1.5: CLIP tower 112 px / patch 14 (64 patches + [CLS]), 3 blocks, feature layer -2, so
  the block after the feature layer exists (projector-side scoring needs it); 2-layer Llama.
* Qwen2-VL / Qwen2.5-VL: 2-block tower, patch 14, 2x2 merger (a 224 x 224 image is 8 x 8 = 64
  tokens; images between 56 and 224 px keep their aspect), 2-layer Qwen2 text stack with
  M-RoPE sections [8, 12, 12].

Words are ``w5`` ... ``w63``; ``<image>`` (LLaVA) or ``<|vision_start|><|image_pad|><|vision_end|>``
(Qwen) mark an image.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

VOCAB = 64
SEED = 0
STD = 0.2
CHAT_TEMPLATE = (
    "{% for message in messages %}{% for part in message['content'] %}"
    "{% if part['type'] == 'text' %}{{ part['text'] }} {% else %}IMAGE {% endif %}"
    "{% endfor %}{% endfor %}"
)
"""Renders a chat as its words and each image as the family's image marker (``IMAGE`` is replaced)."""
QWEN_SPECIAL = {"<|vision_start|>": 5, "<|vision_end|>": 6, "<|image_pad|>": 7, "<|video_pad|>": 8}


def _tokenizer(special: dict[str, int], extra: dict[str, str]) -> PreTrainedTokenizerFast:
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, "<pad>": 3, **special}
    taken = set(vocab.values())
    vocab.update({f"w{i}": i for i in range(VOCAB) if i not in taken})
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>",
        extra_special_tokens=extra,
    )  # fmt: skip
    tok.add_special_tokens({"additional_special_tokens": list(special)})
    return tok


def _reinit(model: torch.nn.Module) -> None:
    gen = torch.Generator().manual_seed(SEED)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name and name.endswith("weight"):
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(STD * torch.randn(p.shape, generator=gen))


def _rename_llava_tower(path: Path) -> None:
    """vLLM's LLaVA loader wants ``vision_tower.vision_model.*`` (some transformers versions write
    ``vision_tower.*`` without it)."""
    file = path / "model.safetensors"
    state = load_file(str(file))
    renamed = {}
    for key, value in state.items():
        for head in ("model.vision_tower.", "vision_tower."):
            if key.startswith(head) and not key.startswith(head + "vision_model."):
                key = head + "vision_model." + key[len(head):]
                break
        renamed[key] = value
    save_file(renamed, str(file), metadata={"format": "pt"})


def build_llava(path: Path, *, image_size: int = 112, vision: tuple[int, int, int] = (64, 3, 4),
                text: tuple[int, int, int] = (128, 2, 4), max_positions: int = 512) -> Path:
    """LLaVA-1.5 layout; ``vision`` and ``text`` are ``(hidden, layers, heads)`` (the benchmark uses larger ones)."""
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    (v_hidden, v_layers, v_heads), (t_hidden, t_layers, t_heads) = vision, text
    patches = (image_size // 14) ** 2
    vision_config = CLIPVisionConfig(hidden_size=v_hidden, intermediate_size=2 * v_hidden, num_hidden_layers=v_layers,
                                     num_attention_heads=v_heads, image_size=image_size, patch_size=14, projection_dim=v_hidden)  # fmt: skip
    text_config = LlamaConfig(hidden_size=t_hidden, intermediate_size=2 * t_hidden, num_hidden_layers=t_layers,
                              num_attention_heads=t_heads, num_key_value_heads=max(1, t_heads // 2), vocab_size=VOCAB,
                              max_position_embeddings=max_positions, bos_token_id=1, eos_token_id=2, pad_token_id=3)  # fmt: skip
    config = LlavaConfig(vision_config=vision_config.to_dict(), text_config=text_config.to_dict(), image_token_index=4,
                         vision_feature_layer=-2, vision_feature_select_strategy="default", image_seq_length=patches)  # fmt: skip
    torch.manual_seed(SEED)
    model = LlavaForConditionalGeneration(config).float()
    _reinit(model)
    model.save_pretrained(path)
    _rename_llava_tower(path)
    images = CLIPImageProcessor(size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size})
    tokenizer = _tokenizer({"<image>": 4}, {"image_token": "<image>"})
    LlavaProcessor(image_processor=images, tokenizer=tokenizer, patch_size=14, vision_feature_select_strategy="default",
                   num_additional_image_tokens=1, chat_template=CHAT_TEMPLATE.replace("IMAGE", "<image>"),
                   ).save_pretrained(path)  # fmt: skip
    return path


def _qwen_processor(family: str):
    from transformers import Qwen2VLImageProcessor, Qwen2VLVideoProcessor

    size = {"shortest_edge": 56 * 56, "longest_edge": 224 * 224}
    images = Qwen2VLImageProcessor(size=size, patch_size=14, temporal_patch_size=2, merge_size=2)
    videos = Qwen2VLVideoProcessor(size=size, patch_size=14, temporal_patch_size=2, merge_size=2)
    extra = {"image_token": "<|image_pad|>", "video_token": "<|video_pad|>", "vision_start_token": "<|vision_start|>",
             "vision_end_token": "<|vision_end|>"}  # fmt: skip
    tokenizer = _tokenizer(QWEN_SPECIAL, extra)
    if family == "qwen2_vl":
        from transformers import Qwen2VLProcessor as cls
    else:
        from transformers import Qwen2_5_VLProcessor as cls
    mark = "<|vision_start|><|image_pad|><|vision_end|>"
    return cls(image_processor=images, tokenizer=tokenizer, video_processor=videos, chat_template=CHAT_TEMPLATE.replace("IMAGE", mark))


def build_qwen(path: Path, family: str) -> Path:
    text = dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                vocab_size=VOCAB, max_position_embeddings=1024, rms_norm_eps=1e-6,
                rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [8, 12, 12]},
                bos_token_id=1, eos_token_id=2, pad_token_id=3)  # fmt: skip
    ids = dict(image_token_id=7, video_token_id=8, vision_start_token_id=5, vision_end_token_id=6, tie_word_embeddings=False)
    if family == "qwen2_vl":
        from transformers import Qwen2VLConfig as Config
        from transformers import Qwen2VLForConditionalGeneration as Model

        vision = dict(depth=2, embed_dim=64, num_heads=4, mlp_ratio=2, hidden_size=128, patch_size=14,
                      temporal_patch_size=2, spatial_merge_size=2, in_channels=3)  # fmt: skip
    else:
        from transformers import Qwen2_5_VLConfig as Config
        from transformers import Qwen2_5_VLForConditionalGeneration as Model

        vision = dict(depth=2, hidden_size=64, intermediate_size=128, num_heads=4, out_hidden_size=128, patch_size=14,
                      temporal_patch_size=2, spatial_merge_size=2, in_channels=3, window_size=56,
                      fullatt_block_indexes=[1], tokens_per_second=2)  # fmt: skip
    config = Config(vision_config=vision, text_config=text, **ids)
    torch.manual_seed(SEED)
    model = Model(config).float()
    _reinit(model)
    model.save_pretrained(path)
    _qwen_processor(family).save_pretrained(path)
    return path


def build(family: str, path: Path) -> Path:
    """Write the tiny checkpoint of ``family`` (``llava``, ``qwen2_vl``, ``qwen2_5_vl``) to ``path``."""
    path.mkdir(parents=True, exist_ok=True)
    if (path / "config.json").exists() and (path / "model.safetensors").exists():
        return path
    return build_llava(path) if family == "llava" else build_qwen(path, family)


if __name__ == "__main__":
    for fam in sys.argv[2:] or ["llava", "qwen2_vl", "qwen2_5_vl"]:
        out = build(fam, Path(sys.argv[1]) / fam)
        print(fam, out, json.loads((out / "config.json").read_text())["architectures"])
