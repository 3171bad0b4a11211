"""Encoder-side reduction inside a VLM, and the engine that drives both stacks of one model.

`VisionBridge` makes a VLM's vision side hand fewer features to the projector and keeps the
stock model consistent with that:

* an `EncoderEngine` on the vision tower reduces between its blocks (``encoder`` part);
* a forward hook on the tower reduces the feature layer the projector reads (``projector`` part),
  scored by the tower block that would read those features next;
* forward pre-hooks on the head and on the VLM module (registered first, so every other hook sees
  their result) shrink each image's placeholder run in ``input_ids`` to the surviving feature
  count, with the attention mask, labels and position ids that the shorter prompt has (new rows
  are re-padded on their padding side). The result is what the stock model would get from a
  processor that emitted fewer placeholders, so forward, ``generate`` and training run unchanged.
* during cached decoding the full-length 2-D mask and position ids ``generate`` keeps are mapped
  onto the shortened prompt (the mapping is stored on the KV cache).
* families that pack images of different sizes into one sequence (Qwen2-VL, Qwen2.5-VL;
  `VisionTower.packed`) select per image after the patch merger and keep every token's original
  position, and so do LLaVA-OneVision's videos (per video, on the pooled frame grid): see
  `tokenprune.encoder.packed`.

Logits of a prefill cover the shortened prompt; `WrapHandle.input_columns` maps them back.
`CompositeEngine` runs a bridge and an LLM-side `Engine` together for a `VisionLanguageStrategy`.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch
from torch import Tensor, nn

from ..vision_language import VisionLanguageStrategy
from ..engine import Engine
from ..engine.compat import cache_from_kwargs, cache_from_output
from ..engine.hooks import HookOwner
from ..engine.selection import select
from ..errors import ScheduleError, UnsupportedFeatureError
from ..interfaces import ScoreContext
from .context import EncoderContext
from .engine import EncoderEngine
from .packed import PackedSelector
from .patches import select_patches
from .placeholders import COMPACTION_ATTR, Compaction, plan_compaction, plan_removal

__all__ = ["VisionBridge", "CompositeEngine"]

_PREFILL_KEYS = ("input_ids", "attention_mask", "position_ids", "labels", "inputs_embeds")


class VisionBridge(HookOwner):
    """Encoder-side and projector-side reduction of one VLM, plus the placeholder bookkeeping.

    Args:
        model: the wrapped VLM.
        adapter: its (LLM-side) adapter, which locates the vision tower (`Adapter.vision_tower`).
        encoder_adapter: the encoder adapter of the tower.
        strategy: the composite strategy (its ``encoder`` and ``projector`` parts are used here).
    """

    def __init__(self, model: nn.Module, adapter: Any, encoder_adapter: Any, strategy: VisionLanguageStrategy):
        self.model = model
        self.adapter = adapter
        self.vision = adapter.vision_tower(model)
        self.encoder_adapter = encoder_adapter
        self.strategy = strategy
        self.stack = adapter.locate(model)
        self.tower_stack = None
        self.tower_engine = None
        self.selector = None
        HookOwner.__init__(self)
        if self.vision.packed is not None:
            self._init_packed(strategy)
        elif self.vision.projector is not None:
            self._init_projected(strategy)
        else:
            self._init_features(strategy, encoder_adapter)

    def _init_packed(self, strategy: VisionLanguageStrategy) -> None:
        """Per-image selection after the patch merger of a packed tower (`tokenprune.encoder.packed`)."""
        if strategy.encoder is not None:
            raise UnsupportedFeatureError(self.vision.packed.encoder_refusal(type(self.model).__name__))
        self.vision.packed.check_selection(strategy.projector)
        self.selector = PackedSelector(self.vision.packed, strategy.projector)
        self.tower_count = self.per_image = 0
        self.kept = self.kept_per_image = -1  # counts are per image; see `projector_tokens`

    def _init_features(self, strategy: VisionLanguageStrategy, encoder_adapter: Any) -> None:
        """Reduction inside the tower and/or on the feature layer the projector reads."""
        encoder_adapter.check(self.vision.tower)
        self.tower_stack = encoder_adapter.locate(self.vision.tower)
        depth = self.tower_stack.num_layers
        feature = self.vision.feature_layer
        if strategy.encoder is not None:
            try:  # only blocks 0..feature-1 shape what the projector reads: schedule those
                self.tower_engine = EncoderEngine(self.vision.tower, encoder_adapter, strategy.encoder, depth=feature)
            except ScheduleError:
                layers = strategy.encoder.scheduler.resolve_layers(depth)  # raises for a schedule wrong for any depth
                fix = f"use blocks 1..{feature - 1}" if feature > 1 else "this tower has no such block"
                raise ScheduleError(
                    f"Encoder reductions at blocks {list(layers)} cannot change the features the projector reads (the "
                    f"output of block {feature - 1}); {fix}."
                ) from None
        if strategy.projector is not None and feature >= depth:
            raise UnsupportedFeatureError(
                "Projector-side selection scores with the tower block after the feature layer, but the projector reads "
                "the last block's output. Use an encoder-side strategy instead."
            )
        prefix = self.tower_stack.num_prefix
        patches = self.vision.patches_per_image
        tower_count = patches
        if self.tower_engine is not None:
            tower_count = strategy.encoder.scheduler.plan(feature, [patches]).visual_tokens(feature - 1)[0]
        self.tower_count = tower_count
        self.kept = tower_count if strategy.projector is None else min(int(patches * strategy.projector.ratio), tower_count)
        extra = 0 if self.vision.strip_prefix else prefix
        self.per_image, self.kept_per_image = patches + extra, self.kept + extra

    def _init_projected(self, strategy: VisionLanguageStrategy) -> None:
        """Reduction on the projector's output (the tower's output must stay whole)."""
        if strategy.encoder is not None:
            raise UnsupportedFeatureError(
                f"Reduction inside the vision tower of {type(self.model).__name__} is not supported: the tower's output "
                "feeds a reshape that needs the full patch grid. Use projector=ProjectorSelection(...) instead."
            )
        tokens = self.vision.patches_per_image
        self.tower_count = tokens
        self.kept = min(int(tokens * strategy.projector.ratio), tokens)
        self.per_image, self.kept_per_image = tokens, self.kept

    # -- installation -------------------------------------------------------------------------
    def install(self) -> None:
        """Attach every hook; on any failure remove what was attached (never a half-applied wrap)."""
        try:
            if self.tower_engine is not None:
                self.tower_engine.install()
            if self.selector is not None:
                self.selector.install()
                if self.strategy.projector.ratio < 1.0:
                    self._install_prompt_hooks()
                    self._handles.append(self.stack.vlm.register_forward_hook(self._after_vlm, always_call=True))
                return
            if self.strategy.projector is not None and self.vision.projector is not None:
                self._handles.append(self.vision.projector.register_forward_hook(self._after_projector))
            elif self.strategy.projector is not None:
                self._handles.append(self.vision.tower.register_forward_hook(self._after_tower))
            if self.kept_per_image < self.per_image:
                self._install_prompt_hooks()
        except Exception:
            self.remove()
            raise

    def _install_prompt_hooks(self) -> None:
        self._handles.append(self.stack.vlm.register_forward_pre_hook(self._on_vlm, with_kwargs=True, prepend=True))
        if self.stack.head is not None:
            self._handles.append(self.stack.head.register_forward_pre_hook(self._on_head, with_kwargs=True, prepend=True))
            self._handles.append(self.stack.head.register_forward_hook(self._after_head, always_call=True))

    def remove(self) -> None:
        """Detach every hook of this part (idempotent)."""
        if self.tower_engine is not None:
            self.tower_engine.remove()
        if self.selector is not None:
            self.selector.remove()
        self._detach_hooks()

    # -- statistics ---------------------------------------------------------------------------
    @property
    def compaction(self) -> Compaction | None:
        """The last prefill's column map (``None`` when it removed no placeholder)."""
        return getattr(self._local, "compaction", None)

    def projector_tokens(self) -> int | list[int]:
        """Patch features each image hands to the projector (a packed tower: the kept count of every
        image and video of the last prefill, in order; ``[]`` before one)."""
        if self.selector is not None:
            return list(getattr(self._local, "kept_counts", []))
        return self.kept

    # -- projector stage ----------------------------------------------------------------------
    def _after_tower(self, module: nn.Module, args: tuple, output: Any) -> Any:
        hidden_states = getattr(output, "hidden_states", None)
        feature = self.vision.feature_layer
        if hidden_states is None or hidden_states[feature] is None:
            raise UnsupportedFeatureError(
                "The vision tower was called without returning its feature layer; projector-side selection reads "
                "hidden_states[vision_feature_layer]. Call the VLM (or get_image_features) as transformers does."
            )
        x = hidden_states[feature]
        prefix = self.tower_stack.num_prefix
        batch, n = x.shape[:2]
        if n - prefix != self.tower_count:
            raise RuntimeError(
                f"The feature layer holds {n - prefix} patch tokens but tokenprune planned {self.tower_count}; "
                "the encoder reducer kept a different number than its schedule."
            )
        if self.kept >= n - prefix:
            return None
        block = self.tower_stack.blocks[feature]
        visual = torch.ones(batch, n, dtype=torch.bool, device=x.device)
        visual[:, :prefix] = False
        bias = self.tower_engine.key_bias() if self.tower_engine is not None else None
        sizes = torch.exp(bias) if bias is not None else None
        ctx = EncoderContext.at_block(  # scored by the block that would read these features next
            self.encoder_adapter, block, feature, x, positions=torch.arange(n, device=x.device).expand(batch, -1),
            valid=torch.ones_like(visual), visual=visual, num_prefix=prefix, sizes=sizes, key_bias=bias,
        )  # fmt: skip
        sel, reduced = select_patches(self.strategy.projector, ctx, self.kept)
        self._local.selection = sel
        output.hidden_states = tuple(reduced if i == feature else h for i, h in enumerate(hidden_states))
        return output

    def _after_projector(self, module: nn.Module, args: tuple, output: Tensor) -> Tensor | None:
        """Reduce the projected tokens of every tile (no attention here: reducers that decide by
        similarity, such as `BipartiteMerge` with `NullScorer`, or scorers that read the features)."""
        x = output
        batch, n = x.shape[:2]
        if n != self.per_image:
            raise RuntimeError(f"The projector returned {n} tokens per tile but tokenprune planned {self.per_image}.")
        if self.kept >= n:
            return None
        ones = torch.ones(batch, n, dtype=torch.bool, device=x.device)

        def no_attention() -> Tensor:
            raise UnsupportedFeatureError(
                "Projector-output selection has no attention to score by (the tower's tokens were reshaped before the "
                "projector). Use NullScorer with BipartiteMerge (merge redundant tokens), or a scorer that reads "
                "ctx.hidden."
            )

        ctx = ScoreContext(
            layer_index=-1,
            layer=module,
            hidden=x,
            positions=torch.arange(n, device=x.device).expand(batch, -1),
            valid=ones,
            visual=ones,
            query=torch.zeros(batch, 1, dtype=torch.long, device=x.device),
            query_weight=torch.ones(batch, 1, device=x.device),
            _attention=no_attention,
        )
        selection = self.strategy.projector
        chosen = select(
            ctx, selection.scorer, selection.reducer, ones, torch.full((batch,), self.kept, device=x.device),
            protected=~ones, expect=self.kept,
            miscount=lambda counts: f"The projector reducer kept {counts} tokens per tile, not {self.kept}.",
        )  # fmt: skip
        return chosen.features

    # -- placeholder compaction ---------------------------------------------------------------
    def _on_head(self, module: nn.Module, args: tuple, kwargs: dict):
        self._local.compacted = False
        result = self._prefill(args, kwargs)
        if result is not None:
            self._local.compacted = True
        return result

    def _after_head(self, module: nn.Module, args: tuple, output: Any) -> None:
        self._local.compacted = False

    def _on_vlm(self, module: nn.Module, args: tuple, kwargs: dict):
        if getattr(self._local, "compacted", False):
            self._local.compacted = False  # the head already rewrote this call's inputs
            return None
        if self.adapter.has_visual_inputs(kwargs):
            return self._prefill(args, kwargs)
        cache = cache_from_kwargs(kwargs)
        if cache is None or cache.get_seq_length() == 0:
            self._local.compaction = None  # a text-only prompt
        return self._decode(kwargs)

    def _prefill(self, args: tuple, kwargs: dict):
        cache = cache_from_kwargs(kwargs)
        if cache is None or cache.get_seq_length() == 0:
            self._local.compaction = None  # a new prompt: forget the previous one's layout
        if not self.adapter.has_visual_inputs(kwargs):
            return None
        if cache is not None and cache.get_seq_length() > 0:
            return None  # the LLM engine rejects images on a filled cache with its own message
        kwargs = dict(kwargs)
        if args:
            if len(args) > 1:
                raise UnsupportedFeatureError(
                    "Pass the VLM's inputs by keyword (input_ids=..., pixel_values=...) when encoder-side reduction is on."
                )
            kwargs["input_ids"], args = args[0], ()
        ids, embeds = kwargs.get("input_ids"), kwargs.get("inputs_embeds")
        mask = kwargs.get("attention_mask")
        if mask is not None and mask.dim() != 2:
            raise UnsupportedFeatureError("Encoder-side reduction needs a 2-D attention mask (or none).")
        if self.selector is not None:
            return self._prefill_packed(args, kwargs, cache)
        placeholders = self.adapter.visual_mask(self.stack, ids, embeds)
        plan = plan_compaction(placeholders, mask, self.per_image, self.kept_per_image)
        self._local.compaction = plan
        if plan is None:
            return args, kwargs
        if ids is not None:
            kwargs["input_ids"] = plan.take(ids, self.vision.pad_token_id)
        if embeds is not None:
            kwargs["inputs_embeds"] = plan.take(embeds, 0.0)
        base = torch.ones(placeholders.shape, dtype=torch.long, device=placeholders.device) if mask is None else mask
        new_mask = plan.take(base, 0)
        if mask is not None or not bool(plan.real.all()):
            kwargs["attention_mask"] = new_mask
        if kwargs.get("labels") is not None:
            kwargs["labels"] = plan.take(kwargs["labels"], -100)
        padded_here = mask is None and not bool(plan.real.all())  # rows the caller left unpadded now are
        if kwargs.get("position_ids") is not None or padded_here:
            positions = (new_mask.long().cumsum(-1) - 1).masked_fill(new_mask == 0, 1)
            given = kwargs.get("position_ids")
            kwargs["position_ids"] = positions if given is None else positions.to(given.dtype)
        if cache is not None:
            setattr(cache, COMPACTION_ATTR, plan)
        return args, kwargs

    def _prefill_packed(self, args: tuple, kwargs: dict, cache: Any):
        """Encode the images (unless ``generate`` already did), select per image, drop the other
        placeholders and keep every surviving token's original position ids."""
        packed = self.vision.packed
        kwargs = packed.encode(kwargs)
        ids, embeds, mask = kwargs.get("input_ids"), kwargs.get("inputs_embeds"), kwargs.get("attention_mask")
        ref = ids if ids is not None else embeds
        batch, length = ref.shape[:2]
        drop = torch.zeros(batch, length, dtype=torch.bool, device=ref.device)
        outputs = dict(kwargs["mm_encoder_outputs"])
        counts: list[int] = []
        for modality, token in packed.modalities.items():
            output = outputs.get(modality)
            if output is None:
                continue
            reduced, keep, kept = self.selector.select(output)
            stack = replace(self.stack, visual_token_ids=(token,))
            flat = self.adapter.visual_mask(stack, ids, embeds).flatten()  # the order features fill placeholders
            if int(flat.sum()) != keep.numel():
                raise ValueError(
                    f"The prompt holds {int(flat.sum())} {modality} placeholders but the vision tower gave {keep.numel()} "
                    f"{modality} tokens; build the prompt with the model's processor."
                )
            gone = torch.zeros_like(flat)
            gone[flat.nonzero()[:, 0]] = ~keep.to(flat.device)
            drop |= gone.view(batch, length)
            outputs[modality] = reduced
            counts += kept
        kwargs["mm_encoder_outputs"] = outputs
        self._local.kept_counts = counts
        plan = plan_removal(drop, mask)
        self._local.compaction = plan
        if plan is None:
            return args, kwargs
        positions = kwargs.get("position_ids")
        if positions is None:
            positions = packed.prompt_positions(kwargs)
        if ids is not None:
            kwargs["input_ids"] = plan.take(ids, self.vision.pad_token_id)
        if embeds is not None:
            kwargs["inputs_embeds"] = plan.take(embeds, 0.0)
        base = torch.ones(batch, length, dtype=torch.long, device=ref.device) if mask is None else mask
        new_mask = plan.take(base, 0)
        if mask is not None or not bool(plan.real.all()):
            kwargs["attention_mask"] = new_mask
        if kwargs.get("labels") is not None:
            kwargs["labels"] = plan.take(kwargs["labels"], -100)
        for key in ("mm_token_type_ids", "token_type_ids"):
            if kwargs.get(key) is not None:
                kwargs[key] = plan.take(kwargs[key], 0)
        if positions.dim() == 2:
            kwargs["position_ids"] = plan.take(positions, 1)
        else:  # (rows, B, L): the original (t, h, w) of every kept token
            taken = plan.take(positions.permute(1, 2, 0), 1).permute(2, 0, 1).contiguous()
            if taken.shape[0] == 4:  # row 0: 1-D text positions for the mask, of the prompt as it now is
                text = new_mask.long().cumsum(-1) - 1
                taken[0] = text.masked_fill(new_mask == 0, 0).to(taken.device, taken.dtype)
            kwargs["position_ids"] = taken
        if cache is not None:
            setattr(cache, COMPACTION_ATTR, plan)
        else:  # a cache the model creates itself gets the map after the call (`_after_vlm`)
            self._local.pending = plan
        return args, kwargs

    def _after_vlm(self, module: nn.Module, args: tuple, output: Any) -> None:
        """Store the prefill's column map on a KV cache the model created itself (decode positions need it)."""
        plan, self._local.pending = getattr(self._local, "pending", None), None
        if plan is not None and output is not None and hasattr(output, "get"):
            cache = cache_from_output(output)
            if cache is not None:
                setattr(cache, COMPACTION_ATTR, plan)

    def _decode(self, kwargs: dict):
        """Map a decode step's mask and positions, still laid out for the original prompt, onto the
        shortened one. Inputs that already match the cache (a caller who knows the layout) pass."""
        cache = cache_from_kwargs(kwargs)
        plan: Compaction | None = getattr(cache, COMPACTION_ATTR, None) if cache is not None else None
        if plan is None or cache.get_seq_length() == 0:
            return None
        kwargs = dict(kwargs)
        stored = cache.get_seq_length()
        tokens = kwargs.get("input_ids") if kwargs.get("input_ids") is not None else kwargs.get("inputs_embeds")
        new = tokens.shape[1]
        grown = stored - plan.idx.shape[1]  # tokens cached after the prompt
        offset = plan.length - plan.idx.shape[1]  # original minus shortened prompt width
        mask = kwargs.get("attention_mask")
        positions = kwargs.get("position_ids")
        if self.selector is not None:
            return self._decode_packed(kwargs, plan, grown, new)
        original = False
        if mask is None:
            if not bool(plan.real.all()):  # rows re-padded at prefill: their padding stays masked
                tail = torch.ones(plan.idx.shape[0], grown + new, dtype=torch.long, device=plan.idx.device)
                kwargs["attention_mask"] = torch.cat([plan.real.long(), tail], dim=1)
            if positions is not None and positions.dim() == 2:  # generate counts from the original prompt
                original = bool((positions[:, :1].to(plan.idx.device) == stored + offset).all())
        elif mask.dim() == 2 and mask.shape[1] == plan.length + grown + new:
            kwargs["attention_mask"] = plan.decode_mask(mask)
            original = True
        if original and positions is not None:
            kwargs["position_ids"] = positions - plan.removed.to(positions.device).unsqueeze(1)
        return (), kwargs


    def _decode_packed(self, kwargs: dict, plan: Compaction, grown: int, new: int):
        """Decode positions stay the original ones (``generate`` passes them); only the mask is mapped.
        Without position ids they are built as the model would for the full prompt."""
        mask = kwargs.get("attention_mask")
        if mask is None:
            if not bool(plan.real.all()):
                tail = torch.ones(plan.idx.shape[0], grown + new, dtype=torch.long, device=plan.idx.device)
                kwargs["attention_mask"] = torch.cat([plan.real.long(), tail], dim=1)
        elif mask.dim() == 2 and mask.shape[1] == plan.length + grown + new:
            kwargs["attention_mask"] = plan.decode_mask(mask)
        if kwargs.get("position_ids") is None:
            current = kwargs.get("attention_mask")
            if current is None:
                current = torch.ones(plan.idx.shape[0], plan.idx.shape[1] + grown + new, dtype=torch.long, device=plan.idx.device)
            text = (current.long().cumsum(-1) - 1)[:, -new:] + plan.removed.to(current.device).unsqueeze(1)
            kwargs["position_ids"] = self.vision.packed.decode_positions(text)
        return (), kwargs


class CompositeEngine:
    """Runs a `VisionBridge` and an LLM-side `Engine` for one `VisionLanguageStrategy`.

    Exposes what `WrapHandle` reads (``layers``, ``stack``, ``stats``, ``stages``, ``final``) from the
    LLM side, and the vision side's numbers through `tokens_per_layer`.
    """

    def __init__(self, model: nn.Module, adapter: Any, encoder_adapter: Any, strategy: VisionLanguageStrategy):
        self.bridge = None
        if strategy.encoder is not None or strategy.projector is not None:
            self.bridge = VisionBridge(model, adapter, encoder_adapter, strategy)
        self.llm = Engine(model, adapter, strategy.llm) if strategy.llm is not None else None
        self.stack = adapter.locate(model)
        self.layers = self.llm.layers if self.llm is not None else ()

    def install(self) -> None:
        """Attach every hook; on any failure remove what was attached (never a half-applied wrap)."""
        try:
            if self.bridge is not None:
                self.bridge.install()
            if self.llm is not None:
                self.llm.install()
        except Exception:
            self.remove()
            raise

    def remove(self) -> None:
        """Detach every hook of this part (idempotent)."""
        if self.llm is not None:
            self.llm.remove()
        if self.bridge is not None:
            self.bridge.remove()

    @property
    def stats(self):
        """The LLM engine's per-call stats (``None`` without an LLM part)."""
        return self.llm.stats if self.llm is not None else None

    @property
    def stages(self):
        """The LLM engine's stages of the last prefill."""
        return self.llm.stages if self.llm is not None else []

    @property
    def final(self):
        """The LLM engine's ``(original length, last stage)``, if it removed tokens."""
        return self.llm.final if self.llm is not None else None

    @property
    def compaction(self) -> Compaction | None:
        """The last prefill's placeholder column map (``None`` when nothing was compacted)."""
        return self.bridge.compaction if self.bridge is not None else None

    def tokens_per_layer(self) -> dict[str, Any]:
        """Visual tokens per layer across both stacks for the last forward.

        ``{"vision": [block][image], "projector": [image], "llm": [layer][sample]}``; a part that
        did not run is ``None``.
        """
        vision = projector = None
        if self.bridge is not None:
            encoder_stats = self.bridge.tower_engine.stats if self.bridge.tower_engine is not None else None
            vision = encoder_stats.visual_tokens if encoder_stats is not None else None
            images = len(vision[0]) if vision else None
            kept = self.bridge.projector_tokens()
            if isinstance(kept, list):
                projector = kept
            else:
                projector = [kept] * images if images else [kept]
        llm = self.stats.visual_tokens if self.stats is not None else None
        return {"vision": vision, "projector": projector, "llm": llm}
