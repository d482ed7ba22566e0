"""A fitted GEMM efficiency surface: the time of ``Y[m,n] = X[m,k] @ W[k,n]`` for any shape.

A measured kernel table holds GEMMs at the shapes somebody ran (Vidur: six models' projections
at ~260 token counts and four tensor-parallel degrees).  A training step asks for other shapes:
other hidden sizes, expert FFNs, a handful of tokens per expert.  Instead of taking the nearest
measured row, netsim fits one smooth, physically shaped model of the achieved time to all
measured points of a (dtype, pass) and evaluates it anywhere:

.. code-block:: text

    time(m, n, k) = t0 + smoothmax_p(t_compute, t_memory)
    t_compute     = 2 * k~ * ((m~ * n~)^q + c^q)^(1/q) / peak
    t_memory      = (operand_bytes * (m*k + k*n) + output_bytes * m*n) / bw
    x~            = x^(1 - b_x) * (x + a_x)^b_x          for x in m, n, k
    smoothmax_p   = (t_compute^p + t_memory^p)^(1/p)

* ``peak`` is the asymptotic FLOP/s of large GEMMs, ``bw`` the effective memory bandwidth of
  weight-streaming (small-``m``) GEMMs, ``t0`` a fixed per-kernel cost (launch, prologue);
* ``x~`` pads each dimension smoothly (tile quantisation: a dimension much smaller than
  ``a_x`` costs as if it were larger), ``c`` is the number of output elements below which the
  GPU is not filled (too few output tiles for the SMs: time stops shrinking);
* every parameter is positive and ``0 <= b_x <= 1``, so the time never decreases when ``m``,
  ``n`` or ``k`` grows (a bigger GEMM is never faster) and the surface is smooth;
* ``peak`` is bounded by the best throughput measured, so shapes larger than any measured one
  are never predicted faster than the table ever ran.

The twelve parameters are fitted by robust least squares on ``log(time)``
(:func:`fit_gemm_surface`, scipy ``least_squares`` with a soft-L1 loss, deterministic start),
so a point counts by its relative error.  On the Vidur tables the median error of the surface
on its own points is about 6 % (H100) and 5 % (A100), and a model left out of the fit is
predicted as well as the others (``netsim validate-kernels --holdout model``): the remaining
error is the saw-tooth of cuBLAS's tile and kernel choices between neighbouring token counts
(+-30 % around m = 256-512), which no smooth surface follows.

The fitted parameters are stored in the kernel table's metadata (``gemm_surface``, one entry
per ``dtype/pass``) by the importer that fits them, so loading a table does not refit it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from netsim.errors import SpecError

__all__ = ["MIN_FIT_POINTS", "GemmSurface", "fit_gemm_surface", "surface_errors"]

#: Fewest measured points a surface is fitted to (twelve parameters).
MIN_FIT_POINTS = 24

_PARAMS = (
    "t0_s",
    "peak_flops",
    "memory_Bps",
    "smooth_p",
    "a_m",
    "a_n",
    "a_k",
    "b_m",
    "b_n",
    "b_k",
    "fill_elems",
    "fill_q",
)


@dataclass(frozen=True)
class GemmSurface:
    """Fitted time model of a dense GEMM (see the module docstring for the formula).

    Attributes:
        t0_s: fixed time per call, seconds.
        peak_flops: asymptotic FLOP/s.
        memory_Bps: effective bytes/s of the memory term.
        smooth_p: exponent of the smooth maximum of the compute and memory terms.
        a_m, a_n, a_k: padding scales of m, n, k (elements).
        b_m, b_n, b_k: padding exponents in [0, 1].
        fill_elems: output elements below which the GPU is not filled.
        fill_q: exponent of the smooth fill floor.
        bytes_per_element: element size of the measured dtype (memory term).
        stats: fit statistics (``points``, ``median_abs_pct``, ``p90_abs_pct``, ``max_abs_pct``).
    """

    t0_s: float
    peak_flops: float
    memory_Bps: float
    smooth_p: float
    a_m: float
    a_n: float
    a_k: float
    b_m: float
    b_n: float
    b_k: float
    fill_elems: float
    fill_q: float
    bytes_per_element: float = 2.0
    stats: Mapping[str, float] | None = None

    # ------------------------------------------------------------------ evaluation

    def terms(
        self,
        m: ArrayLike,
        n: ArrayLike,
        k: ArrayLike,
        *,
        operand_bytes: float | None = None,
        output_bytes: float | None = None,
    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """(compute seconds, memory seconds) before the smooth maximum and ``t0``."""
        M, N, K = (np.asarray(x, dtype=np.float64) for x in (m, n, k))
        mn = _pad(M, self.a_m, self.b_m) * _pad(N, self.a_n, self.b_n)
        ob, yb = self._bytes(operand_bytes, output_bytes)
        t_memory = (ob * (M * K + K * N) + yb * M * N) / self.memory_Bps
        return self._compute(mn, K), t_memory

    def _bytes(self, operand_bytes: float | None, output_bytes: float | None) -> tuple[float, float]:
        ob = self.bytes_per_element if operand_bytes is None else operand_bytes
        return ob, self.bytes_per_element if output_bytes is None else output_bytes

    def _compute(self, padded_mn: NDArray[np.float64], k: NDArray[np.float64]) -> NDArray[np.float64]:
        """Compute seconds from the padded output size and the depth ``k``."""
        q = self.fill_q
        filled = (padded_mn**q + self.fill_elems**q) ** (1.0 / q)
        return np.asarray(2.0 * filled * _pad(k, self.a_k, self.b_k) / self.peak_flops, dtype=np.float64)

    def _combine(self, tc: NDArray[np.float64], tm: NDArray[np.float64], compute_speedup: float) -> NDArray[np.float64]:
        p = self.smooth_p
        return np.asarray(self.t0_s + ((tc / compute_speedup) ** p + tm**p) ** (1.0 / p), dtype=np.float64)

    def time_s(
        self,
        m: ArrayLike,
        n: ArrayLike,
        k: ArrayLike,
        *,
        compute_speedup: float = 1.0,
        operand_bytes: float | None = None,
        output_bytes: float | None = None,
    ) -> NDArray[np.float64]:
        """Seconds per call at ``(m, n, k)`` (arrays broadcast).

        ``compute_speedup`` divides the compute term (a faster dtype on the same tensor cores,
        e.g. FP8 on Hopper); ``operand_bytes`` / ``output_bytes`` change the element sizes of
        the memory term (default: the measured dtype's).
        """
        tc, tm = self.terms(m, n, k, operand_bytes=operand_bytes, output_bytes=output_bytes)
        return self._combine(tc, tm, compute_speedup)

    def grouped_time_s(
        self,
        tokens: ArrayLike,
        n: float,
        k: float,
        *,
        compute_speedup: float = 1.0,
        operand_bytes: float | None = None,
        output_bytes: float | None = None,
    ) -> float:
        """Seconds of one grouped GEMM: expert ``e`` multiplies ``tokens[e]`` rows by its ``W_e[k,n]``.

        One kernel (as grouped-GEMM kernels run MoE experts): every expert's rows are padded on
        their own (tiles do not span experts), the GPU is filled by all experts' tiles together
        (one fill floor, one ``t0``) and every expert with tokens reads its weights once.
        Experts with no tokens cost nothing.  With one expert this is :meth:`time_s`.
        """
        rows = [float(t) for t in np.asarray(tokens, dtype=np.float64).ravel() if t > 0]
        if not rows:
            return 0.0
        return self._scalar(rows, float(n), float(k), compute_speedup, operand_bytes, output_bytes)

    def time1(
        self,
        m: float,
        n: float,
        k: float,
        *,
        compute_speedup: float = 1.0,
        operand_bytes: float | None = None,
        output_bytes: float | None = None,
    ) -> float:
        """:meth:`time_s` of one shape, as a float (scalar arithmetic: the replay's hot path)."""
        return self._scalar([float(m)], float(n), float(k), compute_speedup, operand_bytes, output_bytes)

    def _scalar(
        self,
        rows: list[float],
        n: float,
        k: float,
        speedup: float,
        operand_bytes: float | None,
        output_bytes: float | None,
    ) -> float:
        """One (grouped) GEMM with scalar math: ``rows`` per expert (all > 0)."""

        def pad(x: float, a: float, b: float) -> float:
            return float(x ** (1.0 - b) * (x + a) ** b)

        q, p = self.fill_q, self.smooth_p
        mn = sum(pad(r, self.a_m, self.b_m) for r in rows) * pad(n, self.a_n, self.b_n)
        tc = 2.0 * (mn**q + self.fill_elems**q) ** (1.0 / q) * pad(k, self.a_k, self.b_k) / self.peak_flops
        ob, yb = self._bytes(operand_bytes, output_bytes)
        total = sum(rows)
        tm = (ob * (total * k + len(rows) * k * n) + yb * total * n) / self.memory_Bps
        return float(self.t0_s + ((tc / speedup) ** p + tm**p) ** (1.0 / p))

    # ------------------------------------------------------------------ (de)serialisation

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (what a table's metadata stores)."""
        d = asdict(self)
        d["stats"] = dict(self.stats or {})
        return d

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], *, source: str = "gemm_surface") -> GemmSurface:
        """From :meth:`to_dict` output; SpecError naming the missing or bad parameter."""
        vals: dict[str, Any] = {}
        for name in (*_PARAMS, "bytes_per_element"):
            if name not in raw:
                if name == "bytes_per_element":
                    continue
                raise SpecError(f"missing parameter {name!r}", source=source, field="gemm_surface")
            try:
                v = float(raw[name])
            except (TypeError, ValueError):
                raise SpecError(
                    f"{name} must be a number (got {raw[name]!r})", source=source, field="gemm_surface"
                ) from None
            bad = not math.isfinite(v) or v < 0 or (name.startswith("b_") and v > 1)
            if bad or (v == 0 and name in ("peak_flops", "memory_Bps", "smooth_p", "fill_q")):
                raise SpecError(f"{name} out of range (got {v!r})", source=source, field="gemm_surface")
            vals[name] = v
        stats = raw.get("stats")
        return cls(**vals, stats=dict(stats) if isinstance(stats, Mapping) else None)


def _pad(x: NDArray[np.float64], a: float, b: float) -> NDArray[np.float64]:
    """``x^(1-b) * (x+a)^b``: x smoothly padded towards ``a`` (monotone for b in [0, 1])."""
    return np.asarray(x ** (1.0 - b) * (x + a) ** b, dtype=np.float64)


# ---------------------------------------------------------------------- fitting


def _unpack(theta: NDArray[np.float64], bytes_per_element: float) -> GemmSurface:
    e = np.exp
    return GemmSurface(
        t0_s=float(e(theta[0])),
        peak_flops=float(e(theta[1])),
        memory_Bps=float(e(theta[2])),
        smooth_p=float(e(theta[3])),
        a_m=float(e(theta[4])),
        a_n=float(e(theta[5])),
        a_k=float(e(theta[6])),
        b_m=float(theta[7]),
        b_n=float(theta[8]),
        b_k=float(theta[9]),
        fill_elems=float(e(theta[10])),
        fill_q=float(e(theta[11])),
        bytes_per_element=bytes_per_element,
    )


def fit_gemm_surface(
    m: ArrayLike,
    n: ArrayLike,
    k: ArrayLike,
    time_s: ArrayLike,
    *,
    bytes_per_element: float = 2.0,
    source: str = "kernel table",
) -> GemmSurface:
    """Fit a :class:`GemmSurface` to measured GEMM times (seconds per call).

    Needs at least :data:`MIN_FIT_POINTS` points with positive, finite values; deterministic
    (fixed start derived from the data, no randomness).  ``stats`` of the result hold the fit's
    own error (percent of the measured time).
    """
    from scipy.optimize import least_squares

    M, N, K, T = (np.asarray(x, dtype=np.float64).ravel() for x in (m, n, k, time_s))
    if not (len(M) == len(N) == len(K) == len(T)):
        raise SpecError("m, n, k and time_s must have the same length", source=source)
    ok = np.isfinite(M) & np.isfinite(N) & np.isfinite(K) & np.isfinite(T) & (M > 0) & (N > 0) & (K > 0) & (T > 0)
    if int(ok.sum()) < MIN_FIT_POINTS:
        raise SpecError(
            f"a GEMM surface needs at least {MIN_FIT_POINTS} measured GEMMs (got {int(ok.sum())})", source=source
        )
    M, N, K, T = M[ok], N[ok], K[ok], T[ok]
    y = np.log(T)
    flops_rate = 2.0 * M * N * K / T
    bytes_rate = bytes_per_element * (M * K + K * N + M * N) / T
    theta0 = np.array(
        [
            math.log(0.5 * float(T.min())),
            math.log(0.95 * float(flops_rate.max())),
            math.log(1.1 * float(bytes_rate.max())),
            math.log(3.0),
            math.log(64.0),
            math.log(64.0),
            math.log(64.0),
            0.5,
            0.5,
            0.5,
            math.log(max(float(np.median(M * N)) / 10.0, 1.0)),
            0.0,
        ]
    )
    lo = [-np.inf, -np.inf, -np.inf, 0.0, -10.0, -10.0, -10.0, 0.0, 0.0, 0.0, -10.0, -2.0]
    # the asymptote may not exceed the best measured throughput: no extrapolation beyond it
    hi = [np.inf, math.log(float(flops_rate.max())), np.inf, math.log(8.0), 15.0, 15.0, 15.0, 1.0, 1.0, 1.0, 30.0, 3.0]

    def resid(theta: NDArray[np.float64]) -> NDArray[np.float64]:
        return np.log(_unpack(theta, bytes_per_element).time_s(M, N, K)) - y

    res = least_squares(resid, theta0, bounds=(lo, hi), loss="soft_l1", f_scale=0.05, max_nfev=2000)
    surf = _unpack(res.x, bytes_per_element)
    err = surface_errors(surf, M, N, K, T)
    stats = {
        "points": float(len(T)),
        "median_abs_pct": float(np.median(np.abs(err))),
        "p90_abs_pct": float(np.quantile(np.abs(err), 0.9)),
        "max_abs_pct": float(np.abs(err).max()),
    }
    return GemmSurface(**{**asdict(surf), "stats": stats})


def surface_errors(
    surface: GemmSurface, m: ArrayLike, n: ArrayLike, k: ArrayLike, time_s: ArrayLike
) -> NDArray[np.float64]:
    """Signed error of the surface in percent of the measured times: ``100 * (pred - t) / t``."""
    T = np.asarray(time_s, dtype=np.float64)
    return np.asarray(100.0 * (surface.time_s(m, n, k) - T) / T, dtype=np.float64)
