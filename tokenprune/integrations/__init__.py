"""Bridges to tools that run a wrapped model: each imports its tool lazily, so core never depends on it.

* `tokenprune.integrations.lmms_eval`: a model for lmms-eval (``lmms-eval --model tokenprune``).

Pipelines, the Trainer, PEFT and accelerate need no bridge: a wrapped model is still the stock
transformers model (see docs, "Integrations").
"""
