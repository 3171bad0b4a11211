"""Train the tiny Moving-Shapes video model (a stock `Qwen2VLForConditionalGeneration`, CPU, from scratch, seeded).

Videos of 18 frames (9 steps), 324 visual tokens each (`tokenprune.vqa_video.model`), questions that
need time (`tokenprune.vqa_video.moving_shapes`). Every step draws ``--batch`` fresh training videos
from the seeded training stream; each video is one row holding all six of its questions as isolated
turns (every turn sees only the video and itself, exactly the single-question inference prompt), so the
video is encoded once for six answers. The loss covers the answer words only.

``--aux-weight`` adds a per-token auxiliary loss on the tower's merged tokens: linear heads predict
the colour and the motion direction of the shape in each token's cell (`moving_shapes.cell_labels`),
so the from-scratch tower learns what and where quickly (the image model's tower pretraining does
the same job); the heads are discarded, the saved model is the stock class.

Further training signals for the count and order questions, all off by default (the shipped model,
``tokenprune/assets/tiny-video-qwen2vl``, was trained without them; its model card says what they did):
``--time-weight`` (each video token's hidden state after LLM layer ``--time-layer`` predicts its step),
``--profile-weight`` (each question's last hidden state predicts the named shape's visibility at every
step), ``--lookups`` (training-only "is the red shape visible at step four ?" questions),
``--all-counts`` (count questions about every shape), ``--query-weight`` (the question's last token
predicts the colours it names) and ``--tie-colour`` (the tower's colour head scores tokens against the
colour words' embeddings). With all of them off the script draws the same weights and data as before.
``--init`` continues from a saved run (embedding rows are matched by word).

``--counter`` draws the step counter into every frame (`moving_shapes.render(counter=True)`: one pixel of the
step's colour in every 8x8 px cell, so every visual token sees its step); ``--step-weight`` then adds a
per-token loss on the tower's merged tokens predicting their step, and ``--lookups-from`` starts the
``--lookups`` questions only at that training step (a curriculum). The model card reports what they reached.

``--presence-weight`` makes every merged token of the tower predict which colours its step shows (the tower
attends across its whole temporal patch, i.e. the whole step, so it can); ``--table-weight`` makes each
question's last token, after LLM layer ``--time-layer``, predict the video's whole (step x colour) visibility
table. With ``--counter`` these give count and order a route the LLM learns quickly: average the video tokens
(each knows its step and what its step shows), then read the named colour's row. ``--presence-direction``
adds each visible colour's direction to both targets; ``--presence-by-step`` asks the tower for the table row
of its own step instead (it stalled). The model card reports what they reached.

``--single-frame`` trains the single-frame baseline: every frame of every video (training and
test) is replaced by the middle step, so the model sees one frame only; its accuracy shows what a
single frame can answer (chance, by the generator's construction).

Usage::

    OMP_NUM_THREADS=1 python examples/train_tiny_video_vqa.py --out runs/tiny-video-qwen2vl --max-minutes 50 \
        --steps 1500 --batch 8 --lr 1.5e-3 --warmup 50 --eval-every 150   # the shipped model
    OMP_NUM_THREADS=1 python examples/train_tiny_video_vqa.py --out runs/single-frame --single-frame --max-minutes 12 \
        --steps 400 --batch 8 --lr 1.5e-3 --warmup 50 --eval-every 150   # the single-frame baseline

The log (``training_log.json`` next to the weights) records the accuracy per question kind on the
fixed test split at every evaluation, the step reached and the minutes spent.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from tokenprune.vqa_video import moving_shapes as ms
from tokenprune.vqa_video.model import TinyVideoVQA, Vocab, build_config


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="runs/tiny-video-qwen2vl")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch", type=int, default=16, help="videos per step (six questions each)")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--eval-every", type=int, default=200)
    p.add_argument("--eval-size", type=int, default=600, help="test questions per evaluation (the full split at the end)")
    p.add_argument("--max-minutes", type=float, default=None, help="stop (and save) after this much training time")
    p.add_argument("--single-frame", action="store_true", help="the single-frame baseline: every frame is the middle step")
    p.add_argument("--init", default=None, help="start from the weights saved in this directory (continue a run)")
    p.add_argument("--aux-weight", type=float, default=1.0, help="weight of the per-token colour/direction loss (0: off)")
    p.add_argument("--counter", action="store_true",
                   help="draw the step counter into every frame (moving_shapes.render(counter=True); the checkpoint "
                   "records it in frames.json, and evaluate() / tokenprune eval --video draw its frames alike)")
    p.add_argument("--step-weight", type=float, default=0.0,
                   help="weight of the per-token step loss on the tower's merged tokens (each predicts its time step, "
                   "read from the frame's step counter; 0: off)")
    p.add_argument("--presence-weight", type=float, default=0.0,
                   help="weight of the per-step presence loss on the tower's merged tokens: every token predicts which of "
                   "the six colours are visible anywhere in its step (the tower attends across its whole temporal patch, so "
                   "it can; the LLM then counts and orders by averaging tokens; 0: off)")
    p.add_argument("--presence-by-step", action="store_true",
                   help="the presence head predicts the (step x colour) table with only the token's own step row filled "
                   "(one-hot step times the colours visible), so the plain average of the video tokens is the whole table, "
                   "linearly")
    p.add_argument("--presence-direction", action="store_true",
                   help="the presence head and the table also hold each visible colour's motion direction (colour x "
                   "direction), so direction questions get the same average-the-tokens route as count and order")
    p.add_argument("--table-weight", type=float, default=0.0,
                   help="weight of the presence-table loss: at each question's last token, the hidden state after layer "
                   "--time-layer predicts the whole (step x colour) visibility table of the video (0: off)")
    p.add_argument("--lookups-from", type=int, default=0, help="add the --lookups questions from this training step on")
    p.add_argument("--time-weight", type=float, default=0.0,
                   help="weight of the per-token step loss on the LLM's hidden states after layer --time-layer (0: off)")
    p.add_argument("--time-layer", type=int, default=1, help="the LLM layer (1-based) whose output predicts each video token's step")
    p.add_argument("--lookups", type=int, default=0,
                   help="training-only 'is the X shape visible at step N ?' questions per video (moving_shapes.lookup_questions)")
    p.add_argument("--profile-weight", type=float, default=0.0,
                   help="weight of the visibility-profile loss: at each question naming one shape, the last hidden state "
                   "predicts whether that shape is visible at each of the 9 steps (0: off)")
    p.add_argument("--all-counts", action="store_true",
                   help="training rows also ask the hiding count of the other two shapes (answers one..seven)")
    p.add_argument("--tie-colour", action="store_true",
                   help="the tower's colour head scores each merged token against the LLM's input embeddings of the colour "
                   "words, so a red shape's tokens lie along the embedding of 'red'")
    p.add_argument("--query-weight", type=float, default=0.0,
                   help="weight of the named-colour loss: at each question's last token, the hidden state after layer "
                   "--time-layer predicts which colours the question names (0: off)")
    p.add_argument("--text-layers", type=int, default=None)
    p.add_argument("--text-width", type=int, default=None)
    return p.parse_args(argv)


COUNTER = False
"""Whether frames carry the step counter (``--counter``; `moving_shapes.render`)."""


def frames_of(video: ms.Video, single_frame: bool) -> np.ndarray:
    return ms.render(video, [ms.MIDDLE_STEP] * ms.STEPS if single_frame else None, counter=COUNTER)


def extra_counts(video: ms.Video) -> list[ms.Question]:
    """Training-only count questions about the two shapes the test's count question never asks about."""
    words = ms.STEP_WORDS
    return [ms.Question("count", f"how many times is the {t.color} shape hidden ?", words[len(t.hidden) - 1])
            for t in video.tracks[:2]]  # fmt: skip


def profile(video: ms.Video, question: ms.Question) -> list[float]:
    """Whether the one shape ``question`` names is visible at each step (NaN for a question naming two)."""
    named = [t for t in video.tracks if f" {t.color} " in f" {question.text} "]
    if len(named) != 1:
        return [float("nan")] * ms.STEPS
    return [float(s not in named[0].hidden) for s in range(ms.STEPS)]


def presence(video: ms.Video) -> np.ndarray:
    """``(steps, colours)`` float32: whether each of the six colours is visible at each step (0 for colours not in the video)."""
    out = np.zeros((ms.STEPS, len(ms.COLORS)), dtype=np.float32)
    for track in video.tracks:
        for s in range(ms.STEPS):
            out[s, list(ms.COLORS).index(track.color)] = s not in track.hidden
    return out


def motion(video: ms.Video) -> np.ndarray:
    """``(steps, colours x directions)`` float32: at each step, the direction (one-hot) of every colour visible then."""
    out = np.zeros((ms.STEPS, len(ms.COLORS), len(ms.DIRECTIONS)), dtype=np.float32)
    for track in video.tracks:
        for s in range(ms.STEPS):
            if s not in track.hidden:
                out[s, list(ms.COLORS).index(track.color), list(ms.DIRECTIONS).index(track.direction)] = 1
    return out.reshape(ms.STEPS, -1)


def evaluate(vqa: TinyVideoVQA, test: ms.Split, single_frame: bool, limit: int | None = None, batch: int = 48) -> dict:
    """Accuracy per question kind (and overall) on the first ``limit`` test questions."""
    n = len(test) if limit is None else min(limit, len(test))
    right, total = defaultdict(int), defaultdict(int)
    vqa.model.eval()
    for start in range(0, n, batch):
        idx = range(start, min(start + batch, n))
        frames = [frames_of(test.videos[test.video_index[i]], single_frame) for i in idx]
        answers = vqa.answer(frames, [test.questions[i].text for i in idx])
        for a, i in zip(answers, idx):
            kind = test.questions[i].kind
            total[kind] += 1
            right[kind] += a == test.questions[i].answer
    vqa.model.train()
    out = {k: right[k] / total[k] for k in total}
    out["all"] = sum(right.values()) / max(sum(total.values()), 1)
    out["temporal_mean"] = sum(out[k] for k in total) / max(len(total), 1)
    return out


def main(argv=None) -> dict:
    args = parse_args(argv)
    global COUNTER
    COUNTER = args.counter
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    from transformers import Qwen2VLForConditionalGeneration

    vocab = Vocab.default(training_words=bool(args.lookups or args.all_counts))
    text = {k: v for k, v in (("num_hidden_layers", args.text_layers), ("hidden_size", args.text_width)) if v}
    model = Qwen2VLForConditionalGeneration(build_config(vocab, text=text or None))
    model.config._attn_implementation = "sdpa"
    if args.init:  # continue from a saved run (same config; the optimizer and schedule start afresh)
        init = TinyVideoVQA.load(args.init)
        state = init.model.state_dict()
        for key in ("model.language_model.embed_tokens.weight", "lm_head.weight"):  # rows by word: vocabularies may differ
            rows = model.state_dict()[key].clone()
            for i, word in enumerate(init.vocab.words):
                rows[vocab.id(word)] = state[key][i]
            state[key] = rows
        model.load_state_dict(state)
    vqa = TinyVideoVQA(model, vocab, counter=args.counter)  # saved with the checkpoint: evaluation draws alike
    width = model.config.vision_config.hidden_size
    heads = torch.nn.ModuleDict({"colour": torch.nn.Linear(width, len(ms.COLORS) + 1),
                                 "direction": torch.nn.Linear(width, len(ms.DIRECTIONS) + 1),
                                 "step": torch.nn.Linear(model.config.text_config.hidden_size, ms.STEPS),
                                 "profile": torch.nn.Linear(model.config.text_config.hidden_size, ms.STEPS),
                                 "query": torch.nn.Linear(model.config.text_config.hidden_size, len(ms.COLORS)),
                                 "tower_step": torch.nn.Linear(width, ms.STEPS),
                                 "presence": torch.nn.Linear(width, len(ms.COLORS) * (ms.STEPS if args.presence_by_step else 1)),
                                 "table": torch.nn.Linear(model.config.text_config.hidden_size, ms.STEPS * len(ms.COLORS)),
                                 "motion": torch.nn.Linear(width, len(ms.COLORS) * len(ms.DIRECTIONS)),
                                 "motion_table": torch.nn.Linear(model.config.text_config.hidden_size,
                                                                 len(ms.COLORS) * len(ms.DIRECTIONS))})  # fmt: skip
    captured: dict = {}

    def capture(module, args, output):
        captured["merged"] = output.pooler_output

    def capture_text(module, args, output):
        captured["text"] = output[0] if isinstance(output, tuple) else output

    hook = model.model.visual.register_forward_hook(capture) if args.aux_weight or args.step_weight or args.presence_weight else None
    def capture_last(module, args, output):
        captured["last"] = output

    if args.time_weight or args.query_weight or args.table_weight:
        model.model.language_model.layers[args.time_layer - 1].register_forward_hook(capture_text)
    if args.profile_weight:
        model.model.language_model.norm.register_forward_hook(capture_last)
    video_id = vocab.id("<|video_pad|>")
    colour_ids = torch.tensor([vocab.id(c) for c in ms.COLORS])
    token_step = torch.arange(ms.STEPS).repeat_interleave(324 // ms.STEPS)
    test = ms.split("test")
    rng = np.random.default_rng(ms.SPLIT_SEEDS["train"])
    opt = torch.optim.AdamW([*model.parameters(), *heads.parameters()], lr=args.lr, betas=(0.9, 0.98), weight_decay=0.05)
    total, warm = args.steps, args.warmup
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(s, total) / total))
    )
    log: dict = {"args": vars(args), "visual_tokens_per_video": 324, "evals": [], "losses": []}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.time()
    train_right, train_total = defaultdict(int), defaultdict(int)
    model.train()
    step = 0
    for step in range(1, total + 1):
        videos = [ms.make_video(rng) for _ in range(args.batch)]
        lookups = args.lookups if step > args.lookups_from else 0
        asked = [ms.questions(v, rng) + ms.lookup_questions(v, rng, lookups) + (extra_counts(v) if args.all_counts else [])
                 for v in videos]  # fmt: skip
        dialogues = [[(q.text, q.answer) for q in qs] for qs in asked]
        inputs = vqa.encode_dialogues([frames_of(v, args.single_frame) for v in videos], dialogues)
        output = model(**inputs)
        loss, captured_logits = output.loss, {"logits": output.logits.detach()}
        answer_loss = loss.detach()
        step_loss = torch.zeros(())
        extras: dict = {}
        if hook is not None:
            merged = captured.pop("merged")
            merged = torch.cat(list(merged)) if isinstance(merged, (list, tuple)) else merged
            labels = [ms.cell_labels(v) for v in videos]
            colour = torch.from_numpy(np.stack([c for c, _ in labels])).flatten()
            direction = torch.from_numpy(np.stack([d for _, d in labels])).flatten()
            ce = torch.nn.functional.cross_entropy
            if args.tie_colour:  # background: the head's own row; colours: the embeddings of their words
                words = model.model.language_model.embed_tokens.weight[colour_ids]
                colour_logits = torch.cat([heads["colour"](merged)[:, :1], merged @ words.T], dim=1)
            else:
                colour_logits = heads["colour"](merged)
            loss = loss + args.aux_weight * (ce(colour_logits, colour) + ce(heads["direction"](merged), direction))
            if args.step_weight:
                tower_step_loss = ce(heads["tower_step"](merged), token_step.repeat(len(videos)))
                step_loss = tower_step_loss.detach()
                loss = loss + args.step_weight * tower_step_loss
        query = inputs["labels"].roll(-1, dims=1) != -100  # the token before each answer: the question's last
        if args.query_weight:
            named = torch.tensor([[float(f" {c} " in f" {q.text} ") for c in ms.COLORS] for qs in asked for q in qs])
            logits = heads["query"](captured["text"][query])
            loss = loss + args.query_weight * torch.nn.functional.binary_cross_entropy_with_logits(logits, named)
        if args.table_weight:  # every turn of a video predicts that video's whole table
            tables = torch.from_numpy(np.stack([presence(v).ravel() for v, qs in zip(videos, asked) for _ in qs]))
            table_loss = torch.nn.functional.binary_cross_entropy_with_logits(heads["table"](captured["text"][query]), tables)
            loss = loss + args.table_weight * table_loss
            extras["table_loss"] = table_loss.item()
            if args.presence_direction:  # and each colour's direction (any step it is visible)
                moving = torch.from_numpy(np.stack([motion(v).max(0) for v, qs in zip(videos, asked) for _ in qs]))
                logits = heads["motion_table"](captured["text"][query])
                motion_table_loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, moving)
                loss = loss + args.table_weight * motion_table_loss
                extras["motion_table_loss"] = motion_table_loss.item()
        if args.time_weight:
            hidden = captured.pop("text")[inputs["input_ids"] == video_id]  # (videos x 324, width), in token order
            step_loss = torch.nn.functional.cross_entropy(heads["step"](hidden), token_step.repeat(len(videos)))
            loss = loss + args.time_weight * step_loss
        if args.profile_weight:
            targets = torch.tensor([profile(v, q) for v, qs in zip(videos, asked) for q in qs])  # row-major = turn order
            named = ~targets.isnan().any(1)
            logits = heads["profile"](captured.pop("last")[query])[named]
            profile_loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, targets[named])
            loss = loss + args.profile_weight * profile_loss
            extras["profile_loss"] = profile_loss.item()
        if args.presence_weight:  # (videos, steps, colours) -> one row per merged token (t-major, 36 per step)
            seen = torch.from_numpy(np.stack([presence(v) for v in videos])).repeat_interleave(324 // ms.STEPS, dim=1)
            if args.presence_by_step:  # (videos, tokens, steps x colours): the token's own step row only
                own = torch.nn.functional.one_hot(token_step, ms.STEPS).float()  # (tokens, steps)
                seen = (own[None, :, :, None] * seen[:, :, None, :]).flatten(2)
            presence_loss = torch.nn.functional.binary_cross_entropy_with_logits(heads["presence"](merged), seen.flatten(0, 1))
            loss = loss + args.presence_weight * presence_loss
            extras["presence_loss"] = presence_loss.item()
            if args.presence_direction:  # each token: the direction of every colour visible at its step
                moving = torch.from_numpy(np.stack([motion(v) for v in videos])).repeat_interleave(324 // ms.STEPS, dim=1)
                motion_loss = torch.nn.functional.binary_cross_entropy_with_logits(heads["motion"](merged), moving.flatten(0, 1))
                loss = loss + args.presence_weight * motion_loss
                extras["motion_loss"] = motion_loss.item()
        with torch.no_grad():  # training accuracy per question kind (the answer positions, in question order)
            logits = captured_logits["logits"]
            at = inputs["labels"] != -100
            hit = (logits[:, :-1][at[:, 1:]].argmax(-1) == inputs["labels"][at]).tolist()
            for q, h in zip([q for qs in asked for q in qs], hit):
                train_right[q.kind] += h
                train_total[q.kind] += 1
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([*model.parameters(), *heads.parameters()], 1.0)
        opt.step()
        sched.step()
        minutes = (time.time() - start) / 60
        if step % 10 == 0:
            log["losses"].append({"step": step, "loss": round(answer_loss.item(), 4), "total": round(loss.item(), 4),
                                  "step_loss": round(step_loss.item(), 4), "minutes": round(minutes, 2)})  # fmt: skip
            log["losses"][-1].update({k: round(v, 4) for k, v in extras.items()})
            log["losses"][-1]["train_acc"] = {k: round(train_right[k] / train_total[k], 3) for k in train_total}
            train_right.clear()
            train_total.clear()
            print(log["losses"][-1]["train_acc"], {k: round(v, 3) for k, v in extras.items()}, end=" ")
            print(f"step {step} answer loss {answer_loss.item():.4f} step loss {step_loss.item():.4f} total {loss.item():.4f}"
                  f" {minutes:.1f} min", flush=True)  # fmt: skip
        done = args.max_minutes is not None and minutes >= args.max_minutes
        if step % args.eval_every == 0 or done or step == total:
            acc = evaluate(vqa, test, args.single_frame, args.eval_size)
            log["evals"].append({"step": step, "minutes": round(minutes, 2), **{k: round(v, 4) for k, v in acc.items()}})
            print(f"eval step {step}: {acc}", flush=True)
            vqa.save(out)
            (out / "training_log.json").write_text(json.dumps(log, indent=1))
        if done:
            break
    final = evaluate(vqa, test, args.single_frame)
    log["final"] = {"step": step, "minutes": round((time.time() - start) / 60, 2), **{k: round(v, 4) for k, v in final.items()}}
    log["chance"] = ms.CHANCE
    print("final", log["final"], flush=True)
    vqa.save(out)
    (out / "training_log.json").write_text(json.dumps(log, indent=1))
    return log


if __name__ == "__main__":
    main()
