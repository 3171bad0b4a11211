"""The ``tokenprune`` entry of a vLLM model's config: which strategy, validated once, at startup.

vLLM users configure a model through its Hugging Face config (``hf_overrides`` in ``LLM(...)``,
``--hf-overrides`` for ``vllm serve``). The plugin reads one key from it::

    {"architectures": ["TokenpruneLlavaForConditionalGeneration"],
     "tokenprune": {"strategy": "visionzip", "ratio": 0.5}}

``strategy`` and the other keys are exactly `tokenprune.wrap`'s name and options (or its
``scheduler=``/``scorer=``/``reducer=`` components), built by the same registry and validated by
the same pydantic configs, so a bad option fails with the message `tokenprune.wrap` gives.

Only strategies that act before the LLM can run in vLLM: the number of placeholder tokens of each
image is fixed when the prompt is processed, before the vision tower runs, and every decoder layer
stores the KV of every prompt token. This module never imports vLLM (it is tested without it).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from ...api import _resolve_strategy
from ...vision_language import ProjectorSelection, VisionLanguageStrategy
from ...errors import TokenpruneError, UnsupportedFeatureError

__all__ = [
    "CONFIG_KEY",
    "ARCHITECTURES",
    "VllmPruning",
    "build_pruning",
    "projector_strategies",
    "hf_overrides",
    "REQUEST_KEY",
    "DENSE",
    "resolve_request",
    "encode_choice",
    "decode_choice",
]

CONFIG_KEY = "tokenprune"
"""Key of the strategy and its options in the model's (overridden) Hugging Face config."""

REQUEST_KEY = "tokenprune"
"""Key of a request's own strategy in ``mm_processor_kwargs`` (overrides the model's for that request)."""

DENSE = "none"
"""Strategy name that keeps every token (a dense request on a pruning server)."""

CHOICE_BYTES = 512
"""Fixed length of the encoded choice that travels with every image to the model (`encode_choice`)."""

ARCHITECTURES = {
    "LlavaForConditionalGeneration": "TokenpruneLlavaForConditionalGeneration",
    "Qwen2VLForConditionalGeneration": "TokenpruneQwen2VLForConditionalGeneration",
    "Qwen2_5_VLForConditionalGeneration": "TokenpruneQwen2_5_VLForConditionalGeneration",
}
"""Stock vLLM architecture -> the plugin's architecture (registered by `tokenprune.integrations.vllm.register`)."""

_WHAT_TO_USE = (
    "Use a strategy that reduces before the LLM: {names} (`tokenprune list` shows every strategy; "
    "docs/integrations.md, section vLLM)."
)


@dataclass(frozen=True)
class VllmPruning:
    """A validated strategy for a vLLM model: its name, options and projector-side selection."""

    name: str
    options: dict[str, Any]
    selection: ProjectorSelection

    @property
    def ratio(self) -> float:
        """Share of each image's tokens kept."""
        return self.selection.ratio


def projector_strategies() -> list[str]:
    """Registered strategy names whose default build runs only before the LLM (what vLLM can run)."""
    from ...registry import get_registry

    names = []
    for name, spec in sorted(get_registry().strategies.items()):
        try:
            built = spec.build(spec.config_cls())
        except Exception:
            continue
        if _projector_only(built):
            names.append(name)
    return names


def _projector_only(strategy: Any) -> bool:
    """Runs only before the LLM, on images (temporal selections need a video's frames; the plugin prunes images)."""
    from ...components.temporal import TemporalSelection

    return (
        isinstance(strategy, VisionLanguageStrategy)
        and strategy.projector is not None
        and not isinstance(strategy.projector, TemporalSelection)
        and strategy.encoder is None
        and strategy.llm is None
    )


def build_pruning(options: dict[str, Any]) -> VllmPruning:
    """Validate ``{"strategy": name, **options}`` (or components) and keep its projector part.

    Raises:
        UnknownStrategyError, pydantic.ValidationError: as `tokenprune.wrap` raises them.
        UnsupportedFeatureError: the strategy removes tokens inside the LLM or the vision tower.
    """
    if not isinstance(options, dict):
        raise TypeError(
            f"The {CONFIG_KEY!r} entry of hf_overrides must be a mapping such as "
            f'{{"strategy": "visionzip", "ratio": 0.5}}, got {type(options).__name__}.'
        )
    options = dict(options)
    name = options.pop("strategy", None)
    if name is None and not any(k in options for k in ("scheduler", "scorer", "reducer")):
        raise TypeError(
            f'The {CONFIG_KEY!r} entry needs "strategy" (e.g. {{"strategy": "visionzip", "ratio": 0.5}}) '
            'or components ("scheduler": "projector", "scorer": ..., "reducer": ...).'
        )
    from ...api import DEFAULT_STRATEGY

    strategy = _resolve_strategy(DEFAULT_STRATEGY if name is None else str(name), dict(options))
    label = str(name) if name is not None else "composed strategy"
    if not _projector_only(strategy):
        raise UnsupportedFeatureError(_why_not(label, strategy) + " " + _WHAT_TO_USE.format(names=", ".join(projector_strategies())))
    return VllmPruning(label, options, strategy.projector)


def _why_not(label: str, strategy: Any) -> str:
    in_llm = getattr(strategy, "llm", None) is not None or (not isinstance(strategy, VisionLanguageStrategy) and "llm" in strategy.sites)
    from ...components.temporal import TemporalSelection

    if isinstance(getattr(strategy, "projector", None), TemporalSelection):
        return (
            f"{label!r} selects across a video's frames; the vLLM plugin prunes images only (videos pass through "
            "dense), and a temporal selection has no frames to compare in an image."
        )
    if in_llm:
        return (
            f"{label!r} removes visual tokens inside the LLM's decoder layers, which vLLM cannot do: every layer's KV "
            "cache stores every prompt token (one slot mapping for all layers), so a deeper layer cannot hold fewer "
            "tokens (docs/design/vllm-layerwise.md says what vLLM would need)."
        )
    return (
        f"{label!r} reduces between the vision tower's blocks; vLLM runs its own fused vision towers, which the plugin "
        "does not reach into."
    )


def _located(err: Exception, where: str, options: Any) -> Exception:
    """``err``'s own message (pydantic's, as `tokenprune.wrap` shows it), prefixed with where the options came from."""
    kind = TypeError if isinstance(err, TypeError) else ValueError
    return kind(f"tokenprune (vLLM plugin), {where} = {json.dumps(options)}: {err}")


def hf_overrides(model: str | Path, strategy: str, /, **options: Any) -> dict[str, Any]:
    """The ``hf_overrides`` that run ``strategy`` on the checkpoint at ``model`` (validated now).

    ``LLM(model=path, hf_overrides=hf_overrides(path, "visionzip", ratio=0.5))``; for
    ``vllm serve``, ``json.dumps`` of the same dict is the ``--hf-overrides`` argument.

    Raises:
        UnsupportedFeatureError: the checkpoint's architecture has no plugin class, or the strategy
            cannot run before the LLM.
    """
    config = json.loads((Path(model) / "config.json").read_text())
    archs = config.get("architectures") or []
    mapped = [ARCHITECTURES.get(a) for a in archs]
    if not archs or None in mapped:
        raise UnsupportedFeatureError(
            f"The tokenprune vLLM plugin supports {', '.join(ARCHITECTURES)}; {model} declares {archs}."
        )
    entry = {"strategy": strategy, **options}
    build_pruning(dict(entry))
    return {"architectures": mapped, CONFIG_KEY: entry}


def resolve_request(request: Any, default: dict[str, Any] | None) -> dict[str, Any]:
    """The strategy one request runs, as a canonical options dict (validated here, in the frontend).

    Args:
        request: ``mm_processor_kwargs["tokenprune"]`` of the request (``None``: not given).
        default: the model's ``tokenprune`` entry (``None``: dense).

    Returns:
        ``{"strategy": "none"}`` for a dense request, else the validated ``{"strategy": ..., **options}``.
    """
    chosen = default if request is None else request
    if chosen is None or (isinstance(chosen, dict) and chosen.get("strategy") == DENSE):
        if isinstance(chosen, dict) and len(chosen) > 1:
            raise ValueError(f'strategy "none" takes no options, got {sorted(k for k in chosen if k != "strategy")}.')
        return {"strategy": DENSE}
    where = f'mm_processor_kwargs["{REQUEST_KEY}"]' if request is not None else f'hf_overrides["{CONFIG_KEY}"]'
    try:
        build_pruning(chosen)
    except TokenpruneError:
        raise
    except (TypeError, ValueError) as err:
        raise _located(err, where, chosen) from err
    return dict(chosen)


def encode_choice(choice: dict[str, Any]) -> Any:
    """``(CHOICE_BYTES,)`` uint8 tensor of the choice's JSON (how it rides with each image's tensors)."""
    import torch

    raw = json.dumps(choice, sort_keys=True).encode()
    if len(raw) > CHOICE_BYTES:
        raise ValueError(f"The tokenprune options take {len(raw)} bytes of JSON; at most {CHOICE_BYTES} fit.")
    out = torch.zeros(CHOICE_BYTES, dtype=torch.uint8)
    out[: len(raw)] = torch.tensor(list(raw), dtype=torch.uint8)
    return out


def decode_choice(code: Any) -> VllmPruning | None:
    """The pruning an encoded choice stands for (``None``: dense). Built once per distinct choice."""
    raw = bytes(int(b) for b in code.tolist()).rstrip(b"\0")
    return _decoded(raw)


@lru_cache(maxsize=256)
def _decoded(raw: bytes) -> VllmPruning | None:
    choice = json.loads(raw.decode())
    if choice.get("strategy") == DENSE:
        return None
    return build_pruning(choice)
