"""Probe a tiny video checkpoint: what its tower tokens encode, and where its question token looks.

Why: run E of the presence losses (model card, "Per-step presence") learnt count and order but lost
direction. This separates the two possible causes: the tower no longer encoding direction (a linear probe
on the merged tokens, trained on 3/4 of the tokens of 40 test videos and scored on the shape cells of the
rest) or the LLM no longer binding the question to the named shape (the attention mass of the question's
last token on the cells `moving_shapes.cell_labels` gives the named colour, per LLM layer, eager attention).

Usage: ``OMP_NUM_THREADS=1 python benchmarks/video_binding_probe.py CHECKPOINT COUNTER`` (COUNTER 1: render
the step counter, for a model trained with ``--counter``).
"""

import sys

import numpy as np
import torch

torch.set_num_threads(1)
from tokenprune.vqa_video import moving_shapes as ms
from tokenprune.vqa_video.model import TinyVideoVQA

path, counter = sys.argv[1], sys.argv[2] == "1"
vqa = TinyVideoVQA.load(path)
model = vqa.model
model.config._attn_implementation = "eager"
model.model.language_model.config._attn_implementation = "eager"
test = ms.split("test", size=40)
cap = {}
model.model.visual.register_forward_hook(
    lambda m, a, o: cap.__setitem__("merged", o.pooler_output)
)
feats, dirs, cols = [], [], []
attn_named = {k: [] for k in ms.KINDS}
for i, video in enumerate(test.videos):
    frames = ms.render(video, counter=counter)
    qs = [q for q, vi in zip(test.questions, test.video_index) if vi == i]
    inputs = vqa.encode([frames] * len(qs), [q.text for q in qs])
    with torch.no_grad():
        out = model(**inputs, output_attentions=True)
    merged = cap["merged"]
    merged = torch.cat(list(merged)) if isinstance(merged, (list, tuple)) else merged
    c, d = ms.cell_labels(video)
    feats.append(merged[:324].numpy())
    dirs.append(d.ravel())
    cols.append(c.ravel())
    ids = inputs["input_ids"]
    vid = (ids[0] == vqa.vocab.id("<|video_pad|>")).nonzero().ravel()
    for j, q in enumerate(qs):
        named = [
            list(ms.COLORS).index(t.color) + 1
            for t in video.tracks
            if f" {t.color} " in f" {q.text} "
        ]
        on = torch.from_numpy(np.isin(c.ravel(), named))
        per_layer = [
            a[j, :, -1, vid][:, on].sum(-1).mean().item() for a in out.attentions
        ]  # heads averaged
        attn_named[q.kind].append(per_layer)
X, D, C = np.concatenate(feats), np.concatenate(dirs), np.concatenate(cols)
n = len(X) * 3 // 4


def probe(y, name):
    Xt = torch.from_numpy(X).float()
    yt = torch.from_numpy(y)
    lin = torch.nn.Linear(X.shape[1], int(y.max()) + 1)
    opt = torch.optim.Adam(lin.parameters(), 1e-2)
    for _ in range(300):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(lin(Xt[:n]), yt[:n]).backward()
        opt.step()
    pred = lin(Xt[n:]).argmax(-1).numpy()
    shape = y[n:] > 0
    print(
        f"{name}: held-out acc on shape cells {np.mean(pred[shape] == y[n:][shape]):.3f} (cells {shape.sum()})"
    )


probe(D, "direction")
probe(C, "colour")
for k, v in attn_named.items():
    print(
        k,
        "attention mass of the question's last token on the named shape's cells, per layer:",
        np.round(np.mean(v, 0), 3),
    )
