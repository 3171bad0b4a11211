"""The package's import structure: no import cycle, every module imports on its own, and the library
never loads the tools (`tokenprune.tools`: the CLI, demo, benchmark, VQA tasks).

A cycle that works today (because one side imports inside a function) breaks as soon as someone
moves that import to the top of the file, or imports the modules in another order; and a library
that pulls in its tools makes ``import tokenprune`` slower and heavier for every user.
"""

from __future__ import annotations

import ast
import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import tokenprune

PACKAGE = Path(tokenprune.__file__).resolve().parent


def module_files() -> dict[str, Path]:
    """Every module of the package (plugins/ and adapters/ through their links) -> its file."""
    files = {}
    for info in pkgutil.walk_packages(tokenprune.__path__, "tokenprune."):
        if info.name.rsplit(".", 1)[-1] == "__main__":
            continue
        path = Path(info.module_finder.path) / info.name.rsplit(".", 1)[-1]
        files[info.name] = path / "__init__.py" if info.ispkg else path.with_suffix(".py")
    files["tokenprune"] = PACKAGE / "__init__.py"
    return files


class _Imports(ast.NodeVisitor):
    """The tokenprune modules one module imports, at the top or inside functions (not under TYPE_CHECKING)."""

    def __init__(self, module: str, is_package: bool, known: dict[str, Path]):
        self.package = module.split(".") if is_package else module.split(".")[:-1]
        self.known = known
        self.targets: set[str] = set()

    def visit_If(self, node: ast.If) -> None:
        test = node.test
        if getattr(test, "id", None) == "TYPE_CHECKING" or getattr(test, "attr", None) == "TYPE_CHECKING":
            for child in node.orelse:
                self.visit(child)
            return
        self.generic_visit(node)

    def visit_Import(self, node: ast.Import) -> None:
        self.targets.update(alias.name for alias in node.names if alias.name in self.known)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            base = self.package[: len(self.package) - (node.level - 1)]
            target = ".".join(base + ([node.module] if node.module else []))
        else:
            target = node.module or ""
        for alias in node.names:  # `from pkg import submodule` imports the submodule
            sub = f"{target}.{alias.name}"
            self.targets.add(sub if sub in self.known else target)


def import_graph() -> dict[str, set[str]]:
    """Module -> the tokenprune modules it imports (edges to itself and outside the package dropped)."""
    files = module_files()
    graph = {}
    for module, path in files.items():
        visitor = _Imports(module, path.name == "__init__.py", files)
        visitor.visit(ast.parse(path.read_text(encoding="utf-8")))
        graph[module] = {t for t in visitor.targets if t in files and t != module}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_the_import_graph_sees_imports_at_the_top_and_inside_functions():
    graph = import_graph()
    assert "tokenprune.tools.arguments" in graph["tokenprune.tools.vqa.commands"]  # top of the file
    assert "tokenprune.tools.demo" in graph["tokenprune.tools.cli"]  # inside cmd_demo
    assert "tokenprune.registry" in graph["tokenprune.cost"]  # inside a function
    assert "tokenprune.registry" not in graph["tokenprune.hookspecs"]  # TYPE_CHECKING only: not an import
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycle():
    found = cycles(import_graph())
    assert not found, f"import cycles (move the shared part to a module both can import): {found}"


def test_every_module_imports_on_its_own():
    """Each module imported first, with no other tokenprune module loaded (one interpreter, the package
    purged from ``sys.modules`` between modules; torch and transformers stay loaded to keep this fast).

    A module whose optional third-party dependency is not installed here (the vLLM integration without
    vllm) is passed over; tests/test_vllm_plugin.py imports it in vLLM's own venv (.ci/run)."""
    modules = sorted(module_files())
    script = f"""
import importlib, json, sys, traceback
import torch, transformers, pydantic, pluggy
failures, optional = {{}}, {{}}
for name in {modules!r}:
    for loaded in [m for m in sys.modules if m == "tokenprune" or m.startswith("tokenprune.")]:
        del sys.modules[loaded]
    try:
        importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name and not exc.name.split(".")[0] == "tokenprune":  # an optional dependency (vllm) not installed here
            optional[name] = exc.name
        else:
            failures[name] = traceback.format_exc(limit=3)
    except Exception:
        failures[name] = traceback.format_exc(limit=3)
print(json.dumps([failures, optional]))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    failures, optional = json.loads(done.stdout.strip().splitlines()[-1])
    assert not failures, "\n".join(f"{name}:\n{trace}" for name, trace in failures.items())
    assert len(modules) - len(optional) > 60, optional


def test_import_tokenprune_loads_no_tool_module():
    """The library, its registry and every plugin load without `tokenprune.tools` (a fresh interpreter)."""
    script = """
import json, sys
import tokenprune
tokenprune.list_strategies()  # loads every plugin and adapter through the entry points
tokenprune.get_registry().compose(scorer="l2norm")
print(json.dumps(sorted(m for m in sys.modules if m.startswith("tokenprune."))))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    assert "tokenprune.plugins.pyramiddrop" in loaded and "tokenprune.registry" in loaded  # the check can see
    tools = [m for m in loaded if m == "tokenprune.tools" or m.startswith("tokenprune.tools.")]
    assert not tools, f"`import tokenprune` loaded tool modules: {tools}"


def test_the_tools_import_no_private_name_of_another_module():
    """What several tool modules share is public API of the module holding it (`tokenprune.tools.arguments`, ...)."""
    offenders = []
    for module, path in module_files().items():
        if not module.startswith("tokenprune.tools"):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("tokenprune")):
                private = [a.name for a in node.names if a.name.startswith("_") and not a.name.startswith("__")]
                if private:
                    offenders.append(f"{module}:{node.lineno} imports {private} from {'.' * node.level}{node.module or ''}")
    assert not offenders, offenders
