"""Print the README's N-th set-up command (1: the main job, 2: the tests), exactly as written.

`.ci/run` runs these verbatim, so the README and CI cannot drift apart: the commands are the first
two ```bash blocks under the README's "Two commands" heading.
"""

import pathlib
import re
import sys

readme = (pathlib.Path(__file__).resolve().parent.parent / "README.md").read_text()
section = readme.split("## Two commands", 1)[1].split("\n## ", 1)[0]
blocks = re.findall(r"```bash\n(.*?)\n```", section, flags=re.S)
if len(blocks) != 2:
    sys.exit(f"README's 'Two commands' section must hold exactly two ```bash blocks, found {len(blocks)}")
print(blocks[int(sys.argv[1]) - 1].strip())
