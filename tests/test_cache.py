"""Compiled kernels are cached in a user cache directory, never inside the package (issue 20)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from netsim import cache

ROOT = Path(__file__).resolve().parent.parent

_COMPILE = """
import numpy as np
from netsim.network import _fill_kernel as k
if not k.HAVE_NUMBA:
    print("no-numba")
else:
    load = np.array([1.0, 0.0]); lb = np.zeros(2); busy = np.zeros(2); tb = np.zeros(1)
    k.advance(load, 2.0, lb, busy, np.zeros(2, dtype=np.int64), tb)
    assert lb[0] == 2.0 and tb[0] == 2.0
    import numba, os
    print(os.environ["NUMBA_CACHE_DIR"], numba.config.CACHE_DIR, sep="\\n")
"""


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("NUMBA_CACHE_DIR", "XDG_CACHE_HOME")}
    env.update({"HOME": str(tmp_path / "home"), "PYTHONPATH": str(ROOT), **extra})
    return env


def _cached_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.suffix in (".nbi", ".nbc")]


def test_kernels_compile_into_the_user_cache_directory(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-c", _COMPILE],
        env=_env(tmp_path, XDG_CACHE_HOME=str(tmp_path / "xdg")),
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    if out == ["no-numba"]:
        pytest.skip("numba is not installed")
    expected = tmp_path / "xdg" / "moe-netsim" / "numba"
    assert out == [str(expected), str(expected)]
    assert any("advance" in p.name for p in _cached_files(expected))


def test_a_user_set_numba_cache_dir_is_respected(tmp_path: Path) -> None:
    mine = tmp_path / "mine"
    out = subprocess.run(
        [sys.executable, "-c", _COMPILE],
        env=_env(tmp_path, NUMBA_CACHE_DIR=str(mine)),
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    if out == ["no-numba"]:
        pytest.skip("numba is not installed")
    assert out == [str(mine), str(mine)]
    assert _cached_files(mine)
    assert not (tmp_path / "home" / ".cache" / "moe-netsim").exists()


def test_platform_directories(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    monkeypatch.setattr(cache.sys, "platform", "linux")
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert cache.user_cache_dir() == tmp_path / ".cache" / "moe-netsim"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/ignored")  # the XDG spec: relative paths are invalid
    assert cache.user_cache_dir() == tmp_path / ".cache" / "moe-netsim"
    monkeypatch.setattr(cache.sys, "platform", "darwin")
    assert cache.user_cache_dir() == tmp_path / "Library" / "Caches" / "moe-netsim"
    monkeypatch.setattr(cache.sys, "platform", "win32")
    monkeypatch.setenv("LOCALAPPDATA", str(tmp_path / "local"))
    assert cache.user_cache_dir() == tmp_path / "local" / "moe-netsim" / "Cache"


def test_an_unwritable_home_falls_back_to_the_temp_directory(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    monkeypatch.setattr(cache, "user_cache_dir", lambda: blocked / "moe-netsim")
    monkeypatch.setattr(cache.tempfile, "gettempdir", lambda: str(tmp_path / "tmp"))
    got = cache.numba_cache_dir()
    assert got.parent.parent == tmp_path / "tmp" and got.name == "numba"
