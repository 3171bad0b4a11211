"""Moving-Shapes: a generated video QA set whose questions need time, and a tiny Qwen2-VL video model.

`tokenprune.vqa_video.moving_shapes` makes the videos and questions (seeded); `tokenprune.vqa_video.model`
builds the stock `Qwen2VLForConditionalGeneration` that `examples/train_tiny_video_vqa.py` trains on them.
"""
