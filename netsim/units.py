"""Quantities with units at the boundary, SI floats inside.

Users write bandwidths, latencies and sizes the way vendors print them; everything inside
netsim is a plain float in bytes, seconds or bytes per second.

* sizes:      "64MiB", "1.5GB", "4KiB", "1e9" (bytes), 512          -> bytes
* bandwidths: "400Gbps" (bits), "450GB/s", "50GBps", "25 GiB/s"     -> bytes per second
* durations:  "1.5us", "900ns", "2ms", "3s", "1e-6"                 -> seconds
* rates:      "989TFLOPS", "1.2e15"                                  -> FLOP per second

Decimal prefixes (k, M, G, T, P) are powers of 1000, binary ones (Ki, Mi, Gi, Ti) powers of
1024.  A lower-case ``b`` means bits (``Gbps``, ``Gb/s``); an upper-case ``B`` bytes.  Bare
numbers are taken in the base unit of the quantity.  Anything else raises :class:`UnitError`
naming the field.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

from netsim.errors import UnitError

_DECIMAL = {"": 1.0, "k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18}
_BINARY = {"Ki": 2.0**10, "Mi": 2.0**20, "Gi": 2.0**30, "Ti": 2.0**40, "Pi": 2.0**50}
_SMALL = {"": 1.0, "m": 1e-3, "u": 1e-6, "µ": 1e-6, "n": 1e-9, "p": 1e-12}

_NUMBER = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
_QTY = re.compile(rf"^\s*(?P<num>{_NUMBER})\s*(?P<unit>[A-Za-zµ/]*)\s*$")


def _split(value: object, field: str, what: str) -> tuple[float, str]:
    if isinstance(value, bool):
        raise UnitError(f"expected a {what}, got a boolean", field=field)
    if isinstance(value, int | float):
        return float(value), ""
    if not isinstance(value, str):
        raise UnitError(f"expected a {what}, got {type(value).__name__} {value!r}", field=field)
    m = _QTY.match(value)
    if not m:
        raise UnitError(f"cannot read {value!r} as a {what}", field=field)
    return float(m.group("num")), m.group("unit")


def _finite(x: float, value: object, field: str, what: str) -> float:
    if not math.isfinite(x):
        raise UnitError(f"{what} must be finite (got {value!r})", field=field)
    return x


def _prefix(prefix: str, value: object, field: str, what: str, allowed: str) -> float:
    if prefix in _BINARY:
        return _BINARY[prefix]
    if prefix in _DECIMAL:
        return _DECIMAL[prefix]
    raise UnitError(f"unknown unit prefix {prefix!r} in {value!r}; a {what} takes {allowed}", field=field)


_SIZE_HELP = "B, kB, MB, GB, TB, KiB, MiB, GiB, TiB (or b, Mb, Gb for bits)"
_BW_HELP = "bps, Mbps, Gbps, Tbps (bits), B/s, MB/s, GB/s, GBps, GiB/s (bytes)"
_TIME_HELP = "s, ms, us, ns, ps"


def parse_bytes(value: object, field: str = "size") -> float:
    """Parse a size into bytes ("64MiB" -> 67108864.0, "1e9" -> 1e9, "8Gb" -> 1e9)."""
    x, unit = _split(value, field, "size")
    if unit == "":
        return _finite(x, value, field, "size")
    if unit.endswith("B"):
        scale = _prefix(unit[:-1], value, field, "size", _SIZE_HELP)
    elif unit.endswith("b") and not unit.endswith("ib"):
        scale = _prefix(unit[:-1], value, field, "size", _SIZE_HELP) / 8.0
    else:
        raise UnitError(f"cannot read {value!r} as a size; allowed units: {_SIZE_HELP}", field=field)
    return _finite(x * scale, value, field, "size")


def parse_bandwidth(value: object, field: str = "bandwidth") -> float:
    """Parse a bandwidth into bytes per second ("400Gbps" -> 5e10, "450GB/s" -> 4.5e11)."""
    x, unit = _split(value, field, "bandwidth")
    if unit == "":
        return _finite(x, value, field, "bandwidth")
    u = unit
    if u.endswith("/s") or u.endswith("ps"):
        u = u[:-2]
    else:
        raise UnitError(f"cannot read {value!r} as a bandwidth; allowed units: {_BW_HELP}", field=field)
    if u.endswith("B"):
        scale = _prefix(u[:-1], value, field, "bandwidth", _BW_HELP)
    elif u.endswith("b"):
        scale = _prefix(u[:-1], value, field, "bandwidth", _BW_HELP) / 8.0
    else:
        raise UnitError(f"cannot read {value!r} as a bandwidth; allowed units: {_BW_HELP}", field=field)
    return _finite(x * scale, value, field, "bandwidth")


def parse_duration(value: object, field: str = "duration") -> float:
    """Parse a duration into seconds ("1.5us" -> 1.5e-6, "900ns" -> 9e-7, "2" -> 2.0)."""
    x, unit = _split(value, field, "duration")
    if unit == "":
        return _finite(x, value, field, "duration")
    if unit == "min":
        return _finite(x * 60.0, value, field, "duration")
    if unit == "h":
        return _finite(x * 3600.0, value, field, "duration")
    if not unit.endswith("s") or unit[:-1] not in _SMALL:
        raise UnitError(f"cannot read {value!r} as a duration; allowed units: {_TIME_HELP}", field=field)
    return _finite(x * _SMALL[unit[:-1]], value, field, "duration")


def parse_flops(value: object, field: str = "flops") -> float:
    """Parse a compute rate into FLOP/s ("989TFLOPS" -> 9.89e14, "312 TFLOP/s", "1e15")."""
    x, unit = _split(value, field, "compute rate")
    if unit == "":
        return _finite(x, value, field, "compute rate")
    for suffix in ("FLOPS", "FLOP/s", "flops", "FLOPs"):
        if unit.endswith(suffix):
            scale = _prefix(unit[: -len(suffix)], value, field, "compute rate", "FLOPS, TFLOPS, PFLOPS")
            return _finite(x * scale, value, field, "compute rate")
    raise UnitError(f"cannot read {value!r} as a compute rate; allowed units: FLOPS, TFLOPS", field=field)


def format_bytes(nbytes: float) -> str:
    """Human-readable binary size: 67108864 -> '64 MiB'."""
    n = float(nbytes)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024.0 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "B" or n == int(n) else f"{n:.2f} {unit}"
        n /= 1024.0
    raise AssertionError("unreachable")


def format_bandwidth(bw_Bps: float) -> str:
    """Human-readable bandwidth in bytes/s: 5e10 -> '50 GB/s'."""
    for unit, scale in (("TB/s", 1e12), ("GB/s", 1e9), ("MB/s", 1e6), ("kB/s", 1e3)):
        if abs(bw_Bps) >= scale:
            return f"{bw_Bps / scale:.4g} {unit}"
    return f"{bw_Bps:.4g} B/s"


def format_duration(seconds: float) -> str:
    """Human-readable duration: 1.5e-6 -> '1.5 us'."""
    s = abs(seconds)
    if s == 0:
        return "0 s"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6), ("ns", 1e-9)):
        if s >= scale:
            return f"{seconds / scale:.4g} {unit}"
    return f"{seconds / 1e-12:.4g} ps"


def format_shares(parts: Mapping[str, float], total: float = 1.0) -> str:
    """Parts of a whole, largest first: ``{gemm: 0.591, other: 0.248}`` -> ``'gemm 59.1%, other
    24.8%'`` (each part over ``total``)."""
    ordered = sorted(parts.items(), key=lambda kv: (-kv[1], kv[0]))
    return ", ".join(f"{k} {100 * v / total:.1f}%" for k, v in ordered)
