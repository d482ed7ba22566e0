"""Atomic writes of report outputs (text files and figure directories).

Permissions are ordinary (0666 / 0777 minus the umask): :mod:`netsim.io` sets them.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from netsim.io import atomic_dir, atomic_file


def write_text(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically."""
    with atomic_file(path) as fh:
        fh.write(text)
    return path


def write_figures(directory: Path, figures: Mapping[str, bytes]) -> Path:
    """Replace ``directory`` (a folder inside a netsim output) atomically by one holding ``figures``."""
    with atomic_dir(directory, kind=None) as tmp:
        for name in sorted(figures):
            (tmp / name).write_bytes(figures[name])
    return directory
