"""``python -m tokenprune``: the ``tokenprune`` command, for environments without the console script.

The CLI lives in `tokenprune.tools.cli`; it is imported only here, on demand, so ``import
tokenprune`` never loads the tools.
"""

import sys

from .tools.cli import main

sys.exit(main())
