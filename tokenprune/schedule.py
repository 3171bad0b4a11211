"""The `Schedule` value object: how many visual tokens each sample holds at each layer."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .errors import ScheduleError

__all__ = ["Schedule", "validate_layers"]


def validate_layers(layers: Sequence[int], num_layers: int) -> tuple[int, ...]:
    """Check reduction layers against a stack of ``num_layers`` decoder layers.

    A reduction layer is the 0-based index of the first layer that sees fewer tokens, which is the
    same number as PyramidDrop's 1-based "rank after layer" convention (``layer_list=[8, 16, 24]``).

    Raises:
        ScheduleError: naming the violated constraint: layer 0 is never reduced (positions and mask
            sizes are read from cache layer 0), every layer must exist, and layers strictly increase.
    """
    layers = tuple(int(x) for x in layers)
    for layer in layers:
        if layer < 1:
            raise ScheduleError(
                f"Reduction layer {layer} is not allowed: layer 0 always sees every token (the cache and "
                "position bookkeeping of transformers read layer 0). Use layers >= 1, e.g. layer_list=[8, 16, 24]."
            )
        if layer >= num_layers:
            raise ScheduleError(
                f"Reduction layer {layer} is out of range for a model with {num_layers} decoder layers: "
                f"every reduction layer must be in [1, {num_layers - 1}]."
            )
    if any(b <= a for a, b in zip(layers, layers[1:])):
        raise ScheduleError(f"Reduction layers must be strictly increasing, got {list(layers)}.")
    return layers


@dataclass(frozen=True)
class Schedule:
    """Per layer and per sample: how many visual tokens remain.

    Attributes:
        num_layers: decoder layers in the stack.
        layers: 0-based index of the first layer of each reduced stage, strictly increasing.
        num_visual: visual tokens of each sample at layer 0.
        keep: ``keep[s][b]`` = visual tokens sample ``b`` holds from ``layers[s]`` on.
    """

    num_layers: int
    layers: tuple[int, ...]
    num_visual: tuple[int, ...]
    keep: tuple[tuple[int, ...], ...]

    def __post_init__(self) -> None:
        validate_layers(self.layers, self.num_layers)
        if len(self.keep) != len(self.layers):
            raise ScheduleError(f"{len(self.layers)} reduction layers but {len(self.keep)} keep rows.")
        previous = self.num_visual
        for layer, row in zip(self.layers, self.keep):
            if len(row) != len(self.num_visual):
                raise ScheduleError(f"keep row for layer {layer} has {len(row)} entries for {len(previous)} samples.")
            for b, (before, now) in enumerate(zip(previous, row)):
                if not 0 <= now <= before:
                    raise ScheduleError(
                        f"Sample {b} would go from {before} to {now} visual tokens at layer {layer}: a schedule may "
                        "only keep between 0 and the tokens it still has."
                    )
            previous = row

    @property
    def batch_size(self) -> int:
        """Number of samples the schedule was resolved for."""
        return len(self.num_visual)

    def visual_tokens(self, layer: int) -> tuple[int, ...]:
        """Visual tokens per sample that decoder layer ``layer`` processes."""
        current = self.num_visual
        for start, row in zip(self.layers, self.keep):
            if start <= layer:
                current = row
        return current

    def tokens_per_layer(self) -> list[tuple[int, ...]]:
        """``[layer][sample]`` visual-token counts for every decoder layer."""
        return [self.visual_tokens(i) for i in range(self.num_layers)]

    def average_tokens(self) -> tuple[float, ...]:
        """Mean visual tokens per layer for each sample (the literature's "average tokens")."""
        table = self.tokens_per_layer()
        return tuple(sum(col) / self.num_layers for col in zip(*table))
