"""Every Python block in README.md, docs/ and the public docstrings runs, so the documentation cannot rot.

One test per page runs its blocks in order in one namespace (see `tests/docs_snippets.py` for the
tiny stand-ins that answer `from_pretrained` and the processor). `pycon` blocks are doctests: their
shown values and exceptions are compared. A block marked ``<!-- docs-test: skip REASON -->`` shows
up as a skipped test with its reason, and there may be at most `MAX_SKIPPED` of them.
"""

from __future__ import annotations

import doctest
import json
import textwrap
from pathlib import Path

import pytest

import docs_snippets as ds

MAX_SKIPPED = 3
SKIPPED = [b for p in ds.doc_files() for b in ds.blocks(p) if b.skip is not None]
PAGES = [p for p in ds.doc_files() if any(b.skip is None for b in ds.blocks(p))]  # pages with code to run


def _page_id(path: Path) -> str:
    return path.relative_to(ds.ROOT).as_posix()


@pytest.fixture
def doc_session(tmp_path, monkeypatch):
    """A scratch working directory with `cat.jpg`, and `from_pretrained` answered by tiny models."""
    pytest.importorskip("torch")
    from PIL import Image
    from transformers import AutoProcessor, PreTrainedModel

    import tokenprune

    Image.new("RGB", (32, 32), (200, 120, 40)).save(tmp_path / "cat.jpg")
    monkeypatch.chdir(tmp_path)
    loader = ds.TinyLoader()
    monkeypatch.setattr(PreTrainedModel, "from_pretrained", classmethod(loader.load_model))
    monkeypatch.setattr(AutoProcessor, "from_pretrained", lambda *a, **k: ds.TinyProcessor(loader))
    yield loader
    if loader.model is not None and hasattr(loader.model, tokenprune.api.HANDLE_ATTR):
        tokenprune.unwrap(loader.model)


def _run_python(block: ds.Block, namespace: dict) -> None:
    code = compile(block.code, f"{block.id}", "exec")
    try:
        exec(code, namespace)
    except Exception as exc:
        raise AssertionError(f"{block.id}: the block raised {type(exc).__name__}: {exc}\n\n{block.code}") from exc


def _run_pycon(block: ds.Block, namespace: dict) -> None:
    parser = doctest.DocTestParser()
    test = parser.get_doctest(block.code, namespace, block.id, str(block.path), block.line)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    report: list[str] = []
    runner.run(test, out=report.append, clear_globs=False)
    assert runner.failures == 0, f"{block.id}: doctest failed\n" + "".join(report)
    assert test.examples, f"{block.id}: a pycon block without >>> examples"


@pytest.mark.parametrize("page", PAGES, ids=_page_id)
def test_page_code_runs(page: Path, doc_session, monkeypatch):
    namespace: dict = {"__name__": "__docs__"}
    setup = ds.setup_name(page)
    if setup is not None:
        assert setup in ds.SETUPS, f"{_page_id(page)}: unknown docs-test setup {setup!r}; known: {sorted(ds.SETUPS)}"
        ds.SETUPS[setup](namespace, doc_session, monkeypatch)
    for block in ds.blocks(page):
        if block.skip is None:
            (_run_pycon if block.lang == "pycon" else _run_python)(block, namespace)


@pytest.mark.parametrize("example", ds.docstring_examples(), ids=lambda e: e.qualname)
def test_docstring_example_runs(example: ds.DocstringExample, doc_session, monkeypatch):
    """Code in a docstring (shown on the API reference) runs against a tiny LLaVA, in a fresh namespace."""
    namespace: dict = {"__name__": "__docs__"}
    ds.SETUPS["llava"](namespace, doc_session, monkeypatch)
    for block in example.blocks:
        assert block.skip is None, f"{block.id}: docstring examples cannot be skipped"
        (_run_pycon if block.lang == "pycon" else _run_python)(block, namespace)


if SKIPPED:  # one skipped test per marked block, so the -ra summary lists each with its reason

    @pytest.mark.parametrize("block", SKIPPED, ids=lambda b: b.id)
    def test_skipped_block_is_reported(block: ds.Block):
        assert block.skip.strip(), f"{block.id}: a skip marker needs a reason"
        pytest.skip(f"docs block {block.id} not run: {block.skip}")


def test_snippet_inventory():
    """Counts what runs and what is skipped; writes artifacts/docs_snippets.json."""
    every = [b for p in ds.doc_files() for b in ds.blocks(p)]
    summary = {
        "pages": len(PAGES),
        "blocks": len(every),
        "python": sum(b.lang == "python" and b.skip is None for b in every),
        "pycon": sum(b.lang == "pycon" and b.skip is None for b in every),
        "skipped": {b.id: b.skip for b in SKIPPED},
    }
    out = ds.ROOT / "artifacts" / "docs_snippets.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(summary, indent=1))
    assert len(SKIPPED) <= MAX_SKIPPED, f"too many docs blocks skipped: {summary['skipped']}"
    summary["docstring_examples"] = [e.qualname for e in ds.docstring_examples()]
    out.write_text(json.dumps(summary, indent=1))
    assert summary["python"] + summary["pycon"] >= 15, summary  # the parser still finds the blocks
    assert len(summary["docstring_examples"]) >= 4, summary


def test_parser_finds_indented_blocks_and_markers(tmp_path, monkeypatch):
    monkeypatch.setattr(ds, "ROOT", tmp_path)
    page = tmp_path / "page.md"
    page.write_text(
        textwrap.dedent(
            """\
            <!-- docs-test: setup llava -->
            * item

                ```python
                x = 1
                ```

            <!-- docs-test: skip needs a GPU -->
            ```pycon
            >>> x
            1
            ```
            ```bash
            echo no
            ```
            """
        )
    )
    found = ds.blocks(page)
    assert [(b.line, b.lang, b.code, b.skip) for b in found] == [
        (4, "python", "x = 1", None),
        (9, "pycon", ">>> x\n1", "needs a GPU"),
    ]
    assert ds.setup_name(page) == "llava"
