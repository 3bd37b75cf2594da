"""The README's Python snippet, run as written (only the address differs: the
suite's gateway listens on a free port, not 8787), with the key exported the
way the quickstart says."""

import os
import re
import subprocess
import sys

from conftest import ROOT


def test_the_readme_python_snippet_runs_as_written(gateway, key):
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, re.S)
    assert blocks, "the README has a Python snippet"
    code = blocks[0].replace("http://127.0.0.1:8787", gateway.base)
    env = dict(os.environ, HALBERD_KEY=key)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    # The mock echoes the last user message: both SDK calls printed "hi".
    assert out.stdout.splitlines() == ["hi", "hi"], out.stdout
