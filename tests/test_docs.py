"""The documentation site: it builds strictly, and the code it shows still runs.

* `mkdocs build --strict` (broken links, anchors, mkdocstrings/griffe warnings all fail it), and the
  API reference contains the `wrap` entry. Skipped when the `docs` extra is not installed.
* The plugin of the "Write a plugin" guide (examples/tokenprune-hiddennorm/, included verbatim in the page)
  registers, builds and prunes a tiny model, so the guide cannot drift from the API.
* The PyramidDrop options table lists every config field with its real default.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
EXAMPLE = DOCS.parent / "examples" / "tokenprune-hiddennorm" / "tokenprune_hiddennorm.py"

_DOCS_DEPS = ("mkdocs", "material", "mkdocstrings", "mkdocstrings_handlers.python", "griffe_inherited_docstrings")


def _missing_docs_deps() -> list[str]:
    missing = []
    for name in _DOCS_DEPS:
        try:
            found = importlib.util.find_spec(name) is not None
        except ModuleNotFoundError:  # parent package absent
            found = False
        if not found:
            missing.append(name)
    return missing


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    missing = _missing_docs_deps()
    if missing:
        pytest.skip(
            f"docs dependencies not installed ({', '.join(missing)}); "
            'install them with: pip install -e ".[docs]"'
        )
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--clean", "-f", str(ROOT / "mkdocs.yml"), "-d", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{proc.stdout}\n{proc.stderr}"
    return out


def test_strict_build_succeeds(site):
    assert (site / "index.html").is_file()
    for page in ("install", "quickstart", "concepts", "strategies/pyramiddrop", "guides/write-a-plugin",
                 "guides/add-an-adapter", "cli", "results/cpu", "changelog", "reference", "models", "results",
                 "contributing"):  # fmt: skip
        assert (site / page / "index.html").is_file(), page


def test_reference_documents_wrap(site):
    html = (site / "reference" / "tokenprune" / "index.html").read_text(encoding="utf-8")
    assert 'id="tokenprune.wrap"' in html
    for name in ("unwrap", "pruned", "handle_of", "WrapHandle", "CallStats"):
        assert f'id="tokenprune.{name}"' in html, name
    config = (site / "strategies" / "pyramiddrop" / "index.html").read_text(encoding="utf-8")
    assert 'id="tokenprune.plugins.pyramiddrop.PyramidDropConfig"' in config


def test_site_needs_no_external_fonts_or_scripts(site):
    for page in site.rglob("*.html"):
        text = page.read_text(encoding="utf-8")
        assert "fonts.googleapis.com" not in text, page
        assert not re.search(r'<script[^>]+src="https?://', text), page
        assert not re.search(r'<link[^>]+href="https?://[^"]+\.css', text), page
        assert not re.search(r'<link[^>]+rel="(preconnect|preload|stylesheet)"[^>]+href="https?://', text), page
        assert "fonts.gstatic.com" not in text, page
        # mkdocs-material fetches mermaid.js from unpkg.com when a page has a mermaid diagram: draw SVG instead.
        assert 'class="mermaid"' not in text, page
    for sheet in site.rglob("*.css"):
        assert not re.search(r"@import\s+url\(\s*['\"]?https?://", sheet.read_text(encoding="utf-8")), sheet


# -- the code shown in the docs -----------------------------------------------------------------
def _load_example():
    spec = importlib.util.spec_from_file_location("tokenprune_hiddennorm", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    saved, sys.dont_write_bytecode = sys.dont_write_bytecode, True  # keep docs/ free of __pycache__
    try:
        spec.loader.exec_module(module)
    finally:
        sys.dont_write_bytecode = saved
    return module


def test_plugin_guide_example_registers_and_prunes():
    torch = pytest.importorskip("torch")
    import tiny_models as tm

    import tokenprune
    from tokenprune.registry import Registry

    example = _load_example()
    registry = Registry.load(entry_points=False, plugins=[example])
    assert registry.strategy("hnorm").name == "hiddennorm"
    assert "hidden-state norm" in registry.strategy("hiddennorm").description

    model = tm.make_llava(attn="sdpa", dtype=torch.float32, num_layers=4)
    inputs = tm.llava_inputs(model, layout="left_padded")
    with torch.no_grad():
        dense = model(**inputs).logits
        with tokenprune.pruned(model, registry.build("hiddennorm", layer=2, keep=1.0)):
            keep_all = model(**inputs).logits
        with tokenprune.pruned(model, registry.build("hnorm", layer=2, keep=0.25)) as handle:
            model(**inputs)
    assert torch.equal(dense, keep_all)  # keep-everything is bitwise identity
    visual = tm.num_image_tokens(model.config)
    assert [row[0] for row in handle.stats.visual_tokens] == [visual, visual, visual // 4, visual // 4]
    assert handle.config.keep == 0.25 and handle.strategy.name == "hiddennorm"


def test_pyramiddrop_options_table_matches_config():
    from tokenprune.plugins.pyramiddrop import PyramidDropConfig

    page = (DOCS / "strategies" / "pyramiddrop.md").read_text(encoding="utf-8")
    table = page[page.index("## Configuration") :]
    rows = dict(re.findall(r"^\| `(\w+)` \| [^|]+ \| (`[^`]*`|[^|]*?) \|", table, flags=re.M))
    assert set(rows) == set(PyramidDropConfig.model_fields)
    for name, field in PyramidDropConfig.model_fields.items():
        assert rows[name].strip("`") == repr(field.default).replace("'", '"'), name
