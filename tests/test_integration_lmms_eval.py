"""The lmms-eval model ``tokenprune`` (`tokenprune.integrations.lmms_eval`), offline.

Two layers of checks:

* The model logic against a fake minimal ``lmms`` base (runs without lmms-eval): generation equals
  a direct `generate` of the wrapped model; log-likelihoods equal a teacher-forced cached decode
  (an independent path through the KV cache); ``strategy=none`` with keep-all pruning equals the
  dense model; bad options fail with clear errors.
* With lmms-eval installed: the entry point registers ``--model tokenprune``, and the real CLI
  (``lmms-eval eval --model tokenprune ...``) evaluates a local task over a small local dataset
  saved with ``datasets``, whose answers are the wrapped model's own outputs (exact match 1.0;
  the dense model's answers differ, so a run that did not prune would score lower).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

import tiny_models as tm
import tiny_processor as tp
import tokenprune
from tokenprune.integrations import lmms_eval as integration

SCHEDULE = dict(layer_list=[2, 4, 6], image_token_ratio_list=[0.5, 0.25, 0.125])
MODEL_ARGS = "strategy=pyramiddrop,layer_list=[2,4,6],image_token_ratio_list=[0.5,0.25,0.125],dtype=float64"
QUESTIONS = ["w5 w6 w7", "w9 w10", "w11 w12 w13 w14", "w20 w21"]


class FakeLmms:
    """The part of lmms-eval's ``lmms`` base the wrapper relies on (set in ``__init__``)."""

    def __init__(self) -> None:
        self._rank, self._world_size, self.task_dict = 0, 1, {}


@dataclass
class FakeRequest:
    args: tuple


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A tiny float64 LLaVA and its processor, saved as a local checkpoint folder."""
    path = tmp_path_factory.mktemp("tiny-llava")
    tm.make_llava(dtype=torch.float64, seed=11).save_pretrained(path)
    tp.make_llava_processor().save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def docs():
    return [{"question": q, "image": tp.random_image(i)} for i, q in enumerate(QUESTIONS)]


def _evaluator(checkpoint, docs, **args):
    cls = integration.model_class(FakeLmms)
    model = cls(pretrained=str(checkpoint), device="cpu", **{"dtype": "float64", **args})
    model.task_dict = {"tiny": {"test": docs}}
    return model


def _visual(doc):
    return [doc["image"]]


def _gen_requests(docs, max_new_tokens=4):
    return [FakeRequest((d["question"], {"max_new_tokens": max_new_tokens, "until": ["</s>"]}, _visual, i, "tiny", "test"))
            for i, d in enumerate(docs)]


def test_model_class_is_built_on_the_given_base():
    cls = integration.model_class(FakeLmms)
    assert issubclass(cls, FakeLmms) and issubclass(cls, integration.TokenpruneEvalModel)
    assert cls.__name__ == integration.CLASS_NAME and cls.is_simple is True
    assert integration.model_class(FakeLmms) is cls  # built once per base


def test_generate_until_equals_direct_generate(checkpoint, docs):
    model = _evaluator(checkpoint, docs, strategy="pyramiddrop", layer_list="[2,4,6]",
                       image_token_ratio_list="[0.5,0.25,0.125]")
    assert model.options == SCHEDULE  # lmms-eval's "[...]" strings became lists
    answers = model.generate_until(_gen_requests(docs))
    assert all(1 <= len(a.split()) <= 4 for a in answers)  # special ids (e.g. <unk>) are not printed
    assert [[row[0] for row in s.visual_tokens] for s in model.stats] == [[16, 16, 8, 8, 4, 4, 2, 2]] * len(docs)
    processor = tp.make_llava_processor()
    for doc, answer in zip(docs, answers):
        inputs = processor(images=doc["image"], text=model._prompt(doc["question"], 1), return_tensors="pt")
        out = model.model.generate(**inputs, max_new_tokens=4, do_sample=False)
        assert processor.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True).strip() == answer
    # The chat template put the image first and the assistant prompt last.
    assert model._prompt("w5 w6", 1).split() == ["<image>", "w5", "w6", "w3"]


def test_until_cuts_the_answer(checkpoint, docs):
    model = _evaluator(checkpoint, docs, **SCHEDULE)
    full = model.generate_until(_gen_requests(docs[:1]))[0].split()
    request = FakeRequest((docs[0]["question"], {"max_new_tokens": 4, "until": [full[2]]}, _visual, 0, "tiny", "test"))
    assert model.generate_until([request])[0].split() == full[:2]


def test_loglikelihood_equals_teacher_forced_cached_decode(checkpoint, docs):
    model = _evaluator(checkpoint, docs, **SCHEDULE)
    continuation = " w40 w41 w42"
    requests = [FakeRequest((d["question"], continuation, _visual, i, "tiny", "test")) for i, d in enumerate(docs)]
    results = model.loglikelihood(requests)
    assert model.stats[-1].visual_tokens[-1] == [2]
    processor, targets = tp.make_llava_processor(), [40, 41, 42]
    for doc, (logprob, greedy) in zip(docs, results):
        inputs = processor(images=doc["image"], text=model._prompt(doc["question"], 1), return_tensors="pt")
        expected, all_greedy = 0.0, True
        with torch.no_grad():  # prefill (pruned), then one decode step per continuation token
            out = model.model(**inputs, use_cache=True)
            cache, mask = out.past_key_values, inputs["attention_mask"]
            logits = out.logits[0, -1]
            for token in targets:
                expected += float(torch.log_softmax(logits, -1)[token])
                all_greedy &= int(logits.argmax()) == token
                mask = torch.cat([mask, torch.ones(1, 1, dtype=mask.dtype)], 1)
                out = model.model(input_ids=torch.tensor([[token]]), attention_mask=mask, past_key_values=cache, use_cache=True)
                cache, logits = out.past_key_values, out.logits[0, -1]
        assert logprob == pytest.approx(expected, abs=1e-9)
        assert greedy is all_greedy
    assert len({round(r[0], 6) for r in results}) == len(docs), "the images did not matter"


def test_keep_all_schedule_equals_the_dense_model(checkpoint, docs):
    dense = _evaluator(checkpoint, docs, strategy="none")
    assert not hasattr(dense.model, "tokenprune")
    keep_all = _evaluator(checkpoint, docs, layer_list="[2,4,6]", image_token_ratio_list="[1.0,1.0,1.0]")
    assert dense.generate_until(_gen_requests(docs)) == keep_all.generate_until(_gen_requests(docs))
    requests = [FakeRequest((d["question"], " w40 w41", _visual, i, "tiny", "test")) for i, d in enumerate(docs)]
    assert dense.loglikelihood(requests) == keep_all.loglikelihood(requests)


@pytest.mark.parametrize(
    "args, message",
    [
        (dict(batch_size=4), "one request at a time"),
        (dict(dtype="float99"), "not a torch dtype"),
        (dict(strategy="none", ratio=0.5), "takes no strategy options"),
        (dict(layer_list="[2,4"), "write it as JSON"),
    ],
)
def test_bad_model_args_name_the_problem(checkpoint, docs, args, message):
    with pytest.raises(ValueError, match=message):
        _evaluator(checkpoint, docs, **args)


# ------------------------------------------------------------------------------------------------
# With lmms-eval installed: registration and the real command line, offline.
# ------------------------------------------------------------------------------------------------
TASK_YAML = """\
task: tokenprune_tiny_vqa
dataset_path: {data}
dataset_kwargs:
  load_from_disk: true
test_split: test
output_type: generate_until
doc_to_visual: !function utils.doc_to_visual
doc_to_text: !function utils.doc_to_text
doc_to_target: answer
generation_kwargs:
  max_new_tokens: 3
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
metadata:
  - version: 0.0
"""

TASK_UTILS = """\
def doc_to_visual(doc):
    return [doc["image"].convert("RGB")]


def doc_to_text(doc, lmms_eval_specific_kwargs=None):
    return doc["question"]
"""


def test_entry_point_registers_the_model():
    pytest.importorskip("lmms_eval")
    from lmms_eval.api.model import lmms
    from lmms_eval.models import get_model

    cls = get_model(integration.MODEL_NAME)
    assert issubclass(cls, lmms) and issubclass(cls, integration.TokenpruneEvalModel)


def _answers(checkpoint, docs, **strategy):
    model = _evaluator(checkpoint, docs, **strategy)
    return model.generate_until(_gen_requests(docs, max_new_tokens=3))


def _run_cli(tmp_path, checkpoint, task_dir, model_args) -> float:
    out = tmp_path / "results"
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               HF_HOME=str(tmp_path / "hf"), WANDB_MODE="disabled", TOKENIZERS_PARALLELISM="false")
    command = [sys.executable, "-m", "lmms_eval", "eval", "--model", "tokenprune",
               "--model_args", f"pretrained={checkpoint},{model_args}", "--tasks", "tokenprune_tiny_vqa",
               "--include_path", str(task_dir), "--batch_size", "1", "--device", "cpu", "--output_path", str(out)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    files = sorted(out.rglob("*results*.json"))
    assert files, f"no results file under {out}: {done.stdout[-2000:]}"
    results = json.loads(files[-1].read_text())["results"]["tokenprune_tiny_vqa"]
    return next(v for k, v in results.items() if k.startswith("exact_match") and "stderr" not in k)


def test_lmms_eval_cli_offline_local_task(tmp_path, checkpoint, docs):
    pytest.importorskip("lmms_eval")
    datasets = pytest.importorskip("datasets")
    # Ground truth = the pruned model's own answers: the CLI run must reproduce every one of them.
    answers = _answers(checkpoint, docs, **SCHEDULE)
    dense = _answers(checkpoint, docs, strategy="none")
    assert answers != dense
    table = {"question": [d["question"] for d in docs], "answer": answers, "image": [d["image"] for d in docs]}
    data = datasets.DatasetDict({"test": datasets.Dataset.from_dict(table).cast_column("image", datasets.Image())})
    data.save_to_disk(str(tmp_path / "data"))
    task_dir = tmp_path / "tasks"
    task_dir.mkdir()
    (task_dir / "tiny_vqa.yaml").write_text(TASK_YAML.format(data=tmp_path / "data"))
    (task_dir / "utils.py").write_text(textwrap.dedent(TASK_UTILS))
    assert _run_cli(tmp_path, checkpoint, task_dir, MODEL_ARGS) == 1.0
    # (The dense model would score sum(a == d) / 4 < 1 here; `strategy=none` is covered above
    # without a second CLI run, which costs ~25 s of imports.)
