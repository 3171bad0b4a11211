"""A clear error when a scorer needs a layer whose parameters FSDP2 has already resharded.

FSDP2 (``fully_shard`` per decoder layer) gathers a layer's parameters in a forward pre-hook that
runs before the engine's, and reshards them after the layer's forward. A scorer that computes with
the reduction layer itself sees gathered weights. A scorer with ``layer="previous"`` calls the
projections of the layer *below*, which has finished its forward: its
parameters are sharded DTensors again, and torch fails with "mixed torch.Tensor and DTensor".
Gathering them here would be a collective that only ranks with visual tokens reach (a hang), so the
engine names the fix instead: keep that layer gathered after its forward.
"""

from __future__ import annotations

from torch import nn

from ..errors import UnsupportedFeatureError

__all__ = ["require_gathered"]

try:
    from torch.distributed.tensor import DTensor
except ImportError:  # torch built without distributed support: nothing can be sharded
    DTensor = None


def require_gathered(module: nn.Module, index: int) -> None:
    """Raise if ``module`` (decoder layer ``index``) holds sharded parameters right now."""
    if DTensor is None or not any(isinstance(p, DTensor) for p in module.parameters()):
        return
    raise UnsupportedFeatureError(
        f"The scorer computes with decoder layer {index} (the layer below the reduction layer), but its parameters "
        "are sharded: FSDP2 reshards a layer after its forward. Keep that layer gathered after its forward with "
        f"fully_shard(layers[{index}], reshard_after_forward=False) (or its_layer.set_reshard_after_forward(False)), "
        "or use a scorer that computes with the reduction layer itself (layer='current')."
    )
