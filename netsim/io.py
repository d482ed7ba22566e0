"""Atomic outputs: a failed or interrupted command leaves nothing that looks finished.

Run directories and result files are written under a temporary sibling name and renamed into
place only when complete (docs/architecture.md, step 7).  Tables are written as both CSV and Parquet.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from netsim.errors import NetsimError


@contextlib.contextmanager
def atomic_dir(final: str | os.PathLike[str], *, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary directory that becomes ``final`` when the block succeeds.

    An existing ``final`` is replaced only after the new content is complete.  On any error
    the temporary directory is removed and ``final`` is left as it was.
    """
    final_path = Path(final)
    parent = final_path.parent if str(final_path.parent) else Path(".")
    parent.mkdir(parents=True, exist_ok=True)
    if final_path.exists() and not final_path.is_dir():
        raise NetsimError("output path exists and is not a directory", source=str(final_path))
    if final_path.exists() and not overwrite:
        raise NetsimError("output directory exists (pass --force to replace it)", source=str(final_path))
    tmp = Path(tempfile.mkdtemp(prefix=f".{final_path.name}.tmp-", dir=parent))
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700; a run directory is ordinary output
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if final_path.exists():
        old = parent / f".{final_path.name}.old-{os.getpid()}"
        final_path.rename(old)
        tmp.rename(final_path)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(final_path)


@contextlib.contextmanager
def atomic_file(final: str | os.PathLike[str], mode: str = "w") -> Iterator[Any]:
    """Open a temporary file next to ``final``; rename it into place when the block succeeds."""
    final_path = Path(final)
    final_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final_path.name}.tmp-", dir=final_path.parent)
    os.close(fd)
    try:
        with open(tmp_name, mode) as fh:
            yield fh
        os.chmod(tmp_name, 0o666 & ~_umask())  # mkstemp makes 0600
        os.replace(tmp_name, final_path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_table(df: pd.DataFrame, directory: Path, stem: str, *, parquet: bool = True) -> None:
    """Write ``df`` as ``stem.csv`` (and ``stem.parquet``) in ``directory``; floats in full precision."""
    df.to_csv(directory / f"{stem}.csv", index=False, float_format="%.12g")
    if parquet:
        df.to_parquet(directory / f"{stem}.parquet", index=False)


def write_json(obj: Any, path: Path) -> None:
    """Write JSON with sorted keys and a trailing newline (byte-stable for the same input)."""
    path.write_text(json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def _json_default(o: Any) -> Any:
    import numpy as np

    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
