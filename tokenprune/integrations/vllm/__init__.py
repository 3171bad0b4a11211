"""tokenprune's projector-side strategies inside vLLM (``pip install "tokenprune-vlm[vllm]"``).

vLLM loads `register` through its ``vllm.general_plugins`` entry point in every process it starts.
It registers one model class per supported family with vLLM's model registry (lazily: nothing here
imports vLLM or the model code until vLLM asks for the class):

| stock architecture | tokenprune architecture |
|---|---|
| ``LlavaForConditionalGeneration`` | ``TokenpruneLlavaForConditionalGeneration`` |
| ``Qwen2VLForConditionalGeneration`` | ``TokenpruneQwen2VLForConditionalGeneration`` |
| ``Qwen2_5_VLForConditionalGeneration`` | ``TokenpruneQwen2_5_VLForConditionalGeneration`` |

A model runs with the plugin when its config names the tokenprune architecture, set through
``hf_overrides`` (`hf_overrides` builds it); the ``tokenprune`` entry of the same overrides is the
default strategy, and a request may choose its own with ``mm_processor_kwargs={"tokenprune": {...}}``
(``{"strategy": "none"}``: dense). See docs/integrations.md, section vLLM.

Modules: `config` (options, validation, per-request choices; no vLLM import), `positions` (M-RoPE
positions of kept tokens; no vLLM import), and the vLLM classes in ``_llava``, ``_qwen_vl`` and
``_processing`` (private: they import vLLM, which only the vLLM venv has).
"""

from __future__ import annotations

from .config import ARCHITECTURES, CONFIG_KEY, DENSE, REQUEST_KEY, hf_overrides, projector_strategies

__all__ = ["register", "hf_overrides", "ARCHITECTURES", "CONFIG_KEY", "REQUEST_KEY", "DENSE", "projector_strategies"]

_CLASSES = {
    "TokenpruneLlavaForConditionalGeneration": "tokenprune.integrations.vllm._llava:TokenpruneLlavaForConditionalGeneration",
    "TokenpruneQwen2VLForConditionalGeneration": "tokenprune.integrations.vllm._qwen_vl:TokenpruneQwen2VLForConditionalGeneration",
    "TokenpruneQwen2_5_VLForConditionalGeneration": "tokenprune.integrations.vllm._qwen_vl:TokenpruneQwen2_5_VLForConditionalGeneration",
}


def register() -> None:
    """vLLM's general-plugin hook: register the tokenprune architectures (safe to call repeatedly)."""
    from vllm import ModelRegistry

    known = set(ModelRegistry.get_supported_archs())
    for arch, target in _CLASSES.items():
        if arch not in known:
            ModelRegistry.register_model(arch, target)
