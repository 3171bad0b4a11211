"""The tiny Moving-Shapes video model: a stock `Qwen2VLForConditionalGeneration`, its vocabulary and inputs.

Qwen2-VL so that M-RoPE (t, h, w) positions and temporal patches are exercised: 18 frames of 48x48 px,
4 px patches, temporal patch 2 and a 2x2 merger give a ``9 x 6 x 6`` grid = 324 visual tokens per
video. The prompt is ``<|vision_start|> <|video_pad|> x 324 <|vision_end|> question-words ?`` and the
answer one word: the last prompt token (``?``) is the query an LLM-side strategy scores with.
Nothing is downloaded: the config is built here and the vocabulary is the generator's word list.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import moving_shapes as ms

__all__ = [
    "SPECIAL_TOKENS", "Vocab", "build_config", "video_pixels", "TinyVideoVQA", "VISUAL_TOKENS", "ASSET_DIR",
    "FRAMES_FILE", "load_tiny_video_vqa",
]  # fmt: skip

ASSET_DIR = Path(__file__).resolve().parents[1] / "assets" / "tiny-video-qwen2vl"
"""The shipped trained checkpoint (weights, config, vocabulary, ``MODEL_CARD.md``)."""

SPECIAL_TOKENS = ("[PAD]", "[EOS]", "[UNK]", "<|vision_start|>", "<|vision_end|>", "<|video_pad|>", "<|image_pad|>")
PATCH_PX, TEMPORAL_PATCH, MERGE = 4, 2, 2
GRID = (ms.STEPS * ms.FRAMES_PER_STEP // TEMPORAL_PATCH, ms.FRAME_PX // PATCH_PX, ms.FRAME_PX // PATCH_PX)
"""``(t, h, w)`` patch grid of one video, as ``video_grid_thw`` holds it."""
VISUAL_TOKENS = GRID[0] * GRID[1] * GRID[2] // MERGE**2
"""Visual tokens per video (324)."""
TEXT_DIMS = dict(hidden_size=128, intermediate_size=384, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2)
VISION_DIMS = dict(embed_dim=64, depth=2, num_heads=2, mlp_ratio=2)


@dataclass(frozen=True)
class Vocab:
    """Word-level vocabulary: the special tokens, then the generator's words."""

    words: tuple[str, ...]

    @classmethod
    def default(cls, training_words: bool = False) -> Vocab:
        """The special tokens and every word Moving-Shapes questions and answers use (``training_words``: and the
        training-only questions' words, `moving_shapes.TRAINING_WORDS`)."""
        return cls((*SPECIAL_TOKENS, *ms.vocabulary(training_words)))

    def id(self, token: str) -> int:
        """The id of ``token`` (``[UNK]`` for a word outside the vocabulary)."""
        return self.words.index(token) if token in self.words else self.words.index("[UNK]")

    def encode(self, text: str) -> list[int]:
        """Ids of the lower-cased, whitespace-split words of ``text``."""
        return [self.id(w) for w in text.lower().split()]


def build_config(vocab: Vocab, text: dict | None = None, vision: dict | None = None):
    """The `Qwen2VLConfig` of the tiny video model (block M-RoPE sections for head_dim 32)."""
    from transformers import Qwen2VLConfig

    text_dims = {**TEXT_DIMS, **(text or {})}
    head_dim = text_dims["hidden_size"] // text_dims["num_attention_heads"]
    half = head_dim // 2
    section = [half - 2 * (half * 3 // 8), half * 3 // 8, half * 3 // 8]
    return Qwen2VLConfig(
        text_config=dict(
            **text_dims, vocab_size=len(vocab.words), max_position_embeddings=1024, rms_norm_eps=1e-6,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": section},
            pad_token_id=vocab.id("[PAD]"), eos_token_id=vocab.id("[EOS]"), bos_token_id=None, tie_word_embeddings=False,
        ),
        vision_config=dict(
            **{**VISION_DIMS, **(vision or {})}, in_channels=3, patch_size=PATCH_PX, temporal_patch_size=TEMPORAL_PATCH,
            spatial_merge_size=MERGE, hidden_size=text_dims["hidden_size"],
        ),
        image_token_id=vocab.id("<|image_pad|>"), video_token_id=vocab.id("<|video_pad|>"),
        vision_start_token_id=vocab.id("<|vision_start|>"), vision_end_token_id=vocab.id("<|vision_end|>"),
        tie_word_embeddings=False,
    )  # fmt: skip


def video_pixels(frames: np.ndarray) -> torch.Tensor:
    """``(t*h*w, 3*2*4*4)`` rows of one video's ``(18, 48, 48, 3)`` uint8 frames, in the Qwen2-VL processor's order.

    Values are scaled to [-1, 1]; rows run over temporal patches, then 2x2 merge windows in raster
    order, then the patches of a window (what `Qwen2VLImageProcessor` emits).
    """
    x = torch.from_numpy(np.ascontiguousarray(frames)).float().div(127.5).sub(1.0).permute(0, 3, 1, 2)  # (T, C, H, W)
    t, h, w = GRID
    x = x.reshape(t, TEMPORAL_PATCH, 3, h // MERGE, MERGE, PATCH_PX, w // MERGE, MERGE, PATCH_PX)
    x = x.permute(0, 3, 6, 4, 7, 2, 1, 5, 8)
    return x.reshape(t * h * w, 3 * TEMPORAL_PATCH * PATCH_PX * PATCH_PX)


FRAMES_FILE = "frames.json"
"""How a checkpoint's frames are drawn (``{"counter": bool}``), saved next to its weights."""


class TinyVideoVQA:
    """A model, its vocabulary, and batched encoding / answering of (video, question) pairs.

    ``counter``: the model reads frames drawn with the step counter (`moving_shapes.render`; trained
    with ``--counter``). Saved with the checkpoint, so evaluating or visualising it draws its frames alike.
    """

    def __init__(self, model, vocab: Vocab, counter: bool = False):
        self.model, self.vocab, self.counter = model, vocab, counter

    def prompt_ids(self, question: str) -> list[int]:
        """The video placeholders between vision start/end, then the question's ids."""
        v = self.vocab
        return [v.id("<|vision_start|>"), *[v.id("<|video_pad|>")] * VISUAL_TOKENS, v.id("<|vision_end|>"), *v.encode(question)]

    def encode(self, frames: list[np.ndarray], questions: list[str], answers: list[str] | None = None) -> dict:
        """Left-padded inputs (with ``labels`` on the answer word when ``answers`` are given)."""
        rows = [self.prompt_ids(q) + ([self.vocab.id(a)] if answers else []) for q, a in zip(questions, answers or questions)]
        width = max(map(len, rows))
        pad = self.vocab.id("[PAD]")
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, row in enumerate(rows):
            ids[i, width - len(row):] = torch.tensor(row)
            mask[i, width - len(row):] = 1
        video_id = self.vocab.id("<|video_pad|>")
        inputs = {
            "input_ids": ids, "attention_mask": mask,
            "mm_token_type_ids": 2 * (ids == video_id).long(),
            "pixel_values_videos": torch.cat([video_pixels(f) for f in frames]),
            "video_grid_thw": torch.tensor([GRID] * len(frames)),
        }  # fmt: skip
        if answers:
            labels = torch.full_like(ids, -100)
            labels[:, -1] = ids[:, -1]
            inputs["labels"] = labels
        return inputs

    def encode_dialogues(self, frames: list[np.ndarray], dialogues: list[list[tuple[str, str]]]) -> dict:
        """Training rows ``video q1 a1 q2 a2 ...`` whose turns see only the video and themselves.

        The attention mask is 4-D (``(B, 1, L, L)``, True = attend) and each turn's M-RoPE positions
        restart right after the video, so every turn is exactly the single-question inference prompt
        while the video's 324 tokens are encoded once for all its questions. ``labels`` mark the answers.
        """
        prefix = self.prompt_ids("")
        rows, targets, turn_of = [], [], []
        for turns in dialogues:
            row, tgt, turn = list(prefix), [-100] * len(prefix), [0] * len(prefix)
            for j, (question, answer) in enumerate(turns, start=1):
                q, a = self.vocab.encode(question), [self.vocab.id(answer)]
                row += q + a
                tgt += [-100] * len(q) + a
                turn += [j] * (len(q) + len(a))
            rows.append(row)
            targets.append(tgt)
            turn_of.append(turn)
        width = max(map(len, rows))
        ids = torch.full((len(rows), width), self.vocab.id("[PAD]"), dtype=torch.long)
        labels = torch.full_like(ids, -100)
        turn = torch.full_like(ids, -1)
        for b, (row, tgt, t) in enumerate(zip(rows, targets, turn_of)):
            ids[b, width - len(row):], labels[b, width - len(row):] = torch.tensor(row), torch.tensor(tgt)
            turn[b, width - len(row):] = torch.tensor(t)
        real = turn >= 0
        causal = torch.ones(width, width, dtype=torch.bool).tril()
        same = (turn[:, :, None] == turn[:, None, :]) | (turn[:, None, :] == 0)
        mask = (causal & same & real[:, :, None] & real[:, None, :]) | torch.eye(width, dtype=torch.bool)
        prefix_positions = self._prefix_positions(len(prefix))  # (3, len(prefix))
        start = int(prefix_positions[0, -1]) + 1  # text continues after <|vision_end|>, as the model numbers it
        col = torch.arange(width).expand_as(turn)
        first = torch.ones_like(real)
        first[:, 1:] = turn[:, 1:] != turn[:, :-1]
        offset = col - (col * first).cummax(1).values
        positions = torch.zeros(3, len(rows), width, dtype=torch.long)
        for b, row in enumerate(rows):
            lo = width - len(row)
            positions[:, b, lo : lo + len(prefix)] = prefix_positions
        text = (start + offset).masked_fill(turn <= 0, 0)
        positions += (turn > 0).long()[None] * text[None]
        return {
            "input_ids": ids, "attention_mask": mask[:, None], "position_ids": positions, "labels": labels,
            "pixel_values_videos": torch.cat([video_pixels(f) for f in frames]),
            "video_grid_thw": torch.tensor([GRID] * len(frames)),
            "mm_token_type_ids": 2 * (ids == self.vocab.id("<|video_pad|>")).long(),
        }  # fmt: skip

    def _prefix_positions(self, length: int) -> torch.Tensor:
        """``(3, length)`` M-RoPE positions of ``<|vision_start|> video <|vision_end|>``, from the model's own code."""
        ids = torch.tensor([self.prompt_ids("")])
        positions, _ = self.model.model.get_rope_index(
            ids, 2 * (ids == self.vocab.id("<|video_pad|>")).long(), video_grid_thw=torch.tensor([GRID]),
            attention_mask=torch.ones_like(ids),
        )  # fmt: skip
        return positions[:, 0, :length]

    @torch.no_grad()
    def answer(self, frames: list[np.ndarray], questions: list[str]) -> list[str]:
        """Greedy one-word answers (argmax of the next-token logits after the question)."""
        inputs = self.encode(frames, questions)
        logits = self.model(**inputs).logits[:, -1]
        return [self.vocab.words[i] for i in logits.argmax(-1).tolist()]

    def save(self, path: str | Path) -> None:
        """Write the model (safetensors) and its vocabulary to the folder ``path``."""
        path = Path(path)
        self.model.save_pretrained(path)
        (path / "vocab.json").write_text(json.dumps(list(self.vocab.words)))
        (path / FRAMES_FILE).write_text(json.dumps({"counter": self.counter}))

    @classmethod
    def load(cls, path: str | Path, dtype: torch.dtype = torch.float32) -> TinyVideoVQA:
        """Read a model saved by `save`."""
        from transformers import Qwen2VLForConditionalGeneration

        path = Path(path)
        model = Qwen2VLForConditionalGeneration.from_pretrained(path, dtype=dtype).eval()
        frames = path / FRAMES_FILE  # absent in checkpoints saved before it existed: plain frames
        counter = bool(json.loads(frames.read_text()).get("counter", False)) if frames.is_file() else False
        return cls(model, Vocab(tuple(json.loads((path / "vocab.json").read_text()))), counter=counter)


def load_tiny_video_vqa(path: str | Path | None = None, dtype: torch.dtype = torch.float32) -> TinyVideoVQA:
    """The shipped checkpoint (``tokenprune/assets/tiny-video-qwen2vl``) or one saved by the training script.

    Raises:
        FileNotFoundError: no checkpoint at ``path`` (train one with ``examples/train_tiny_video_vqa.py``).
    """
    path = Path(path) if path is not None else ASSET_DIR
    if not (path / "vocab.json").is_file() or not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"No tiny video VQA checkpoint at {path}. Train one with: python examples/train_tiny_video_vqa.py --out {path}"
        )
    return TinyVideoVQA.load(path, dtype=dtype)
