"""Moving-Shapes (the video QA set) and the tiny Qwen2-VL video model's inputs."""

from __future__ import annotations

import numpy as np
import torch

from tokenprune.vqa_video import moving_shapes as ms
from tokenprune.vqa_video.model import GRID, VISUAL_TOKENS, TinyVideoVQA, Vocab, build_config, video_pixels


def test_splits_are_seeded_and_balanced():
    a, b = ms.split("test", size=40), ms.split("test", size=40)
    assert a.videos == b.videos and [q.text for q in a.questions] == [q.text for q in b.questions]
    assert np.array_equal(ms.render(a.videos[3]), ms.render(b.videos[3]))
    assert ms.split("train", size=5).videos != a.videos[:5]
    test = ms.split("test")
    assert len(test) == 3000 and ms.render(test.videos[0]).shape == (18, 48, 48, 3)
    for kind, chance in ms.CHANCE.items():
        answers = [q.answer for q in test.questions if q.kind == kind]
        shares = np.unique(answers, return_counts=True)[1] / len(answers)
        if kind != "order":  # order answers a colour: balanced between the first and second one named
            assert len(shares) == round(1 / chance) and shares.max() < chance + 0.08, kind
    first = [q.answer == q.text.split()[6] for q in test.questions if q.kind == "order"]
    assert 0.45 < np.mean(first) < 0.55


def test_the_middle_frame_carries_no_answer():
    """Positions at the middle step lie in the same central square for every direction; A and C are never
    hidden there; B is visible there as often when it appears as when it leaves."""
    test = ms.split("test")
    visible = {True: [], False: []}
    for video in test.videos:
        for track in video.tracks:
            x, y = track.position(ms.MIDDLE_STEP)
            assert ms.MARGIN <= x <= ms.FRAME_PX - ms.MARGIN - track.size and ms.MARGIN <= y <= ms.FRAME_PX - ms.MARGIN - track.size
            for step in (0, ms.STEPS - 0.5):  # the whole path (last frame at 8.5 steps) stays on the canvas
                px, py = track.position(step)
                assert 0 <= px and px + track.size <= ms.FRAME_PX and 0 <= py and py + track.size <= ms.FRAME_PX
        a, b, c = video.tracks
        assert ms.MIDDLE_STEP not in a.hidden + c.hidden and a.hidden[0] != c.hidden[0]
        visible[video.b_appears].append(ms.MIDDLE_STEP not in b.hidden)
    assert abs(np.mean(visible[True]) - np.mean(visible[False])) < 0.1
    single = ms.render(test.videos[0], [ms.MIDDLE_STEP] * ms.STEPS)
    assert all(np.array_equal(single[0], f) for f in single)


def test_every_cell_shows_the_step_counter_and_the_middle_step_is_the_same_in_every_video():
    videos = ms.split("test", size=20).videos
    colours = {ms.counter_colour(s) for s in range(ms.STEPS)}
    assert len(colours) == ms.STEPS
    for video in videos[:3]:
        frames, plain = ms.render(video, counter=True), ms.render(video)
        keep = np.ones(frames.shape[1:3], dtype=bool)
        keep[:: ms.COUNTER_EVERY, :: ms.COUNTER_EVERY] = False
        assert np.array_equal(frames[:, keep], plain[:, keep])  # only the counter's pixels differ
        for f in range(ms.STEPS * ms.FRAMES_PER_STEP):
            dots = frames[f, :: ms.COUNTER_EVERY, :: ms.COUNTER_EVERY].reshape(-1, 3)
            assert (dots == ms.counter_colour(f // ms.FRAMES_PER_STEP)).all()
    dots = {ms.render(v, [ms.MIDDLE_STEP], counter=True)[0, :: ms.COUNTER_EVERY, :: ms.COUNTER_EVERY].tobytes() for v in videos}
    assert len(dots) == 1
    assert ms.FRAME_PX % ms.COUNTER_EVERY == 0 and ms.COUNTER_EVERY == 8  # one dot per visual token (4 px patch, 2x2 merge)


def test_pixels_match_the_stock_qwen2_vl_video_processor():
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

    frames = ms.render(ms.split("test", size=1).videos[0])
    processor = Qwen2VLVideoProcessor(
        patch_size=4, temporal_patch_size=2, merge_size=2, do_resize=False, image_mean=[0.5] * 3, image_std=[0.5] * 3,
        do_sample_frames=False, cap_pixels_per_frame=False,
    )  # fmt: skip
    out = processor(videos=[torch.from_numpy(frames).permute(0, 3, 1, 2)], return_tensors="pt")
    assert out["video_grid_thw"].tolist() == [list(GRID)]
    assert torch.allclose(out["pixel_values_videos"], video_pixels(frames), atol=1e-6)
    assert VISUAL_TOKENS == 324


def test_isolated_turns_equal_single_question_prompts():
    """A training row (video + six isolated turns) gives every answer the logits of its single-question prompt."""
    from transformers import Qwen2VLForConditionalGeneration

    vocab = Vocab.default()
    torch.manual_seed(0)
    model = Qwen2VLForConditionalGeneration(build_config(vocab)).eval().double()
    vqa = TinyVideoVQA(model, vocab)
    test = ms.split("test", size=2)
    frames = [ms.render(v) for v in test.videos]
    dialogues = [[(q.text, q.answer) for q, i in zip(test.questions, test.video_index) if i == k] for k in range(2)]
    rows = vqa.encode_dialogues(frames, dialogues)
    rows["pixel_values_videos"] = rows["pixel_values_videos"].double()
    logits = model(**rows).logits
    b, col = (rows["labels"] != -100).nonzero(as_tuple=True)
    multi = logits[b, col - 1]
    singles = []
    for k in range(2):
        single = vqa.encode([frames[k]] * 6, [q for q, _ in dialogues[k]])
        single["pixel_values_videos"] = single["pixel_values_videos"].double()
        singles.append(model(**single).logits[:, -1])
    assert (multi - torch.cat(singles)).abs().max().item() < 1e-12


def test_sweep_points_are_solved_to_their_flops_targets():
    """Each curve's knob puts the planned visual FLOPs share near 50% / 25% (paper convention on the
    tiny model's 4 layers); DyCoke cannot go below its pivot frames, pooling has coarse grids."""
    from tokenprune.registry import get_registry
    from tokenprune.vqa_video.evaluate import DEFAULT_POINTS, TOLERANCE, planned_fraction, solve_knob
    from tokenprune.vqa_video.model import TEXT_DIMS

    dims = TEXT_DIMS["num_hidden_layers"], TEXT_DIMS["hidden_size"], TEXT_DIMS["intermediate_size"]
    for point in DEFAULT_POINTS:
        for target in (0.5, 0.25):
            options, fraction = solve_knob(point, target, *dims, steps=400 if point.strategy == "pooling" else 50)
            assert abs(fraction - target) <= TOLERANCE, (point.label, target, fraction)
            assert planned_fraction(get_registry().build(point.strategy, **options), *dims) == fraction
    evs = get_registry().build("evs", ratio=0.5)  # 162 of 324 tokens in every layer
    expected = (4 * 162 * 128**2 + 2 * 162**2 * 128 + 3 * 162 * 128 * 384) / (4 * 324 * 128**2 + 2 * 324**2 * 128 + 3 * 324 * 128 * 384)
    assert abs(planned_fraction(evs, *dims) - expected) < 1e-12


def test_frame_strips_show_each_stage_of_a_video(tmp_path):
    """EVS at the projector then PyramidDrop: the strip's masks hold the counts the handle reports, the
    first temporal patch is whole after EVS, and every LLM stage keeps a subset of the one before."""
    from transformers import Qwen2VLForConditionalGeneration

    import tokenprune
    from tokenprune.vqa_video.frame_strips import draw_strips, video_stages
    from tokenprune.vqa_video.model import GRID, MERGE

    vocab = Vocab.default()
    torch.manual_seed(0)
    model = Qwen2VLForConditionalGeneration(build_config(vocab)).eval()
    vqa = TinyVideoVQA(model, vocab)
    video = ms.split("test", size=1).videos[0]
    frames = ms.render(video)
    inputs = vqa.encode([frames], ["which way does the red shape move ?"])
    grid = (GRID[0], GRID[1] // MERGE, GRID[2] // MERGE)
    with tokenprune.pruned(model, "temporal_pyramiddrop", temporal_ratio=0.5, layer_list=[1, 2, 3]) as handle:
        model(**inputs)
        stages = video_stages(handle, inputs["input_ids"], vocab.id("<|video_pad|>"), grid)
        per_layer = handle.tokens_per_layer()
    assert [s["kept"] for s in stages] == [per_layer["projector"][0], *[per_layer["llm"][layer][0] for layer in (1, 2, 3)]]
    assert bool(stages[0]["mask"][0].all())  # EVS keeps the first temporal patch whole
    for before, after in zip(stages, stages[1:]):
        assert bool((after["mask"] <= before["mask"]).all())
    draw_strips(frames, stages, str(tmp_path / "strip.png"), title="evs + pyramiddrop")
    assert (tmp_path / "strip.png").stat().st_size > 1000


def test_cell_labels_name_the_shape_drawn_in_the_cell():
    """Labels are taken at the step's middle time (between its two frames) from the shape's box: most
    labelled cells show the shape's colour at the centre in one of the two frames (a circle or triangle
    leaves its box's corners empty: 86% on these 20 videos), nearly every other cell shows background."""
    colours = list(ms.COLORS.values())
    hits = misses = background = other = 0
    for video in ms.split("test", size=20).videos:
        frames = ms.render(video)
        colour, direction = ms.cell_labels(video)
        assert ((colour > 0) == (direction > 0)).all()
        for step, r, c in zip(*np.nonzero(colour >= 0)):
            y, x = int((r + 0.5) * 8), int((c + 0.5) * 8)
            seen = [tuple(int(v) for v in frames[2 * step + k, y, x]) for k in range(2)]
            if colour[step, r, c]:
                hits += tuple(colours[colour[step, r, c] - 1]) in seen
                misses += tuple(colours[colour[step, r, c] - 1]) not in seen
            else:
                background += seen[0] == video.background
                other += seen[0] != video.background
    assert hits > 0.8 * (hits + misses) and background > 0.97 * (background + other)


def test_eval_command_runs_the_video_sweep(tmp_path, capsys):
    """``tokenprune eval --video DIR`` on a saved (untrained) video model: dense and the chosen strategy's points."""
    import json

    from transformers import Qwen2VLForConditionalGeneration

    from tokenprune.tools.cli import main

    vocab = Vocab.default()
    torch.manual_seed(0)
    TinyVideoVQA(Qwen2VLForConditionalGeneration(build_config(vocab)).eval(), vocab).save(tmp_path / "model")
    out = tmp_path / "sweep.json"
    assert main(["eval", "--video", str(tmp_path / "model"), "--strategy", "evs", "--limit", "6", "--no-progress",
                 "--json", str(out)]) == 0  # fmt: skip
    runs = json.loads(out.read_text())["runs"]
    assert [(r["strategy"], r["target"]) for r in runs] == [("dense", 1.0), ("evs", 0.5), ("evs", 0.25)]
    assert all(r["questions"] == 6 for r in runs) and abs(runs[1]["flops_fraction"] - 0.5) < 0.01
    assert main(["eval", "--video", str(tmp_path)]) == 2
    assert "no video model" in capsys.readouterr().err


def test_training_only_lookup_questions_match_the_hiding_steps():
    """``lookup_questions`` (training only) answer "is the X shape visible at step N ?" from the tracks, about
    half yes; the test split's questions never use them, and every word is in the model's vocabulary."""
    rng = np.random.default_rng(5)
    answers = []
    vocab = Vocab.default(training_words=True)
    for video in ms.split("test", size=30).videos:
        for q in ms.lookup_questions(video, rng, 4):
            words = q.text.split()
            track = next(t for t in video.tracks if t.color == words[2])
            step = ms.STEP_WORDS.index(words[7])
            assert q.answer == ("no" if step in track.hidden else "yes")
            assert all(vocab.id(w) != vocab.id("[UNK]") for w in [*words, q.answer])
            answers.append(q.answer)
    assert 0.35 < answers.count("yes") / len(answers) < 0.65
    assert {q.kind for q in ms.split("test").questions} == set(ms.KINDS)


def test_a_checkpoint_records_its_step_counter_and_evaluation_draws_it(tmp_path, monkeypatch):
    """A model trained with ``--counter`` is saved with ``frames.json``; loading it restores the setting,
    and `evaluate` draws its frames with the counter unless told otherwise. A checkpoint without the file
    (the shipped one) reads plain frames."""
    from transformers import Qwen2VLForConditionalGeneration

    from tokenprune.vqa_video import evaluate as video_eval
    from tokenprune.vqa_video.model import FRAMES_FILE, load_tiny_video_vqa

    vocab = Vocab.default()
    torch.manual_seed(0)
    TinyVideoVQA(Qwen2VLForConditionalGeneration(build_config(vocab)).eval(), vocab, counter=True).save(tmp_path / "m")
    vqa = load_tiny_video_vqa(tmp_path / "m")
    assert vqa.counter is True
    drawn = []
    real_render = ms.render
    monkeypatch.setattr(video_eval.ms, "render", lambda *a, **k: drawn.append(k.get("counter")) or real_render(*a, **k))
    test = ms.split("test", size=2)
    video_eval.evaluate(vqa, test, limit=2)
    video_eval.evaluate(vqa, test, limit=2, counter=False)
    assert drawn == [True, True, False, False]
    (tmp_path / "m" / FRAMES_FILE).unlink()
    assert load_tiny_video_vqa(tmp_path / "m").counter is False
