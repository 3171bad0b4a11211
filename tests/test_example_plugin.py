"""The third-party example package (examples/tokenprune-hiddennorm) installs with pip and runs by name.

The package is pip-installed for real (its own pyproject.toml, its own entry point) into a
temporary ``--target`` folder put on ``sys.path``, so the test environment is left as it was. Then
the ordinary registry, loaded from the entry-point group like for any user, finds it.
"""

from __future__ import annotations

import importlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import tokenprune
from test_exactness import _model
import tiny_models as tm
from tokenprune.tools.cli import main
from tokenprune.registry import reset_registry

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "tokenprune-hiddennorm"


def _pip_install(source: Path, target: Path) -> None:
    base = [sys.executable, "-m", "pip", "install", "--no-deps", "--no-input", "--disable-pip-version-check", "-q"]
    errors = []
    for extra in (["--no-build-isolation"], []):  # offline first; an isolated build needs setuptools from an index
        done = subprocess.run([*base, *extra, "--target", str(target), str(source)], capture_output=True, text=True)
        if done.returncode == 0:
            return
        errors.append(done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}")
    pytest.skip(f"pip could not build the example package here: {errors}")


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    work = tmp_path_factory.mktemp("example")
    source = work / "src"
    shutil.copytree(EXAMPLE, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    target = work / "site"
    _pip_install(source, target)
    sys.path.insert(0, str(target))
    importlib.invalidate_caches()
    reset_registry()
    try:
        yield target
    finally:
        sys.path.remove(str(target))
        sys.modules.pop("tokenprune_hiddennorm", None)
        importlib.invalidate_caches()
        reset_registry()


def test_example_package_installs_and_wraps_by_name(installed):
    assert (installed / "tokenprune_hiddennorm.py").exists()
    assert "hiddennorm" in tokenprune.list_strategies()
    spec = tokenprune.get_registry().strategy("hnorm")
    assert spec.source == "tokenprune-hiddennorm 0.1.0"  # the installed distribution, from its metadata
    model = _model("llava", "sdpa")
    inputs = tm.llava_inputs(model, layout="mixed")
    reference = model(**inputs).logits
    with tokenprune.pruned(model, "hiddennorm", layer=2, keep=1.0):
        assert torch.equal(model(**inputs).logits, reference)
    with tokenprune.pruned(model, "hiddennorm", layer=2, keep=0.25) as handle:
        model(**inputs)
        assert handle.stats.visual_tokens[2] == [n // 4 for n in handle.stats.num_visual]


def test_cli_lists_the_installed_plugin(installed, capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    line = next(row for row in out.splitlines() if row.strip().startswith("hiddennorm"))
    assert "tokenprune-hiddennorm 0.1.0" in line and "built-in" not in line
