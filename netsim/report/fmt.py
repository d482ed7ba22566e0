"""Formatting numbers with units for report text and figure axes.

Inside netsim everything is an SI float (seconds, bytes, fractions); reports show them with a
unit chosen for the magnitude.  Byte units are decimal (1 GB = 1e9 B) like the bandwidths
vendors print.  Missing values (``None``, NaN) print as an en dash.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

DASH = "–"

_BYTE_UNITS = (("PB", 1e15), ("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3), ("B", 1.0))
_TIME_UNITS = (("s", 1.0), ("ms", 1e-3), ("us", 1e-6), ("ns", 1e-9))


def is_missing(x: Any) -> bool:
    """True for ``None`` and non-finite floats."""
    if x is None:
        return True
    try:
        return not math.isfinite(float(x))
    except (TypeError, ValueError):
        return True


def _sig(x: float, digits: int = 4) -> str:
    return f"{x:.{digits}g}"


def byte_scale(max_bytes: float) -> tuple[float, str]:
    """(divisor, unit) so that ``max_bytes / divisor`` is in [1, 1000) (bytes -> B .. PB)."""
    m = abs(max_bytes) if not is_missing(max_bytes) else 0.0
    for unit, div in _BYTE_UNITS:
        if m >= div:
            return div, unit
    return 1.0, "B"


def time_scale(max_s: float) -> tuple[float, str]:
    """(divisor, unit) so that ``max_s / divisor`` reads well (seconds -> s, ms, us, ns)."""
    m = abs(max_s) if not is_missing(max_s) else 0.0
    for unit, div in _TIME_UNITS:
        if m >= div:
            return div, unit
    return 1e-6, "us"


def fmt_bytes(x: Any) -> str:
    """``1234567`` -> ``'1.235 MB'``."""
    if is_missing(x):
        return DASH
    div, unit = byte_scale(float(x))
    return f"{_sig(float(x) / div)} {unit}"


def fmt_time(x: Any) -> str:
    """Seconds -> ``'12.35 ms'``."""
    if is_missing(x):
        return DASH
    v = float(x)
    if v == 0:
        return "0 s"
    div, unit = time_scale(v)
    return f"{_sig(v / div)} {unit}"


def fmt_pct(x: Any, digits: int = 1) -> str:
    """A fraction -> ``'12.3 %'``."""
    if is_missing(x):
        return DASH
    return f"{100.0 * float(x):.{digits}f} %"


def fmt_ratio(x: Any) -> str:
    """A ratio against a baseline -> ``'1.234x'``."""
    if is_missing(x):
        return DASH
    return f"{float(x):.3f}x"


def fmt_num(x: Any, digits: int = 4) -> str:
    """A plain number with ``digits`` significant digits (integers as such)."""
    if is_missing(x):
        return DASH
    v = float(x)
    if v.is_integer() and abs(v) < 1e15:
        return str(int(v))
    return _sig(v, digits)


def ratio(value: Any, base: Any) -> float:
    """``value / base``; NaN when either is missing or the base is zero."""
    if is_missing(value) or is_missing(base) or float(base) == 0.0:
        return math.nan
    return float(value) / float(base)


def fmt_runs(values: Sequence[object]) -> str:
    """A list with its runs of equal values collapsed: ``[3, 4, 4, 4, 2]`` as ``3, 4 x 3, 2``."""
    out = []
    for v, run in itertools.groupby(values):
        n = len(list(run))
        out.append(f"{v} x {n}" if n > 1 else str(v))
    return ", ".join(out)
