"""Where a module computes, also under accelerate's device maps and offloading.

accelerate (``device_map="auto"``, ``dispatch_model``, ``cpu_offload``, disk offload) attaches an
``AlignDevicesHook`` as ``module._hf_hook`` that moves inputs to the hook's execution device and,
with offloading, loads the weights only while the module's ``forward`` runs. Pre-hooks run before
that, so an offloaded module's parameters are still on the ``meta`` device when the engine scores
tokens: the device must come from the hook, not from the weights. The engine calls submodules
(``q_proj``, norms) through ``__call__``, so their own hooks load their weights as usual.

This reads accelerate's hook attributes by name (``_hf_hook``, ``hooks``, ``execution_device``)
and never imports accelerate.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

__all__ = ["execution_device"]


def _hooks(module: nn.Module) -> list[Any]:
    hook = getattr(module, "_hf_hook", None)
    if hook is None:
        return []
    return list(getattr(hook, "hooks", None) or [hook])  # a SequentialHook holds several


def execution_device(module: nn.Module) -> torch.device:
    """The device ``module`` computes on.

    The execution device of the first accelerate hook found on ``module`` or its submodules (in
    module order), else the device of its first parameter that is not on ``meta``, else CPU.
    """
    # A leaf (a projection, a norm) is the common case: skip nn.Module's generic generators, whose
    # bookkeeping costs more than the lookup itself in a per-boundary call.
    subs = (module,) if not module._modules else module.modules()
    for sub in subs:
        for hook in _hooks(sub):
            device = getattr(hook, "execution_device", None)
            if device is not None:
                return torch.device(device)
        for param in sub._parameters.values():
            if param is not None and param.device.type != "meta":
                return param.device
    return torch.device("cpu")
