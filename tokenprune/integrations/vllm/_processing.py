"""The prompt side of the plugin: each image's placeholder count and its strategy, fixed per request.

vLLM decides how many placeholder tokens an image gets when it processes the prompt, before the
vision tower runs, and the tower's output must then have exactly that many rows. Projector-side
strategies keep a count that depends only on the image's token count and the options, so the count
is known here. The chosen strategy (the model's default, or the request's own through
``mm_processor_kwargs={"tokenprune": {...}}``) travels with every image as a small tensor field, so
the model applies exactly what the prompt was sized for, whatever requests share its batch.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from vllm.multimodal.inputs import MultiModalFieldConfig

from .config import CONFIG_KEY, REQUEST_KEY, decode_choice, encode_choice, resolve_request

__all__ = ["CHOICE_FIELD", "PruningInfoMixin", "PruningProcessorMixin", "choice_of_item"]

CHOICE_FIELD = "tokenprune_choice"
"""Name of the per-image field holding the encoded strategy choice (`config.encode_choice`)."""


def _without_request_key(kwargs: Mapping[str, object]) -> dict[str, object]:
    return {k: v for k, v in kwargs.items() if k != REQUEST_KEY}


class PruningInfoMixin:
    """For a ``BaseProcessingInfo``: the HF processor never sees the ``tokenprune`` request key."""

    def get_hf_processor(self, **kwargs: object):
        return super().get_hf_processor(**_without_request_key(kwargs))

    def tokenprune_default(self) -> dict[str, Any] | None:
        """The model's ``tokenprune`` entry (validated when the processor is built)."""
        return getattr(self.get_hf_config(), CONFIG_KEY, None)


class PruningProcessorMixin:
    """For a ``BaseMultiModalProcessor``: attach the request's strategy to every image it processes."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        resolve_request(None, self.info.tokenprune_default())  # a bad hf_overrides entry fails at startup

    def _call_hf_processor(self, hf_data: Mapping[str, object], hf_kwargs: Mapping[str, object]):
        request = hf_kwargs.get(REQUEST_KEY)
        out = super()._call_hf_processor(hf_data, _without_request_key(hf_kwargs))
        choice = resolve_request(request, self.info.tokenprune_default())
        images = self.tokenprune_image_count(out)
        if images:
            out[CHOICE_FIELD] = encode_choice(choice).unsqueeze(0).repeat(images, 1)
        return out

    def _get_mm_fields_config(self, hf_inputs: Any, hf_processor_mm_kwargs: Mapping[str, object]):
        fields = dict(super()._get_mm_fields_config(hf_inputs, hf_processor_mm_kwargs))
        fields[CHOICE_FIELD] = MultiModalFieldConfig.batched("image", keep_on_cpu=True)
        return fields

    def tokenprune_image_count(self, out: Mapping[str, Any]) -> int:
        """Images in the HF processor's output."""
        raise NotImplementedError


def choice_of_item(item: Any):
    """The `VllmPruning` (or ``None``: dense) of one processed image item (a ``MultiModalKwargsItem``)."""
    field = item.get(CHOICE_FIELD) if item is not None else None
    if field is None:
        return None
    return decode_choice(field.data)
