"""Atomic writes of report outputs with ordinary permissions.

:mod:`netsim.io` writes through ``tempfile`` names, which are created private (0600 files,
0700 directories).  Reports are meant to be read by others (served, attached, committed), so
after the rename these helpers give files and directories the usual mode (0666 / 0777 minus
the process umask).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from netsim.io import atomic_dir, atomic_file


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def publish(path: Path) -> None:
    """Give ``path`` (a file or a directory and its files) the usual permissions."""
    mask = _umask()
    if path.is_dir():
        os.chmod(path, 0o777 & ~mask)
        for child in path.iterdir():
            if child.is_file():
                os.chmod(child, 0o666 & ~mask)
    else:
        os.chmod(path, 0o666 & ~mask)


def write_text(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically."""
    with atomic_file(path) as fh:
        fh.write(text)
    publish(path)
    return path


def write_figures(directory: Path, figures: Mapping[str, bytes]) -> Path:
    """Replace ``directory`` atomically by one holding ``figures`` (file name -> PNG bytes)."""
    with atomic_dir(directory) as tmp:
        for name in sorted(figures):
            (tmp / name).write_bytes(figures[name])
    publish(directory)
    return directory
