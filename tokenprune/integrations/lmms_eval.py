"""lmms-eval model ``tokenprune``: any supported transformers VLM, wrapped with a strategy.

```bash
lmms-eval --model tokenprune \
    --model_args pretrained=llava-hf/llava-1.5-7b-hf,strategy=pyramiddrop,layer_list=[8,16,24],image_token_ratio_list=[0.5,0.25,0.125] \
    --tasks ok_vqa_val2014 --batch_size 1
```

``pretrained`` is a local folder or hub id that `AutoModelForImageTextToText` and `AutoProcessor`
load; ``strategy`` is a registered strategy name (``none`` evaluates the dense model through the
same code, for a baseline); every other unknown key is a strategy option (list values in ``[...]``
are parsed as JSON). Known keys: ``device``, ``device_map``, ``dtype``, ``attn_implementation``,
``batch_size``, ``max_new_tokens``, ``chat_template``.

lmms-eval (>= 0.7) finds the model through the ``lmms_eval.models`` entry point that this package
declares (`manifest`). The model class itself subclasses lmms-eval's ``lmms`` base, which is only
importable when lmms-eval is installed, so it is built on first access (`TokenpruneLMM`, or
`model_class` with any base); importing this module never imports lmms-eval.

Requests are answered one at a time (batch size 1, as lmms-eval's own HF models do); the per-request
token statistics of the wrapped model are kept in ``stats`` (visual tokens per layer, FLOPs saved).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

import torch

from ..api import handle_of, wrap

__all__ = ["TokenpruneEvalModel", "model_class", "manifest", "MODEL_NAME", "CLASS_NAME"]

MODEL_NAME = "tokenprune"
"""The name given to ``lmms-eval --model``."""
CLASS_NAME = "TokenpruneLMM"
"""The lmms-eval model class, built lazily as an attribute of this module."""

_KNOWN = {"pretrained", "strategy", "device", "device_map", "dtype", "attn_implementation", "batch_size",
          "max_batch_size", "max_new_tokens", "chat_template", "image_token"}


def _option(value: Any) -> Any:
    """lmms-eval hands ``key=[8,16,24]`` over as the string ``"[8,16,24]"``: parse such lists."""
    if isinstance(value, str) and value.strip().startswith("["):
        try:
            return json.loads(value)
        except json.JSONDecodeError as err:
            raise ValueError(f"Could not parse the list {value!r}: write it as JSON, e.g. [8,16,24].") from err
    return value


def _dtype(value: Any) -> Any:
    if value in (None, "auto") or isinstance(value, torch.dtype):
        return value
    dtype = getattr(torch, str(value), None)
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"dtype={value!r} is not a torch dtype; use e.g. float16, bfloat16, float32 or auto.")
    return dtype


class TokenpruneEvalModel:
    """The lmms-eval model logic, independent of lmms-eval's base class (see `model_class`).

    Args:
        pretrained: folder or hub id of a transformers image-text-to-text model and its processor.
        strategy: registered strategy name, or ``"none"`` for the dense model.
        device: where the model runs when no ``device_map`` is given (default: CUDA if available).
        device_map: passed to ``from_pretrained`` (e.g. ``"auto"`` to spread the model over GPUs).
        dtype: ``auto``, ``float16``, ``bfloat16``, ``float32``...
        attn_implementation: ``sdpa`` (default), ``eager`` or ``flash_attention_2``.
        batch_size: must be 1 (requests are answered one at a time).
        max_new_tokens: default generation length when the task does not set one.
        chat_template: a Jinja template replacing the processor's own.
        image_token: the placeholder put before the question for each image when the prompt has none.
        **options: strategy options, e.g. ``ratio=0.5`` or ``layer_list=[8,16,24]``.
    """

    is_simple = True

    def __init__(
        self,
        pretrained: str,
        strategy: str = "pyramiddrop",
        device: str | None = None,
        device_map: str | None = None,
        dtype: str = "auto",
        attn_implementation: str | None = None,
        batch_size: int | str = 1,
        max_batch_size: int | None = None,
        max_new_tokens: int = 128,
        chat_template: str | None = None,
        image_token: str | None = None,
        **options: Any,
    ) -> None:
        super().__init__()
        if int(batch_size) != 1:
            raise ValueError(f"batch_size={batch_size}: the tokenprune lmms-eval model answers one request at a time; use 1.")
        from transformers import AutoModelForImageTextToText, AutoProcessor

        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        load: dict[str, Any] = {"dtype": _dtype(dtype)}
        if device_map:
            load["device_map"] = device_map
        if attn_implementation:
            load["attn_implementation"] = attn_implementation
        self.processor = AutoProcessor.from_pretrained(pretrained)
        model = AutoModelForImageTextToText.from_pretrained(pretrained, **load)
        if not device_map:
            model = model.to(self.device)
        self.model = model.eval()
        if chat_template is not None:
            self.processor.chat_template = chat_template
        self.image_token = image_token or getattr(self.processor, "image_token", None) or "<image>"
        self.max_new_tokens = int(max_new_tokens)
        self.strategy = str(strategy)
        self.options = {key: _option(value) for key, value in options.items()}
        if self.strategy.lower() != "none":
            wrap(self.model, self.strategy, **self.options)
        elif self.options:
            raise ValueError(f"strategy=none takes no strategy options, got {sorted(self.options)}.")
        self.stats: list[Any] = []
        self.task_dict: dict = getattr(self, "task_dict", {})

    # -- prompts ---------------------------------------------------------------------------------
    @property
    def tokenizer(self) -> Any:
        """The processor's tokenizer (lmms-eval reads it for prompt lengths and stop strings)."""
        return self.processor.tokenizer

    def _prompt(self, context: str, num_images: int) -> str:
        """The question with one image placeholder per image, through the chat template if any."""
        if num_images and self.image_token not in context:
            context = " ".join([self.image_token] * num_images) + "\n" + context
        if getattr(self.processor, "chat_template", None):
            messages = [{"role": "user", "content": [{"type": "text", "text": context}]}]
            return self.processor.apply_chat_template(messages, add_generation_prompt=True)
        return context

    def _visuals(self, doc_to_visual: Callable | None, doc_id: int, task: str, split: str) -> list[Any]:
        if doc_to_visual is None:
            return []
        visuals = doc_to_visual(self.task_dict[task][split][doc_id])
        return [v for v in (visuals or []) if v is not None]

    def _inputs(self, text: str, visuals: Sequence[Any]) -> dict:
        kwargs: dict[str, Any] = {"text": text, "return_tensors": "pt"}
        if visuals:
            kwargs["images"] = list(visuals)
        inputs = self.processor(**kwargs)
        device = self.model.device if hasattr(self.model, "device") else self.device
        out = {}
        for key, value in inputs.items():
            if isinstance(value, torch.Tensor):
                value = value.to(device)
                if value.is_floating_point():
                    value = value.to(self.model.dtype)
            out[key] = value
        return out

    def _record(self) -> None:
        handle = getattr(self.model, "tokenprune", None)
        self.stats.append(handle.stats if handle is not None else None)

    # -- lmms-eval API ---------------------------------------------------------------------------
    def generate_until(self, requests: Sequence[Any]) -> list[str]:
        """Greedy (unless the task says otherwise) generation, cut at the task's ``until`` strings."""
        answers = []
        for request in requests:
            context, gen_kwargs, doc_to_visual, doc_id, task, split = request.args
            gen_kwargs = dict(gen_kwargs or {})
            until = gen_kwargs.pop("until", None) or []
            until = [until] if isinstance(until, str) else list(until)
            visuals = self._visuals(doc_to_visual, doc_id, task, split)
            inputs = self._inputs(self._prompt(context, len(visuals)), visuals)
            generate = {"max_new_tokens": int(gen_kwargs.pop("max_new_tokens", self.max_new_tokens))}
            temperature = float(gen_kwargs.pop("temperature", 0) or 0)
            generate["do_sample"] = bool(gen_kwargs.pop("do_sample", temperature > 0))
            if generate["do_sample"]:
                generate["temperature"] = temperature
                if gen_kwargs.get("top_p") is not None:
                    generate["top_p"] = float(gen_kwargs["top_p"])
            if gen_kwargs.get("num_beams") is not None:
                generate["num_beams"] = int(gen_kwargs["num_beams"])
            with torch.inference_mode():
                out = self.model.generate(**inputs, **generate)
            self._record()
            text = self.tokenizer.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
            for stop in until:
                if stop:
                    text = text.split(stop)[0]
            answers.append(text.strip())
        return answers

    def loglikelihood(self, requests: Sequence[Any]) -> list[tuple[float, bool]]:
        """Log-probability of each continuation given its context (and images), and whether greedy."""
        results = []
        for request in requests:
            context, target, doc_to_visual, doc_id, task, split = request.args
            if not isinstance(target, str):
                target = target(self.task_dict[task][split][doc_id])
            visuals = self._visuals(doc_to_visual, doc_id, task, split)
            prompt = self._prompt(context, len(visuals))
            inputs = self._inputs(prompt + target, visuals)
            prompt_len = self._inputs(prompt, visuals)["input_ids"].shape[1]
            ids = inputs["input_ids"]
            # Labels on the continuation only: the strategy then ranks tokens for the last prompt
            # token (its training query), the same selection generation from this prompt would use.
            labels = ids.clone()
            labels[:, :prompt_len] = -100
            with torch.inference_mode():
                logits = self.model(**inputs, labels=labels).logits
            self._record()
            positions = torch.arange(prompt_len - 1, ids.shape[1] - 1, device=logits.device)
            rows = self._rows(logits, positions)  # logits predicting each continuation token
            targets = ids[0, prompt_len:].to(rows.device)
            logprobs = torch.log_softmax(rows.to(torch.promote_types(rows.dtype, torch.float32)), dim=-1)
            total = float(logprobs.gather(1, targets[:, None]).sum())
            results.append((total, bool((rows.argmax(-1) == targets).all())))
        return results

    def _rows(self, logits: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Logits of the slots holding original ``positions`` (text is never removed, so all exist)."""
        handle = getattr(self.model, "tokenprune", None)
        kept = handle.kept_positions() if handle is not None else None
        if kept is None:
            return logits[0, positions]
        idx, valid = (t[0].to(logits.device) for t in kept)
        match = (idx[None, :] == positions[:, None]) & valid[None, :]
        return logits[0, match.int().argmax(1)]

    def generate_until_multi_round(self, requests: Sequence[Any]) -> list[str]:
        """Multi-round generation is not supported yet: raises `NotImplementedError`."""
        raise NotImplementedError("The tokenprune lmms-eval model does not support multi-round generation yet.")

    def unwrap(self) -> None:
        """Detach the strategy (the dense model stays loaded)."""
        if getattr(self.model, "tokenprune", None) is not None:
            handle_of(self.model).remove()


_CLASSES: dict[type, type] = {}


def model_class(base: type | None = None) -> type:
    """The lmms-eval model class: `TokenpruneEvalModel` on top of ``base`` (default: lmms-eval's ``lmms``)."""
    if base is None:
        try:
            from lmms_eval.api.model import lmms as base
        except ImportError as err:  # pragma: no cover - depends on the environment
            raise ImportError(
                "lmms-eval is not installed; `pip install tokenprune-vlm[integrations]` (or `pip install lmms-eval`)."
            ) from err
    if base not in _CLASSES:
        _CLASSES[base] = type(CLASS_NAME, (TokenpruneEvalModel, base), {"__module__": __name__, "is_simple": True})
    return _CLASSES[base]


def manifest() -> Any:
    """Entry-point payload for lmms-eval's ``lmms_eval.models`` group: registers ``--model tokenprune``."""
    from lmms_eval.models.registry_v2 import ModelManifest

    return ModelManifest(model_id=MODEL_NAME, simple_class_path=f"{__name__}.{CLASS_NAME}")


def __getattr__(name: str) -> Any:
    if name == CLASS_NAME:  # lmms-eval imports the class by this name; build it on first access
        return model_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
