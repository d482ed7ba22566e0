"""Where netsim keeps files it can always recompute (numba's compiled kernels).

The engine's max-min filling loop (:mod:`netsim.network._fill_kernel`) and the DeepSeek router's
selection (:mod:`netsim.moe._select_kernel`) are compiled by numba with ``cache=True``: the first
run compiles them (seconds) and later runs load the machine code from disk.  By default numba
writes that cache next to the source file, i.e. into ``site-packages/netsim/.../__pycache__``
of an installed package: a read-only location for many users, and a trap for everyone else
(``pip uninstall`` leaves the folders behind, and a leftover ``site-packages/netsim`` folder
then shadows a later editable install of the project).

So netsim points numba at a per-user cache directory instead, before numba compiles anything:

* ``NUMBA_CACHE_DIR`` when the user set it (respected as is);
* else ``$XDG_CACHE_HOME/moe-netsim/numba`` (``~/.cache/moe-netsim/numba``) on Linux and other
  POSIX systems, ``~/Library/Caches/moe-netsim/numba`` on macOS and
  ``%LOCALAPPDATA%\\moe-netsim\\Cache\\numba`` on Windows (the platformdirs conventions);
* else, when that cannot be created or written, ``<temp dir>/moe-netsim-<user>/numba``.

Numba keeps one sub-folder per source directory under it, so several installs of netsim (or
other numba users of the same process) do not collide.  Deleting the folder is always safe.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

__all__ = ["numba_cache_dir", "use_user_numba_cache", "user_cache_dir"]

APP = "moe-netsim"


def user_cache_dir() -> Path:
    """The per-user cache directory of netsim for this platform (not created)."""
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA") or str(Path.home() / "AppData" / "Local")
        return Path(base) / APP / "Cache"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / APP
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base_path = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".cache"
    return base_path / APP


def _writable(path: Path) -> bool:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    return os.access(path, os.W_OK | os.X_OK)


def numba_cache_dir() -> Path:
    """The directory numba's cache goes to: ``NUMBA_CACHE_DIR`` if set, else the user cache
    directory's ``numba`` folder, else a folder under the temp directory (module doc)."""
    given = os.environ.get("NUMBA_CACHE_DIR", "")
    if given:
        return Path(given)
    try:
        preferred = user_cache_dir() / "numba"
    except RuntimeError:  # no home directory
        preferred = None
    if preferred is not None and _writable(preferred):
        return preferred
    user = os.environ.get("USER") or os.environ.get("USERNAME") or str(os.getuid() if hasattr(os, "getuid") else "")
    return Path(tempfile.gettempdir()) / f"{APP}-{user}" / "numba"


def use_user_numba_cache() -> None:
    """Point numba's cache at :func:`numba_cache_dir` unless the user chose one; call it before
    ``import numba`` (a numba already imported gets its setting updated as well)."""
    if os.environ.get("NUMBA_CACHE_DIR"):
        return
    path = str(numba_cache_dir())
    os.environ["NUMBA_CACHE_DIR"] = path
    config = sys.modules.get("numba.core.config")
    if config is not None:  # numba reads the variable on import; an imported one is told directly
        config.CACHE_DIR = path  # type: ignore[attr-defined]
