"""The tools around the library: the ``tokenprune`` command and what it runs.

Nothing here is part of the library API that `import tokenprune` loads; the library never imports
this package (a test checks it), and the tools import the library like any user would.

- `tokenprune.tools.cli`: the ``tokenprune`` command (``list``, ``demo``, ``flops``, ``bench``, and
  ``eval`` / ``fidelity`` / ``visualize`` from `tokenprune.tools.vqa.commands`).
- `tokenprune.tools.demo`: the ``tokenprune demo`` workload on a tiny random LLaVA.
- `tokenprune.tools.bench`: the measured dense-vs-wrapped benchmark.
- `tokenprune.tools.fidelity`, `tokenprune.tools.visualize`: output agreement and kept-patch pictures.
- `tokenprune.tools.vqa`: the small VQA tasks and the shipped trained tiny LLaVA.
"""
