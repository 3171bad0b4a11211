"""Small visual question answering tasks and the project's trained tiny LLaVA.

Random-weight models prove the engine exact but say nothing about *which* visual tokens matter.
This subpackage provides what accuracy measurements need, all offline:

- `tokenprune.tools.vqa.datasets`: easy-VQA (third-party, PyPI ``easy-vqa``) and Grid-Shapes (generated
  here, seeded), both with a fixed train/test split, as lists of `Example`.
- `tokenprune.tools.vqa.grid_shapes`: the Grid-Shapes generator.
- `tokenprune.tools.vqa.model`: the word-level tokenizer, the LLaVA config, loading the shipped
  checkpoint, encoding batches and answering questions.

Submodules are imported on use (the CLI imports `tokenprune.tools.vqa.commands` to register its
subcommands, which must not pull in Pillow or the datasets).
"""
