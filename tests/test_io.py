"""Atomic outputs: ordinary permissions, nothing left behind on failure."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from netsim.io import atomic_dir, atomic_file


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_outputs_get_ordinary_permissions(tmp_path: Path) -> None:
    mask = os.umask(0o022)
    try:
        with atomic_dir(tmp_path / "run") as d:
            (d / "a.txt").write_text("x")
        with atomic_file(tmp_path / "f.txt") as fh:
            fh.write("y")
    finally:
        os.umask(mask)
    assert _mode(tmp_path / "run") == 0o755
    assert _mode(tmp_path / "f.txt") == 0o644


def test_failure_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), atomic_dir(tmp_path / "run") as d:
        (d / "half.txt").write_text("x")
        raise RuntimeError("boom")
    with pytest.raises(RuntimeError), atomic_file(tmp_path / "f.txt") as fh:
        fh.write("half")
        raise RuntimeError("boom")
    assert sorted(p.name for p in tmp_path.iterdir()) == []
