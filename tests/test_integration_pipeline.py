"""transformers `pipeline("image-text-to-text")` over a wrapped LLaVA == `generate` on the same inputs.

The processor is built locally (`tiny_processor.py`); the pipeline runs the model's own
`generate`, so the wrapped model must prune inside it exactly as in a direct call. Each test also
checks that the pipeline call itself pruned (the stats of that call show fewer visual tokens in the
deeper layers) and that pruning changed something measurable against the dense model.
"""

from __future__ import annotations

import pytest
import torch
from transformers import AutoProcessor, LlavaForConditionalGeneration, pipeline

import tiny_models as tm
import tiny_processor as tp
import tokenprune

SCHEDULE = dict(layer_list=[2, 4, 6], image_token_ratio_list=[0.5, 0.25, 0.125])
GEN = dict(max_new_tokens=6, do_sample=False)


def _generate_text(model, processor, image, text: str) -> str:
    inputs = processor(images=image, text=text, return_tensors="pt")
    out = model.generate(**inputs, **GEN)
    return processor.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True).strip()


def _assert_pruned_call(model, num_layers: int = 8) -> None:
    stats = model.tokenprune.stats
    assert stats is not None, "the pipeline call did not reach the wrapped model's prefill"
    per_layer = [row[0] for row in stats.visual_tokens]
    assert per_layer == [16, 16, 8, 8, 4, 4, 2, 2][:num_layers]


@pytest.fixture(scope="module")
def processor():
    return tp.make_llava_processor()


def test_pipeline_text_prompt_equals_generate(processor):
    model = tm.make_llava(dtype=torch.float32)
    image = tp.random_image(0)
    text = "w5 w6 <image> w7 w8 w9 w10"
    dense = _generate_text(model, processor, image, text)
    tokenprune.wrap(model, "pyramiddrop", **SCHEDULE)
    direct = _generate_text(model, processor, image, text)
    tokenprune.unwrap(model)
    tokenprune.wrap(model, "pyramiddrop", **SCHEDULE)  # fresh handle: stats below come from the pipeline
    assert model.tokenprune.stats is None
    pipe = pipeline("image-text-to-text", model=model, processor=processor)
    result = pipe(images=image, text=text, generate_kwargs=GEN, return_full_text=False)
    assert result[0]["generated_text"].strip() == direct
    assert len(direct.split()) == GEN["max_new_tokens"]
    _assert_pruned_call(model)
    assert direct != dense, "pruning 7/8 of the image tokens left a random model's output unchanged"


def test_pipeline_chat_messages_equal_generate(processor):
    """Chat-style input: the pipeline applies the processor's chat template, then generates."""
    model = tokenprune.wrap(tm.make_llava(dtype=torch.float32, seed=3), "pyramiddrop", **SCHEDULE)
    image = tp.random_image(1)
    messages = [{"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": "w9 w12 w40"}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True)
    assert text.split() == ["<image>", "w9", "w12", "w40", "w3"]
    direct = _generate_text(model, processor, image, text)
    pipe = pipeline("image-text-to-text", model=model, processor=processor)
    result = pipe(text=messages, generate_kwargs=GEN, return_full_text=False)
    assert result[0]["generated_text"].strip() == direct
    _assert_pruned_call(model)


def test_pipeline_loaded_from_a_saved_path(tmp_path, processor):
    """The usual route: build the pipeline from a checkpoint folder, then wrap ``pipe.model``."""
    model = tm.make_llava(dtype=torch.float32, seed=5)
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    pipe = pipeline("image-text-to-text", model=str(tmp_path), dtype=torch.float32)
    assert isinstance(pipe.model, LlavaForConditionalGeneration)
    tokenprune.wrap(pipe.model, "pyramiddrop", **SCHEDULE)
    images = [tp.random_image(2), tp.random_image(3)]
    texts = ["w11 <image> w12 w13 w14", "w20 w21 w22 w23 <image> w24 w25"]  # different lengths: padded batch
    results = pipe(images=images, text=texts, batch_size=2, generate_kwargs=GEN, return_full_text=False)
    _assert_pruned_call(pipe.model)
    assert pipe.model.tokenprune.stats.num_visual == [16, 16], "the two prompts did not run as one batch"
    reloaded = AutoProcessor.from_pretrained(tmp_path)
    expected = [_generate_text(pipe.model, reloaded, img, text) for img, text in zip(images, texts)]
    flat = [r[0] if isinstance(r, list) else r for r in results]
    assert [r["generated_text"].strip() for r in flat] == expected
