"""Reading a published measurement CSV (Vidur's profiles, Liger-Kernel's benchmarks): one place
that turns every way a file can fail to read into a one-line :class:`~netsim.errors.TraceError`
naming the file."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from netsim.errors import TraceError

__all__ = ["read_measurements"]


def read_measurements(path: str | Path) -> pd.DataFrame:
    """The rows of the CSV at ``path``; TraceError (naming the file) when it cannot be read, is
    not a CSV, or has no rows."""
    src = str(path)
    try:
        df = pd.read_csv(path)
    except (OSError, UnicodeDecodeError) as exc:
        raise TraceError(f"cannot read: {exc}", source=src) from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as exc:
        raise TraceError(f"malformed CSV: {' '.join(str(exc).split())}", source=src) from None
    if df.empty:
        raise TraceError("no rows", source=src)
    return df
