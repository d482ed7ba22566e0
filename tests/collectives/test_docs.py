"""docs/sections/collectives.md stays true: its `netsim collective` example is the real output."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from netsim.cli import main

DOC = Path(__file__).resolve().parents[2] / "docs" / "sections" / "collectives.md"


def _console_block(prefix: str) -> tuple[str, list[str]]:
    """The first console block whose command starts with ``prefix``: (command, output lines)."""
    lines = DOC.read_text().splitlines()
    for i, ln in enumerate(lines):
        if ln.startswith(f"$ {prefix}"):
            out = []
            for nxt in lines[i + 1 :]:
                if nxt.startswith("```"):
                    break
                out.append(nxt)
            return ln[2:], out
    raise AssertionError(f"no example starting with {prefix!r}")


def test_collective_example_is_the_real_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cmd, shown = _console_block("netsim collective all_reduce")
    args = cmd.split()[1:]
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        with pytest.raises(SystemExit) as info:
            main(args)
    finally:
        os.chdir(cwd)
    assert info.value.code == 0
    real = [ln.rstrip() for ln in capsys.readouterr().out.splitlines()]
    assert real == shown
