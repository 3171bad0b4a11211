"""Data-parallel containers that `tokenprune.wrap` must not be handed.

``DistributedDataParallel`` and ``DataParallel`` hold the model at ``.module`` and forward nothing
else: the adapter cannot find a config on them, and ``container.tokenprune`` would not reach a
handle. FSDP1's ``FullyShardedDataParallel`` has also flattened and sharded the parameters and
renamed the modules. Each gets an error naming the order that works, instead of "no adapter".
FSDP2 (``fully_shard``) keeps the model object, so it is not a container and needs nothing here.
"""

from __future__ import annotations

from torch import nn

from .errors import UnsupportedModelError

__all__ = ["ParallelContainerError", "reject_parallel_container"]


class ParallelContainerError(UnsupportedModelError):
    """`tokenprune.wrap` was handed a data-parallel container instead of the model inside it."""

    def __init__(self, message: str):
        TypeError.__init__(self, message)  # the message says it all; no list of model types


def _fsdp1_class() -> type | None:
    try:
        from torch.distributed.fsdp import FullyShardedDataParallel
    except ImportError:  # torch built without distributed support
        return None
    return FullyShardedDataParallel


def reject_parallel_container(model: nn.Module) -> None:
    """Raise `ParallelContainerError` (an `UnsupportedModelError`) for a DDP / DataParallel / FSDP1 container."""
    fsdp1 = _fsdp1_class()
    if fsdp1 is not None and isinstance(model, fsdp1):
        raise ParallelContainerError(
            "tokenprune.wrap got a FullyShardedDataParallel (FSDP1) module, which has already flattened and sharded "
            "the parameters. Wrap the model first and then shard it (tokenprune.wrap(model, ...); "
            "FullyShardedDataParallel(model, ...)), or use FSDP2 (torch.distributed.fsdp.fully_shard), which works "
            "in either order."
        )
    if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
        kind = type(model).__name__
        raise ParallelContainerError(
            f"tokenprune.wrap got a {kind}, a container that forwards nothing to the model inside it. Wrap the "
            f"model before handing it over (tokenprune.wrap(model, ...); {kind}(model, ...)), or wrap the model "
            "inside it: tokenprune.wrap(container.module, ...), and read the stats from container.module.tokenprune."
        )
