"""The tiny VQA LLaVA: word-level tokenizer, model config, the shipped checkpoint, and batched answers.

The model is a stock `LlavaForConditionalGeneration` (CLIP vision tower, MLP projector, Llama text
stack) built from config objects, so every adapter path the real LLaVA-1.5 takes is exercised.
The prompt is ``[BOS] <image> x 100 question-words ?`` and the answer is one word followed by
``[EOS]``: the last prompt token (``?``) is the query PyramidDrop scores with, as in LLaVA where the
instruction follows the image.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..tiny_llava import LlavaDims, llava_config

__all__ = [
    "SPECIAL_TOKENS", "IMAGE_TOKEN", "ASSET_DIR", "build_tokenizer", "vocabulary", "build_config",
    "TinyVQA", "load_tiny_vqa", "pixel_values",
]  # fmt: skip

PAD, BOS, EOS, UNK = "[PAD]", "[BOS]", "[EOS]", "[UNK]"
IMAGE_TOKEN = "<image>"
"""The placeholder token the processor-free prompt repeats once per visual token (100 per image)."""
SPECIAL_TOKENS = (PAD, BOS, EOS, UNK, IMAGE_TOKEN)
"""The tokenizer's special tokens, in vocabulary order: they take ids 0-4, so ``[PAD]`` is 0 and
``<image>`` is 4 (the ``image_token_index`` of `build_config`)."""
IMAGE_PX, PATCH_PX = 60, 6
NUM_PATCHES = (IMAGE_PX // PATCH_PX) ** 2  # 100 visual tokens per image
ASSET_DIR = Path(__file__).resolve().parents[2] / "assets" / "tiny-vqa-llava"
"""The checkpoint shipped in the package (weights, config, tokenizer): what `load_tiny_vqa` loads
when given no path, and what ``tokenprune eval`` / ``fidelity`` / ``visualize`` / ``demo`` use."""

TEXT_DIMS = dict(hidden_size=128, intermediate_size=256, num_hidden_layers=6, num_attention_heads=4,
                 num_key_value_heads=2)  # fmt: skip
VISION_DIMS = dict(hidden_size=128, intermediate_size=256, num_hidden_layers=4, num_attention_heads=4)


def vocabulary(texts) -> list[str]:
    """Sorted distinct lowercase words and punctuation of ``texts`` (the tokenizer's pre-tokenizer split)."""
    from tokenizers.pre_tokenizers import Whitespace

    pre = Whitespace()
    words = {w for text in texts for w, _ in pre.pre_tokenize_str(text.lower())}
    return sorted(words - set(SPECIAL_TOKENS))


def build_tokenizer(words: list[str]):
    """A `tokenizers` WordLevel tokenizer over ``words`` in a `PreTrainedTokenizerFast` (saved with the model)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate([*SPECIAL_TOKENS, *words])}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    core.normalizer = normalizers.Lowercase()
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token=PAD, bos_token=BOS, eos_token=EOS, unk_token=UNK,
        additional_special_tokens=[IMAGE_TOKEN], padding_side="left",
    )  # fmt: skip
    return tok


def build_config(
    vocab_size: int, pad_id: int = 0, bos_id: int = 1, eos_id: int = 2, image_id: int = 4,
    text_dims: dict | None = None, vision_dims: dict | None = None,
):  # fmt: skip
    """LLaVA-1.5 layout at toy width: 60 px images, 6 px patches (100 visual tokens), 6 text layers.

    As in LLaVA-1.5, the projector reads the penultimate tower layer (``vision_feature_layer=-2``),
    so projector-side strategies score with the last tower block, and ToMe can merge before it.

    ``text_dims`` / ``vision_dims`` override entries of `TEXT_DIMS` / `VISION_DIMS` (the training
    script's ``--text-width`` and friends); a saved checkpoint records what it was built with.
    """
    vision_dims = {**VISION_DIMS, **(vision_dims or {})}
    text_dims = {**TEXT_DIMS, **(text_dims or {})}
    dims = LlavaDims(
        layers=text_dims["num_hidden_layers"], hidden=text_dims["hidden_size"],
        intermediate=text_dims["intermediate_size"], heads=text_dims["num_attention_heads"],
        kv_heads=text_dims["num_key_value_heads"], vocab=vocab_size,
        vision_layers=vision_dims["num_hidden_layers"], vision_hidden=vision_dims["hidden_size"],
        vision_intermediate=vision_dims["intermediate_size"], vision_heads=vision_dims["num_attention_heads"],
        image_size=IMAGE_PX, patch_size=PATCH_PX,
    )  # fmt: skip
    return llava_config(dims, image_token_id=image_id, max_positions=320, pad_id=pad_id, bos_id=bos_id, eos_id=eos_id,
                        tie_word_embeddings=True)  # fmt: skip


def pixel_values(images: torch.Tensor) -> torch.Tensor:
    """uint8 ``(B, 3, 60, 60)`` -> float in [-1, 1] (what the model was trained on)."""
    return images.float().div(127.5).sub(1.0)


@dataclass
class TinyVQA:
    """The model with its tokenizer, and the few operations the CLI needs.

    Attributes:
        model: the `LlavaForConditionalGeneration`.
        tokenizer: its word-level `PreTrainedTokenizerFast`.
    """

    model: nn.Module
    tokenizer: Any

    @property
    def image_id(self) -> int:
        """The id of `IMAGE_TOKEN`: the prompt positions the vision tower's features replace.

        Masks of visual positions (``input_ids == vqa.image_id``) map kept tokens back to patches.
        """
        return self.tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)

    def prompt_ids(self, question: str) -> list[int]:
        """The unpadded inference prompt ``[BOS] <image> x 100 question-words`` as token ids.

        The image tokens come before the question, as in LLaVA, so the question's last token is the
        text query that attention-based strategies score the visual tokens with.

        Args:
            question: the question text (lowercased and split into words by the tokenizer).

        Returns:
            The ids, without padding or an answer; `encode` pads rows of these into a batch.
        """
        words = self.tokenizer(question, add_special_tokens=False)["input_ids"]
        return [self.tokenizer.bos_token_id, *[self.image_id] * NUM_PATCHES, *words]

    def encode(self, images: torch.Tensor, questions: list[str], answers: list[str] | None = None) -> dict:
        """A left-padded batch (``position_ids`` from the mask, as `generate` numbers it).

        With ``answers``, each row ends in ``answer [EOS]`` and ``labels`` mark only those tokens
        (the training format); without, rows end at the question (the inference prompt).
        """
        rows, targets = [], []
        for b, q in enumerate(questions):
            prompt = self.prompt_ids(q)
            tail = []
            if answers is not None:
                tail = [*self.tokenizer(answers[b], add_special_tokens=False)["input_ids"], self.tokenizer.eos_token_id]
            rows.append(prompt + tail)
            targets.append([-100] * len(prompt) + tail)
        out = self._pad(images, rows, targets)
        if answers is None:
            del out["labels"]
        return out

    def encode_dialogues(
        self, images: torch.Tensor, dialogues: list[list[tuple[str, str]]], isolate_turns: bool = False
    ) -> dict:
        """Training batch of multi-turn rows ``[BOS] <image>... q1 a1 [EOS] q2 a2 [EOS] ...`` (left-padded).

        ``labels`` mark every answer word and its ``[EOS]``. Several questions about one image share
        the cost of its 100 visual tokens (LLaVA's own training data is multi-turn the same way); the
        first turn is exactly the single-question inference prompt.

        With ``isolate_turns``, every turn sees only ``[BOS]``, the image and itself: the attention
        mask is 4-D (``(B, 1, T, T)``, True = attend) and each turn's positions restart where the
        image ends, so each turn is exactly the single-question inference prompt. Without it a
        later turn can read an earlier answer ("what color is the shape? red ... is there a red
        shape?") instead of the image, a shortcut that inference never offers.
        """
        rows, targets, turn_of = [], [], []
        eos = self.tokenizer.eos_token_id
        for turns in dialogues:
            row = [self.tokenizer.bos_token_id, *[self.image_id] * NUM_PATCHES]
            tgt = [-100] * len(row)
            turn = [0] * len(row)
            for j, (question, answer) in enumerate(turns, start=1):
                q = self.tokenizer(question, add_special_tokens=False)["input_ids"]
                a = [*self.tokenizer(answer, add_special_tokens=False)["input_ids"], eos]
                row += q + a
                tgt += [-100] * len(q) + a
                turn += [j] * (len(q) + len(a))
            rows.append(row)
            targets.append(tgt)
            turn_of.append(turn)
        out = self._pad(images, rows, targets)
        if isolate_turns:
            out["attention_mask"], out["position_ids"] = _isolated_turns(turn_of, out["input_ids"].shape[1])
        return out

    def _pad(self, images: torch.Tensor, rows: list[list[int]], targets: list[list[int]]) -> dict:
        width = max(len(r) for r in rows)
        pad = self.tokenizer.pad_token_id
        input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros_like(input_ids)
        labels = torch.full_like(input_ids, -100)
        for b, (row, tgt) in enumerate(zip(rows, targets)):
            input_ids[b, width - len(row) :] = torch.tensor(row)
            mask[b, width - len(row) :] = 1
            labels[b, width - len(row) :] = torch.tensor(tgt)
        return {
            "input_ids": input_ids, "attention_mask": mask, "pixel_values": pixel_values(images),
            "position_ids": (mask.cumsum(-1) - 1).clamp(min=0), "labels": labels,
        }  # fmt: skip

    @torch.inference_mode()
    def next_token_logits(self, images: torch.Tensor, questions: list[str]) -> torch.Tensor:
        """``(B, vocab)`` logits of the first answer token (one prefill forward)."""
        device = next(self.model.parameters()).device
        inputs = {k: v.to(device) for k, v in self.encode(images, questions).items()}
        return self.model(**inputs, use_cache=False, logits_to_keep=1).logits[:, -1].float()

    def answer(self, images: torch.Tensor, questions: list[str]) -> list[str]:
        """Greedy one-word answers (the argmax first answer token, decoded)."""
        ids = self.next_token_logits(images, questions).argmax(-1).tolist()
        return self.tokenizer.convert_ids_to_tokens(ids)


def _isolated_turns(turn_of: list[list[int]], width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """4-D mask and positions for left-padded rows whose turns see only the shared prefix (turn 0) and themselves."""
    turn = torch.full((len(turn_of), width), -1, dtype=torch.long)  # -1: padding
    for b, t in enumerate(turn_of):
        turn[b, width - len(t) :] = torch.tensor(t)
    causal = torch.ones(width, width, dtype=torch.bool).tril()
    real = turn >= 0
    same = (turn[:, :, None] == turn[:, None, :]) | (turn[:, None, :] == 0)
    mask = causal & same & real[:, :, None] & real[:, None, :]
    mask |= torch.eye(width, dtype=torch.bool)  # padding rows attend to themselves (no all-masked row)
    # turns are contiguous runs: a token's offset in its run is its column minus the run's first column
    col = torch.arange(width).expand_as(turn)
    first = torch.ones_like(real)
    first[:, 1:] = turn[:, 1:] != turn[:, :-1]
    offset = col - (col * first).cummax(1).values
    prefix = (turn == 0).sum(1, keepdim=True)  # [BOS] + image: every turn continues after it
    positions = torch.where(turn > 0, prefix + offset, offset)
    return mask[:, None], positions.masked_fill(~real, 0)


def load_tiny_vqa(path: str | Path | None = None, dtype: torch.dtype = torch.float32) -> TinyVQA:
    """The shipped checkpoint (``tokenprune/assets/tiny-vqa-llava``) or one saved by the training script.

    Raises:
        FileNotFoundError: no checkpoint at ``path`` (train one with ``examples/train_tiny_vqa.py``).
    """
    from transformers import LlavaForConditionalGeneration, PreTrainedTokenizerFast

    path = Path(path) if path is not None else ASSET_DIR
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"No tiny VQA checkpoint at {path}. Train one with: python examples/train_tiny_vqa.py --out {path}"
        )
    model = LlavaForConditionalGeneration.from_pretrained(path, dtype=dtype, attn_implementation="sdpa").eval()
    tokenizer = PreTrainedTokenizerFast.from_pretrained(path)
    tokenizer.padding_side = "left"
    return TinyVQA(model, tokenizer)
