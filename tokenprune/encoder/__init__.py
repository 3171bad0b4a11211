"""Vision-encoder side: token reduction between the blocks of a ViT (timm, open_clip, HF towers)."""

from .context import EncoderContext
from .engine import EncoderEngine, EncoderStats

__all__ = ["EncoderContext", "EncoderEngine", "EncoderStats"]
