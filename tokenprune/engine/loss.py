"""Keep the training loss aligned with the tokens that survived.

The head computes ``loss_function(logits, labels, ...)`` with logits for the kept slots only, while
``labels`` still cover the original sequence. Next-token targets are built on the ORIGINAL sequence
(``labels[p + 1]`` for position ``p``) and then gathered at the kept positions, so every kept
position keeps its own target. (The official PyramidDrop code drops labels and then shifts; the
two agree whenever visual positions carry -100, which is the standard.) Filler slots get -100.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor
from torch.nn import functional as F  # noqa: N812

from .state import Stage

__all__ = ["AlignedLoss"]


class AlignedLoss:
    """A transformers ``loss_function`` that follows the last forward's kept slots.

    A class rather than a closure so that deep copies and pickles of a wrapped model carry it.

    Args:
        original: the model's loss function (``ForCausalLMLoss`` or a user's own).
        engine: anything with a ``final`` attribute: ``(original_length, last_stage)`` of the calling
            thread's last forward, or ``None`` when it removed nothing (``original`` then runs unchanged).
    """

    def __init__(self, original: Callable[..., Tensor], engine: Any):
        self.original = original
        self.engine = engine

    def __call__(self, logits: Tensor, labels: Tensor | None, vocab_size: int, **kwargs: Any) -> Tensor:
        last: tuple[int, Stage] | None = self.engine.final
        if last is None or labels is None or labels.shape[1] != last[0]:
            return self.original(logits=logits, labels=labels, vocab_size=vocab_size, **kwargs)
        stage = last[1]
        shift = kwargs.pop("shift_labels", None)
        if shift is None:
            shift = F.pad(labels, (0, 1), value=-100)[:, 1:]
        idx, valid = stage.idx.to(shift.device), stage.valid.to(shift.device)
        shift = shift.gather(1, idx).masked_fill(~valid, -100)
        return self.original(logits=logits, labels=labels, vocab_size=vocab_size, shift_labels=shift, **kwargs)
