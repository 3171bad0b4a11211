"""A LLaVA processor for the tiny models of `tiny_models.py`, built from objects (no model hub).

The tokenizer is a `tokenizers` WordLevel model over the tiny vocabulary: text id ``i`` is the word
``w{i}``, plus ``<s>``, ``</s>``, ``<pad>``, ``<image>`` and ``<video>`` at the ids the tiny configs
use. The image processor resizes to one 16 px tile; the processor expands ``<image>`` into the 16
placeholders the tiny LLaVA's vision tower produces (4 px patches, CLS dropped).

API
    make_llava_processor() -> LlavaProcessor
    prompt(words) -> "w5 w6 <image> w7 ..." text from token ids (IMAGE_ID -> "<image>")
    random_image(seed, size) -> a PIL RGB image
"""

from __future__ import annotations

import numpy as np
from PIL import Image
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import CLIPImageProcessor, LlavaProcessor, PreTrainedTokenizerFast

import tiny_models as tm

CHAT_TEMPLATE = (
    "{% for message in messages %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<image> {% else %}{{ part['text'] }} {% endif %}"
    "{% endfor %}{% endfor %}{% if add_generation_prompt %}w3{% endif %}"
)
"""Renders a chat as its words, each image as ``<image>``, and ``w3`` as the assistant prompt."""


def _vocab() -> dict[str, int]:
    vocab = {"<unk>": 0, "<s>": tm.BOS_ID, "</s>": tm.EOS_ID}
    vocab.update({f"w{i}": i for i in range(tm.FIRST_TEXT_ID, tm.TEXT_VOCAB)})
    vocab.update({"<pad>": tm.PAD_ID, "<image>": tm.IMAGE_ID, "<video>": tm.VIDEO_ID})
    return vocab


def make_tokenizer() -> PreTrainedTokenizerFast:
    """A whitespace WordLevel tokenizer whose ids match the tiny models' vocabulary."""
    core = Tokenizer(models.WordLevel(vocab=_vocab(), unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        extra_special_tokens={"image_token": "<image>"},
        padding_side="left",
    )


def make_llava_processor() -> LlavaProcessor:
    """`LlavaProcessor` for `tiny_models.make_llava` (16 placeholders per image)."""
    side = tm.TILE_PX
    images = CLIPImageProcessor(size={"shortest_edge": side}, crop_size={"height": side, "width": side})
    return LlavaProcessor(
        image_processor=images,
        tokenizer=make_tokenizer(),
        patch_size=tm.PATCH_PX,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,  # CLIP's CLS, which "default" drops again
        chat_template=CHAT_TEMPLATE,
    )


def prompt(ids: list[int]) -> str:
    """Text whose tokenization is ``ids`` (``IMAGE_ID`` becomes one ``<image>``)."""
    return " ".join("<image>" if i == tm.IMAGE_ID else f"w{i}" for i in ids)


def random_image(seed: int = 0, size: tuple[int, int] = (20, 24)) -> Image.Image:
    """A random RGB image (the processor resizes and crops it to one tile)."""
    pixels = np.random.RandomState(seed).rand(size[0], size[1], 3) * 255
    return Image.fromarray(pixels.astype("uint8"))
