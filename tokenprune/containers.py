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

__all__ = ["reject_parallel_container"]


def _fsdp1_class() -> type | None:
    try:
        from torch.distributed.fsdp import FullyShardedDataParallel
    except ImportError:  # torch built without distributed support
        return None
    return FullyShardedDataParallel


def _supported() -> list[str]:
    from .registry import get_registry  # the registry imports plugins; only needed for the message

    return [t for spec in get_registry().adapters.values() for t in spec.adapter.model_types]


def reject_parallel_container(model: nn.Module) -> None:
    """Raise `UnsupportedModelError` for a DDP / DataParallel / FSDP1 container, with the fix."""
    fsdp1 = _fsdp1_class()
    if fsdp1 is not None and isinstance(model, fsdp1):
        raise UnsupportedModelError(
            model, _supported(), hint=(
                "FullyShardedDataParallel (FSDP1) has already flattened and sharded the parameters. Wrap the "
                "model first and then shard it (tokenprune.wrap(model, ...); FullyShardedDataParallel(model, ...)), "
                "or use FSDP2 (torch.distributed.fsdp.fully_shard), which works in either order."
            ),
        )
    if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
        kind = type(model).__name__
        raise UnsupportedModelError(
            model, _supported(), hint=(
                f"{kind} is a container: wrap the model before handing it over (tokenprune.wrap(model, ...); "
                f"{kind}(model, ...)), or wrap the model inside it: tokenprune.wrap(container.module, ...). "
                "Read the stats from container.module.tokenprune."
            ),
        )
