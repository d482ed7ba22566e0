"""`netsim --help` and `--version` start fast: no heavy library is imported (issue 20 item 3).

A deterministic proxy for start-up time (benchmarks/startup.py measures the time itself): the
command modules import numpy, pandas, networkx, simpy, matplotlib, numba, scipy and pydantic
inside their command functions, never at module level.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("numpy", "pandas", "networkx", "simpy", "matplotlib", "numba", "scipy", "pydantic", "pyarrow", "yaml")

_PROBE = """
import json, sys
from netsim.cli import main
try:
    main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
heavy = sorted(m for m in {heavy!r} if m in sys.modules)
print(json.dumps({{"code": code, "heavy": heavy}}), file=sys.stderr)
"""


def _probe(*args: str) -> dict[str, object]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    res = subprocess.run(
        [sys.executable, "-c", _PROBE.format(heavy=HEAVY), *args], capture_output=True, text=True, env=env, check=False
    )
    return json.loads(res.stderr.strip().splitlines()[-1])


@pytest.mark.parametrize("args", [["--help"], ["--version"], []])
def test_help_and_version_import_no_heavy_library(args: list[str]) -> None:
    got = _probe(*args)
    assert got["code"] == 0
    assert got["heavy"] == []


@pytest.mark.parametrize("command", ["run", "topology", "sweep", "collective", "study", "validate"])
def test_subcommand_help_imports_no_heavy_library(command: str) -> None:
    got = _probe(command, "--help")
    assert got["code"] == 0
    # typer itself builds the parameter adapters of a command with pydantic (typer._adapters)
    assert [m for m in got["heavy"] if m != "pydantic"] == []
