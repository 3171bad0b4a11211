"""The API reference is complete: every public name is on the built site, and has a docstring.

A public module is any module of the `tokenprune` package (plugins and adapters included) whose
dotted name has no part starting with ``_``; its public names are its ``__all__``. A name counts as
documented when the built site has an anchor for it under any public path that exports the same
object (`tokenprune.Strategy` is documented as `tokenprune.interfaces.Strategy`). Adding a public
module or name therefore means adding it to a page under `docs/reference/`, or this test fails
naming it.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re

import pytest
from test_docs import site  # noqa: F401  (the strict build, shared fixture)

import tokenprune


def public_modules() -> list[str]:
    names = ["tokenprune"] + [m.name for m in pkgutil.walk_packages(tokenprune.__path__, "tokenprune.")]
    return sorted(n for n in names if not any(part.startswith("_") for part in n.split(".")))


def public_names() -> list[tuple[str, str, object]]:
    found = []
    for module_name in public_modules():
        module = importlib.import_module(module_name)
        for name in getattr(module, "__all__", ()):
            assert hasattr(module, name), f"{module_name}.__all__ lists {name!r}, which the module does not define"
            found.append((module_name, name, getattr(module, name)))
    return found


def _members_needing_docs(cls: type):
    """Public methods and properties defined on `cls` itself (inherited docstrings count)."""
    for name, value in vars(cls).items():
        if name.startswith("_"):
            continue
        if isinstance(value, property):
            yield name, value.fget.__doc__ if value.fget else None
        elif inspect.isfunction(getattr(value, "__func__", value)):
            yield name, inspect.getdoc(getattr(cls, name))


def test_public_modules_are_found():
    modules = public_modules()
    for expected in ("tokenprune", "tokenprune.api", "tokenprune.engine.runtime", "tokenprune.plugins.pyramiddrop",
                     "tokenprune.adapters.llava"):  # fmt: skip
        assert expected in modules
    assert len(public_names()) > 60


def test_every_public_name_is_in_the_api_reference(site):  # noqa: F811
    anchors = set()
    for page in (site / "reference").rglob("*.html"):
        anchors.update(re.findall(r'id="([\w.]+)"', page.read_text(encoding="utf-8")))
    for page in (site / "strategies").rglob("*.html"):  # strategy configs are documented on their page
        anchors.update(re.findall(r'id="([\w.]+)"', page.read_text(encoding="utf-8")))
    paths: dict[int, set[str]] = {}
    names = public_names()
    for module_name, name, obj in names:
        paths.setdefault(id(obj), set()).add(f"{module_name}.{name}")
    missing = sorted(f"{m}.{n}" for m, n, obj in names if not paths[id(obj)] & anchors)
    assert not missing, (
        f"{len(missing)} public name(s) missing from the API reference: {missing}. Add them to a page under "
        "docs/reference/ (a `::: module` directive, or its `members:` list) and to mkdocs.yml nav if the page is new."
    )


def test_every_public_class_and_function_has_a_docstring():
    missing = []
    for module_name, name, obj in public_names():
        if not (inspect.isclass(obj) or inspect.isfunction(obj)):
            continue
        if not inspect.getdoc(obj):
            missing.append(f"{module_name}.{name}")
        if inspect.isclass(obj) and obj.__module__.startswith("tokenprune"):
            missing += [f"{module_name}.{name}.{member}" for member, doc in _members_needing_docs(obj) if not doc]
    assert not missing, f"public objects without a docstring: {sorted(set(missing))}"


@pytest.mark.parametrize("module_name", public_modules())
def test_public_module_has_a_docstring(module_name):
    assert inspect.getdoc(importlib.import_module(module_name)), f"{module_name} has no module docstring"


def test_supported_models_page_lists_every_registered_adapter():
    """docs/models.md's matrix names exactly the model types and adapters the registry serves."""
    from test_docs import DOCS

    from tokenprune.registry import Registry

    registry = Registry.load()
    served = {kind: spec.name for spec in registry.adapters.values() for kind in spec.adapter.model_types}
    page = (DOCS / "models.md").read_text(encoding="utf-8")
    table = page[page.index("## Matrix") :]
    rows = re.findall(r"^\| [^|]+ \| [^|]+ \| `(\w+)` \| `(\w+)` \|", table, flags=re.M)
    assert dict(rows) == served


def test_cli_page_documents_every_option():
    """docs/cli.md has a section per subcommand that names each of its options."""
    import argparse

    from test_docs import DOCS

    from tokenprune.tools.cli import build_parser

    page = (DOCS / "cli.md").read_text(encoding="utf-8")
    missing = []
    subparsers = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    assert subparsers, "the CLI has no subcommands?"
    for name, parser in subparsers[0].choices.items():
        heading = f"## `tokenprune {name}`"
        assert heading in page, f"docs/cli.md has no section {heading!r}"
        section = page[page.index(heading) :]
        section = section[: section.find("\n## ", len(heading))]
        for action in parser._actions:
            missing += [f"{name} {o}" for o in action.option_strings
                        if o not in ("-h", "--help") and not re.search(rf"`{re.escape(o)}\b", section)]  # fmt: skip
    assert not missing, f"options missing from docs/cli.md: {missing}"
