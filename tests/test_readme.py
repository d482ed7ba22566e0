"""The README is assembled from docs/ and its quickstart test command is what CI runs."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_readme_is_up_to_date() -> None:
    res = subprocess.run([sys.executable, str(ROOT / "docs" / "build_readme.py"), "--check"], capture_output=True,
                         text=True, check=False)
    assert res.returncode == 0, res.stderr


def test_ci_runs_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"## Quickstart.*?```bash\n(.*?)```", readme, re.S)
    assert block is not None
    lines = [ln for ln in block.group(1).splitlines() if ln.strip()]
    assert len(lines) == 2  # one installs and runs the main job, one installs test needs and tests
    assert "netsim run" in lines[0]
    assert lines[1] in (ROOT / ".ci" / "run").read_text()
