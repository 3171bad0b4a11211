"""Find the Python code shown in the docs, and the tiny stand-ins it runs against.

The docs show real usage (`LlavaForConditionalGeneration.from_pretrained("/models/llava-1.5-7b-hf")`,
a processor, an image file). `tests/test_docs_snippets.py` runs every such block for real, with
`from_pretrained` answered by a tiny random model of the same class built from a config (no hub,
no checkpoint), the processor answered by a stand-in that returns that model's inputs, and the
working directory holding a small `cat.jpg`. Everything after loading (`wrap`, `generate`,
`stats`, `unwrap`, training) is the library's real code path.

Markers (HTML comments, invisible on the rendered site and on GitHub):

* ``<!-- docs-test: setup NAME -->`` anywhere in a page: the page's blocks start from the
  namespace that `SETUPS[NAME]` builds (e.g. a wrapped-model page that never shows loading).
* ``<!-- docs-test: skip REASON -->`` on the line before a block: the block is not run; the test
  suite reports it as a skipped test with REASON, and the total is capped.

Blocks of one page run in order in one namespace, like a reader pasting them into one session.
`` ```python `` blocks are executed; `` ```pycon `` blocks (``>>>`` prompts) are run by doctest,
so their printed values and exceptions are checked too.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any, Callable

import yaml

ROOT = Path(__file__).resolve().parent.parent

_FENCE = re.compile(r"^(?P<indent>\s*)```(?P<lang>python|pycon|py)\b[^\n]*$")
_MARK = re.compile(r"^\s*<!--\s*docs-test:\s*(?P<kind>skip|setup)\s+(?P<arg>.*?)\s*-->\s*$")
_INCLUDE = re.compile(r'^\s*--8<--\s+"(?P<path>[^"]+)"\s*$')


@dataclasses.dataclass(frozen=True)
class Block:
    """One fenced code block of a Markdown file."""

    path: Path
    line: int  # 1-based line of the opening fence
    lang: str  # "python" or "pycon"
    code: str
    skip: str | None  # the reason, when marked `docs-test: skip`

    @property
    def id(self) -> str:
        return f"{self.path.relative_to(ROOT).as_posix()}:{self.line}"


def doc_files() -> list[Path]:
    """The README and every Markdown page of the site."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def _snippet_base_paths() -> list[Path]:
    """`pymdownx.snippets` base paths from mkdocs.yml, so `--8<--` includes resolve as on the site."""
    config = yaml.load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"), Loader=yaml.BaseLoader)
    for ext in config.get("markdown_extensions", []):
        if isinstance(ext, dict) and "pymdownx.snippets" in ext:
            base = (ext["pymdownx.snippets"] or {}).get("base_path", ["."])
            return [ROOT / p for p in ([base] if isinstance(base, str) else base)]
    return [ROOT]


def _resolve_includes(code: str) -> str:
    out = []
    for line in code.splitlines():
        match = _INCLUDE.match(line)
        if not match:
            out.append(line)
            continue
        for base in _snippet_base_paths():
            if (base / match["path"]).is_file():
                out.append((base / match["path"]).read_text(encoding="utf-8"))
                break
        else:
            raise FileNotFoundError(f"snippet include {match['path']!r} not found under {_snippet_base_paths()}")
    return "\n".join(out)


def blocks(path: Path) -> list[Block]:
    """The Python blocks of one Markdown file, with their skip markers."""
    return blocks_in_text(path.read_text(encoding="utf-8"), path)


def blocks_in_text(text: str, path: Path, first_line: int = 1) -> list[Block]:
    """The Python blocks of a Markdown text (a page, or a docstring starting at `first_line` of `path`)."""
    lines = text.splitlines()
    found, i = [], 0
    while i < len(lines):
        fence = _FENCE.match(lines[i])
        if not fence:
            i += 1
            continue
        indent, start = fence["indent"], i
        body = []
        i += 1
        while i < len(lines) and lines[i].strip() != "```":
            body.append(lines[i][len(indent) :] if lines[i].startswith(indent) else lines[i].lstrip())
            i += 1
        prev = next((lines[j] for j in range(start - 1, -1, -1) if lines[j].strip()), "")
        mark = _MARK.match(prev)
        skip = mark["arg"] if mark and mark["kind"] == "skip" else None
        lang = "pycon" if fence["lang"] == "pycon" else "python"
        found.append(Block(path, first_line + start, lang, _resolve_includes("\n".join(body)), skip))
        i += 1
    return found


def public_modules() -> list[str]:
    """Every module of the `tokenprune` package whose dotted name has no part starting with ``_``."""
    import importlib
    import pkgutil

    import tokenprune

    names = ["tokenprune"] + [m.name for m in pkgutil.walk_packages(tokenprune.__path__, "tokenprune.")]
    public = sorted(n for n in names if not any(part.startswith("_") for part in n.split(".")))
    for name in public:
        importlib.import_module(name)
    return public


@dataclasses.dataclass(frozen=True)
class DocstringExample:
    """The code blocks of one docstring (rendered on the API reference pages)."""

    qualname: str
    blocks: tuple[Block, ...]


def docstring_examples() -> list[DocstringExample]:
    """Docstrings of public modules, their `__all__` objects and those objects' members that show code."""
    import importlib
    import inspect

    seen: set[int] = set()
    found = []

    def visit(qualname: str, obj: object) -> None:
        if id(obj) in seen:
            return
        seen.add(id(obj))
        doc = obj.__doc__ if isinstance(obj.__doc__, str) else None
        if not doc or "```" not in doc:
            return
        try:
            source = obj if inspect.ismodule(obj) else inspect.unwrap(obj)
            path = Path(inspect.getsourcefile(source)).resolve()
            line = 1 if inspect.ismodule(obj) else inspect.getsourcelines(source)[1] + 1
        except (TypeError, OSError):
            return
        if not path.is_relative_to(ROOT):
            return
        found.append(DocstringExample(qualname, tuple(blocks_in_text(inspect.cleandoc(doc), path, line))))

    for module_name in public_modules():
        module = importlib.import_module(module_name)
        visit(module_name, module)
        for name in getattr(module, "__all__", ()):
            obj = getattr(module, name)
            visit(f"{module_name}.{name}", obj)
            if inspect.isclass(obj):
                for member, value in vars(obj).items():
                    target = value.fget if isinstance(value, property) else getattr(value, "__func__", value)
                    if not member.startswith("_") and callable(target):
                        visit(f"{module_name}.{name}.{member}", target)
    return [example for example in found if example.blocks]


def setup_name(path: Path) -> str | None:
    """The page's `docs-test: setup NAME`, if any."""
    for line in path.read_text(encoding="utf-8").splitlines():
        mark = _MARK.match(line)
        if mark and mark["kind"] == "setup":
            return mark["arg"]
    return None


# -- tiny stand-ins ------------------------------------------------------------------------------
class TinyProcessor:
    """Answers `AutoProcessor.from_pretrained` for a tiny model: returns that model's test inputs.

    It tokenizes nothing; the prompt and image only need to be well-formed. `decode` prints ids.
    """

    def __init__(self, loader: TinyLoader):
        self._loader = loader

    def apply_chat_template(self, messages: list, add_generation_prompt: bool = False, **_: Any) -> str:
        assert isinstance(messages, list) and messages, "messages must be a non-empty list of turns"
        return "<chat>" + ("<assistant>" if add_generation_prompt else "")

    def __call__(self, images: Any = None, text: Any = None, return_tensors: str | None = None, **_: Any):
        from transformers import BatchFeature

        assert text is not None and images is not None, "the docs' processor calls pass text and images"
        return BatchFeature(self._loader.inputs(), tensor_type=None)

    def decode(self, ids: Any, skip_special_tokens: bool = False, **_: Any) -> str:
        return " ".join(str(int(t)) for t in ids)

    def batch_decode(self, sequences: Any, **kw: Any) -> list[str]:
        return [self.decode(s, **kw) for s in sequences]


class TinyLoader:
    """`from_pretrained` replacement: a tiny random model of the requested class, float32, CPU.

    Depths follow the real checkpoints the docs name (LLaVA-1.5-7B: 32 layers, Qwen2-VL-7B: 28), so
    the schedules the docs quote resolve to the same layers. `dtype`, `device_map` and
    `attn_implementation` are accepted and ignored (tiny models run in float32 SDPA on CPU), and
    `generate` is capped at `MAX_NEW_TOKENS` new tokens to keep the suite fast (the decode path is
    the same at step 3 as at step 64; `tests/test_exactness.py` covers long generations).
    """

    MAX_NEW_TOKENS = 3

    def __init__(self):
        import tiny_models as tm
        import tiny_models_qwen_internvl as tq

        self._makers: dict[str, tuple[Callable, Callable]] = {
            "LlavaForConditionalGeneration": (lambda: tm.make_llava(dtype=_f32(), num_layers=32), tm.llava_inputs),
            "Qwen2VLForConditionalGeneration": (
                lambda: tq.make_qwen2_vl(dtype=_f32(), num_layers=28),
                tq.qwen2_vl_inputs,
            ),
        }
        self.model = None
        self._inputs: Callable | None = None

    def load_model(self, cls: type, path: str, *args: Any, **kwargs: Any):
        if cls.__name__ not in self._makers:
            raise NotImplementedError(
                f"docs snippets: no tiny stand-in for {cls.__name__}.from_pretrained; add one to "
                "tests/docs_snippets.py (TinyLoader) or mark the block `docs-test: skip REASON`"
            )
        make, inputs = self._makers[cls.__name__]
        self.model, self._inputs = make(), inputs
        generate = self.model.generate

        def capped_generate(*args: Any, max_new_tokens: int | None = None, **kw: Any):
            return generate(*args, max_new_tokens=min(max_new_tokens or self.MAX_NEW_TOKENS, self.MAX_NEW_TOKENS), **kw)

        self.model.generate = capped_generate  # on this tiny instance only
        return self.model

    def inputs(self) -> dict:
        assert self.model is not None, "the processor was used before a model was loaded"
        batch = self._inputs(self.model)
        batch.pop("position_ids", None)  # processors do not return position ids
        return batch


def _f32():
    import torch

    return torch.float32


def setup_llava(namespace: dict, loader: TinyLoader, monkeypatch: Any) -> None:
    """A tiny 32-layer LLaVA as `model`, its `processor`, `inputs`, `batch` (with labels), `image`, `prompt`."""
    import tiny_models as tm
    from PIL import Image
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    import tokenprune

    model = LlavaForConditionalGeneration.from_pretrained("/models/llava-1.5-7b-hf")
    namespace.update(
        tokenprune=tokenprune,
        model=model,
        processor=AutoProcessor.from_pretrained("/models/llava-1.5-7b-hf"),
        image=Image.open("cat.jpg"),
        prompt="USER: <image>\nWhat is shown in this picture? ASSISTANT:",
        inputs=loader.inputs(),
        batch=tm.add_labels(loader.inputs()),
    )


def setup_plugin(namespace: dict, loader: TinyLoader, monkeypatch: Any) -> None:
    """The "Write a plugin" guide: its example package importable and installed (registered), `tiny_llava`."""
    import importlib
    import sys

    import tokenprune.registry as registry_module

    monkeypatch.syspath_prepend(str(ROOT / "examples" / "tokenprune-hiddennorm"))
    monkeypatch.setattr(sys, "dont_write_bytecode", True)  # keep examples/ free of __pycache__
    monkeypatch.delitem(sys.modules, "tokenprune_hiddennorm", raising=False)
    example = importlib.import_module("tokenprune_hiddennorm")
    # As after `pip install -e ./tokenprune-hiddennorm`: the entry points plus the example plugin.
    monkeypatch.setattr(registry_module, "_REGISTRY", registry_module.Registry.load(plugins=[example]))
    setup_llava(namespace, loader, monkeypatch)
    namespace["tiny_llava"] = namespace["model"]


def setup_encoder(namespace: dict, loader: TinyLoader, monkeypatch: Any) -> None:
    """The encoder guide: `timm.create_model` builds a small random ViT of the named family (no
    download; 6 blocks so block-4 schedules resolve), `images`, and the LLaVA namespace."""
    import timm
    import torch

    create = timm.create_model

    def small_random(name: str, pretrained: bool = False, **kwargs: Any):
        small = {"img_size": 64, "embed_dim": 64, "depth": 6, "num_heads": 2}
        return create(name, pretrained=False, **{**small, **kwargs})

    monkeypatch.setattr(timm, "create_model", small_random)
    setup_llava(namespace, loader, monkeypatch)
    namespace["images"] = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))


SETUPS: dict[str, Callable[[dict, TinyLoader, Any], None]] = {
    "llava": setup_llava,
    "plugin": setup_plugin,
    "encoder": setup_encoder,
}
