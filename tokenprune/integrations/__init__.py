"""Bridges to tools that run a wrapped model: each imports its tool lazily, so core never depends on it.

* `tokenprune.integrations.lmms_eval`: a model for lmms-eval (``lmms-eval --model tokenprune``).
* `tokenprune.integrations.vllm`: a vLLM plugin running the projector-side strategies inside vLLM
  (``LLM(...)`` and ``vllm serve``; installed in vLLM's own venv).

Pipelines, the Trainer, PEFT and accelerate need no bridge: a wrapped model is still the stock
transformers model (see docs, "Integrations").
"""
