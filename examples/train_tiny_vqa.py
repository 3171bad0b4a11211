"""Train the tiny VQA LLaVA shipped in ``tokenprune/assets/tiny-vqa-llava`` (CPU, from scratch, seeded).

A stock `LlavaForConditionalGeneration` (CLIP vision tower 60 px / 6 px patches = 100 visual
tokens, MLP projector, 6-layer Llama text stack) is trained in two stages:

1. **Tower pretraining** (``--pretrain-steps``): the vision tower alone, with linear shape and colour
   heads on its projector-input features (per image for easy-VQA, per grid cell for Grid-Shapes;
   labels from the training data, `tokenprune.tools.vqa.attributes`). LLaVA starts from a pretrained
   CLIP; trained only through the answer loss, this tower learned colour but never shape.
2. **VQA** (``--steps``): everything, on easy-VQA and Grid-Shapes together. Each step takes half its
   images from each training split, each image with up to ``--turns`` of its questions as one
   multi-turn row (``q1 a1 [EOS] q2 a2 [EOS] ...``); every turn attends only to the image and itself
   (a 4-D mask; positions restart after the image), so each turn is exactly the single-question
   inference prompt and no answer can be read off an earlier turn. Each easy-VQA row also gets
   ``--balanced-yes-no`` generated yes/no questions about its image, half true and half false: the
   dataset's own are mostly "no" for "is there a <colour> shape?", an answer the wording alone gives.
   The loss covers only the answer words and their ``[EOS]``.

The word-level tokenizer is built from the questions and answers of both training splits and saved
with the model; the heads are discarded.

Usage (the defaults reproduce the shipped checkpoint; its MODEL_CARD.md gives the time it took)::

    python examples/train_tiny_vqa.py --out tokenprune/assets/tiny-vqa-llava --threads 2
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from pathlib import Path

import torch

from tokenprune.tools.vqa import attributes
from tokenprune.tools.vqa.datasets import load_split
from tokenprune.tools.vqa.model import TinyVQA, build_config, build_tokenizer, pixel_values, vocabulary


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="tokenprune/assets/tiny-vqa-llava")
    p.add_argument("--steps", type=int, default=2200, help="VQA-stage steps (after the tower pretraining)")
    p.add_argument("--batch", type=int, default=32, help="images per step (half from each dataset)")
    p.add_argument("--turns", type=int, default=16, help="questions per image per step (multi-turn rows)")
    p.add_argument("--lr", type=float, default=7e-4, help="VQA-stage peak learning rate")
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads; 1 is fastest on a shared 2-core machine (2 threads oversubscribe it)")
    p.add_argument("--eval-every", type=int, default=500)
    p.add_argument("--eval-size", type=int, default=300)
    p.add_argument("--max-minutes", type=float, default=None,
                   help="stop early (and save) after this much training time; the log records the step reached")
    p.add_argument("--bf16", action="store_true", help="bfloat16 autocast for the forward (weights stay float32)")
    p.add_argument("--text-width", type=int, default=None, help="text hidden size (MLP 2x, heads of 32 dims)")
    p.add_argument("--text-layers", type=int, default=None)
    p.add_argument("--vision-width", type=int, default=None, help="vision hidden size (MLP 2x, heads of 32 dims)")
    p.add_argument("--vision-layers", type=int, default=None)
    p.add_argument("--pretrain-steps", type=int, default=1500,
                   help="steps of supervised vision-tower pretraining (shape and colour heads) before the VQA stage")
    p.add_argument("--pretrain-batch", type=int, default=128, help="images per pretraining step (half from each dataset)")
    p.add_argument("--pretrain-lr", type=float, default=2e-3)
    p.add_argument("--aux-weight", type=float, default=0.0,
                   help="weight of the shape/colour head loss during the VQA stage (0: heads only in pretraining)")
    p.add_argument("--shared-turns", action="store_true",
                   help="let later turns of a row attend to earlier ones (default: each turn sees only the image and "
                        "itself, exactly the single-question inference prompt)")
    p.add_argument("--balanced-yes-no", type=int, default=4, metavar="K",
                   help="extra yes/no questions per easy-VQA image and step, half true and half false "
                        "(tokenprune.tools.vqa.attributes.balanced_yes_no); 0: the dataset's questions only")
    p.add_argument("--device", default="cpu")
    return p.parse_args()


def evaluate(vqa: TinyVQA, split, limit: int | None = None, batch: int = 128) -> float:
    """Exact-match accuracy of the first answer word on (the first ``limit`` questions of) ``split``."""
    n = len(split) if limit is None else min(limit, len(split))
    right = 0
    vqa.model.eval()
    for start in range(0, n, batch):
        idx = range(start, min(start + batch, n))
        images = split.images[[split.image_index[i] for i in idx]]
        answers = vqa.answer(images, [split.questions[i] for i in idx])
        right += sum(a == split.answers[i] for a, i in zip(answers, idx))
    vqa.model.train()
    return right / max(n, 1)


class AttributeHeads:
    """Linear shape/colour heads on the tower's projector-input features (discarded after training).

    easy-VQA images (one shape each) are read from the mean of all patch features; Grid-Shapes
    images cell by cell, from the mean of the patches whose centres lie in the cell. The heads
    give the from-scratch tower a direct shape signal (see `tokenprune.tools.vqa.attributes`).
    """

    def __init__(self, model, tokenizer, train, device: str):
        cfg = model.config.vision_config
        width = cfg.hidden_size
        self.tower, self.layer = model.model.vision_tower, model.config.vision_feature_layer
        self.heads = torch.nn.ModuleDict({
            "easy_shape": torch.nn.Linear(width, len(attributes.EASY_SHAPES)),
            "easy_colour": torch.nn.Linear(width, len(attributes.EASY_COLORS)),
            "grid_shape": torch.nn.Linear(width, len(attributes.GRID_SHAPES)),
            "grid_colour": torch.nn.Linear(width, len(attributes.GRID_COLORS)),
        }).to(device)  # fmt: skip
        cells = attributes.cell_of_patches(cfg.image_size, cfg.patch_size)
        pool = torch.nn.functional.one_hot(cells, 9).T.float()
        self.pool = (pool / pool.sum(1, keepdim=True)).to(device)  # (9, patches): mean over each cell
        self.images = [s.images for s in train]
        self.labels = [
            tuple(t.to(device) for t in attributes.easy_vqa_attributes(train[0])),
            tuple(t.to(device) for t in attributes.grid_attributes("train")),
        ]  # fmt: skip
        self.device = device

    def features(self, images: torch.Tensor) -> torch.Tensor:
        out = self.tower(pixel_values(images).to(self.device), output_hidden_states=True)
        return out.hidden_states[self.layer][:, 1:]  # drop [CLS], as the projector's "default" select

    def loss(self, easy_rows: list[int], grid_rows: list[int]) -> tuple[torch.Tensor, dict]:
        """Summed cross-entropy of the four heads on these training images (and their accuracies)."""
        ce = torch.nn.functional.cross_entropy
        (e_shape, e_colour), (g_shape, g_colour) = self.labels
        easy = self.features(self.images[0][easy_rows]).mean(1)
        grid = torch.einsum("cp,bpd->bcd", self.pool, self.features(self.images[1][grid_rows])).flatten(0, 1)
        terms = {
            "easy_shape": (self.heads["easy_shape"](easy), e_shape[easy_rows]),
            "easy_colour": (self.heads["easy_colour"](easy), e_colour[easy_rows]),
            "grid_shape": (self.heads["grid_shape"](grid), g_shape[grid_rows].flatten()),
            "grid_colour": (self.heads["grid_colour"](grid), g_colour[grid_rows].flatten()),
        }  # fmt: skip
        loss = sum(ce(logits, y, ignore_index=-1) for logits, y in terms.values())
        accs = {k: ((lg.argmax(-1) == y).float().sum() / (y >= 0).sum().clamp(min=1)).item()
                for k, (lg, y) in terms.items()}  # fmt: skip
        return loss, accs


def pretrain_tower(heads: AttributeHeads, args, gen: torch.Generator, start: float) -> list[dict]:
    """Supervised shape/colour training of the vision tower alone (the VQA stage's head start)."""
    params = [*heads.tower.parameters(), *heads.heads.parameters()]
    opt = torch.optim.AdamW(params, lr=args.pretrain_lr, betas=(0.9, 0.98), weight_decay=0.05)
    total, warm = args.pretrain_steps, args.warmup
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))
    half, log = args.pretrain_batch // 2, []
    for step in range(1, total + 1):
        easy = torch.randint(len(heads.images[0]), (half,), generator=gen).tolist()
        grid = torch.randint(len(heads.images[1]), (half,), generator=gen).tolist()
        with torch.autocast(torch.device(args.device).type, dtype=torch.bfloat16, enabled=args.bf16):
            loss, accs = heads.loss(easy, grid)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        if step % 50 == 0 or step == total:
            row = {"pretrain_step": step, "seconds": time.time() - start, "loss": loss.item(), **accs}
            print("pretrain", json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}),
                  flush=True)  # fmt: skip
            if step % 500 == 0 or step == total:
                log.append(row)
    return log


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    from transformers import LlavaForConditionalGeneration

    train = [load_split("easy-vqa", "train"), load_split("grid-shapes", "train")]
    test = [load_split("easy-vqa", "test"), load_split("grid-shapes", "test")]
    tokenizer = build_tokenizer(vocabulary([t for s in train for t in (*s.questions, *s.answers)]))
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in ("[PAD]", "[BOS]", "[EOS]", "<image>")}
    text_dims, vision_dims = {}, {}
    if args.text_width:
        heads = max(1, args.text_width // 32)
        text_dims.update(hidden_size=args.text_width, intermediate_size=2 * args.text_width, num_attention_heads=heads,
                         num_key_value_heads=max(1, heads // 2))  # fmt: skip
    if args.text_layers:
        text_dims["num_hidden_layers"] = args.text_layers
    if args.vision_width:
        vision_dims.update(hidden_size=args.vision_width, intermediate_size=2 * args.vision_width,
                           num_attention_heads=max(1, args.vision_width // 32))  # fmt: skip
    if args.vision_layers:
        vision_dims["num_hidden_layers"] = args.vision_layers
    config = build_config(len(tokenizer), ids["[PAD]"], ids["[BOS]"], ids["[EOS]"], ids["<image>"],
                          text_dims=text_dims, vision_dims=vision_dims)  # fmt: skip
    config._attn_implementation = "sdpa"
    model = LlavaForConditionalGeneration(config).float().train().to(args.device)
    vqa = TinyVQA(model, tokenizer)
    params = sum(p.numel() for p in model.parameters())
    print(f"parameters: {params:,}; vocabulary: {len(tokenizer)}", flush=True)
    gen = torch.Generator().manual_seed(args.seed)
    heads = AttributeHeads(model, tokenizer, train, args.device)
    log, start = [], time.time()
    if args.pretrain_steps:
        log += pretrain_tower(heads, args, gen, start)

    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embed" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embed" not in n)]
    groups = [{"params": decay, "weight_decay": 0.05}, {"params": no_decay, "weight_decay": 0.0}]
    if args.aux_weight:
        groups.append({"params": list(heads.heads.parameters()), "weight_decay": 0.0})
    opt = torch.optim.AdamW(groups, lr=args.lr, betas=(0.9, 0.98))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / args.warmup)
                                              * 0.5 * (1 + math.cos(math.pi * min(s, args.steps) / args.steps)))  # fmt: skip
    by_image = []  # per split: question indices of each image
    for split in train:
        groups_: list[list[int]] = [[] for _ in range(len(split.images))]
        for q, i in enumerate(split.image_index):
            groups_[i].append(q)
        by_image.append(groups_)
    half = args.batch // 2
    templates = attributes.yes_no_templates(train[0])
    easy_shape, easy_colour = attributes.easy_vqa_attributes(train[0])
    for step in range(1, args.steps + 1):
        images, dialogues, picked = [], [], []
        for split, groups_ in zip(train, by_image):
            rows = torch.randint(len(groups_), (half,), generator=gen).tolist()
            picked.append(rows)
            for i in rows:
                qs = groups_[i]
                pick = torch.randperm(len(qs), generator=gen)[: args.turns].tolist()
                images.append(split.images[i])
                dialogues.append([(split.questions[qs[j]], split.answers[qs[j]]) for j in pick])
                if split is train[0] and args.balanced_yes_no:
                    dialogues[-1] += attributes.balanced_yes_no(
                        templates, int(easy_shape[i]), int(easy_colour[i]), args.balanced_yes_no, gen)
        encoded = vqa.encode_dialogues(torch.stack(images), dialogues, isolate_turns=not args.shared_turns)
        batch = {k: v.to(args.device) for k, v in encoded.items()}
        with torch.autocast(torch.device(args.device).type, dtype=torch.bfloat16, enabled=args.bf16):
            loss = model(**batch, use_cache=False).loss
            if args.aux_weight:
                loss = loss + args.aux_weight * heads.loss(*picked)[0]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % 25 == 0:
            print(f"step {step} loss {loss.item():.4f} lr {sched.get_last_lr()[0]:.2e} {time.time() - start:.0f}s", flush=True)
        out_of_time = args.max_minutes is not None and time.time() - start > 60 * args.max_minutes
        if step % args.eval_every == 0 or step == args.steps or out_of_time:
            accs = {s.name: evaluate(vqa, s, args.eval_size) for s in test}
            log.append({"step": step, "seconds": time.time() - start, "loss": loss.item(), **accs})
            print("eval", json.dumps(log[-1]), flush=True)
        if out_of_time:
            print(f"stopping at step {step}: --max-minutes {args.max_minutes} reached", flush=True)
            break
    seconds = time.time() - start
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model.generation_config.pad_token_id = ids["[PAD]"]
    model.generation_config.bos_token_id = ids["[BOS]"]
    model.generation_config.eos_token_id = ids["[EOS]"]
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    final = {s.name: evaluate(vqa, s) for s in test}
    summary = {"args": vars(args), "parameters": params, "train_seconds": seconds, "steps_done": step,
               "test_accuracy": final,
               "log": log, "torch": torch.__version__}  # fmt: skip
    (out / "training_log.json").write_text(json.dumps(summary, indent=1) + "\n")
    print("final", json.dumps(final), f"train {seconds:.0f}s", flush=True)


if __name__ == "__main__":
    main()
