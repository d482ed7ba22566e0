"""The EP dispatch kernels' fixed time per call, fitted to their published benchmarks.

DeepEP and HybridEP publish how long their dispatch and combine kernels take (as bandwidths) at
4,096 tokens of hidden 7,168 per rank, for several expert-parallel sizes, data types and phases
(:mod:`netsim.validation.deepep`, :mod:`netsim.validation.hybridep`).  netsim times the same
routing's transfers on the same clusters; what is left, ``published - transfer``, hardly
depends on the bytes moved (0.1-0.6 ms where the bytes vary 5-fold).  A fixed latency per call
(:attr:`netsim.moe.dispatchers.Dispatcher.call_latency_s`) is the one-parameter model of it;
:func:`fit` finds the latency that minimises the squared *relative* errors of
``transfer + latency`` against the published times over a library's rows, and reports the rms
and largest errors with and without it.  The shipped constants are these fits rounded to
0.01 ms (``tests/validation/test_ep_latency.py`` holds them equal), so they come from the
library's own benchmark, never from a training row.  ``netsim validate-deepep`` and
``validate-hybridep`` print the fit below their tables.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["LatencyFit", "TimingPoint", "deepep_points", "fit", "hybridep_points"]


@dataclass(frozen=True)
class TimingPoint:
    """One published kernel timing and netsim's transfer time for it (no per-call latency)."""

    label: str
    transfer_s: float
    published_s: float


@dataclass(frozen=True)
class LatencyFit:
    """The least-squares latency over ``points`` and the relative errors it leaves."""

    library: str
    latency_s: float
    points: tuple[TimingPoint, ...]

    def errors(self, latency_s: float | None = None) -> np.ndarray:
        """predicted / published - 1 per point, with ``latency_s`` (default: the fitted one)."""
        lat = self.latency_s if latency_s is None else latency_s
        t = np.array([p.transfer_s for p in self.points])
        m = np.array([p.published_s for p in self.points])
        return np.asarray((t + lat) / m - 1.0)

    def summary(self) -> str:
        """One line: the latency, and the rms / largest error with it and without."""
        e, e0 = self.errors(), self.errors(0.0)
        worst = self.points[int(np.argmax(np.abs(e)))].label

        def rms(x: np.ndarray) -> float:
            return float(np.sqrt(np.mean(x**2)))

        return (
            f"{self.library}: fixed time per call fitted over its {len(self.points)} published timings: "
            f"{self.latency_s * 1e3:.3f} ms; rms error {rms(e0):.1%} without it, {rms(e):.1%} with it "
            f"(largest {np.abs(e).max():.1%}: {worst})"
        )


def fit(library: str, points: list[TimingPoint]) -> LatencyFit:
    """The latency ``a`` minimising ``sum(((transfer + a) / published - 1)^2)`` (closed form)."""
    if not points:
        raise ValueError("no timing points to fit")
    t = np.array([p.transfer_s for p in points])
    m = np.array([p.published_s for p in points])
    w = 1.0 / m**2
    a = float(np.sum((m - t) * w) / np.sum(w))
    return LatencyFit(library, a, tuple(points))


def deepep_points(seed: int = 0) -> list[TimingPoint]:
    """DeepEP's 8 normal-kernel timings on H800 (dispatch and combine at EP 8-64)."""
    from netsim.validation.deepep import PUBLISHED, compare

    out = []
    for r in compare(seed=seed, latency_s=0.0):
        pub = PUBLISHED[r.ep]
        out.append(TimingPoint(f"EP {r.ep} dispatch", r.dispatch_s, r.dispatch_s * r.dispatch_GBps / pub[0]))
        out.append(TimingPoint(f"EP {r.ep} combine", r.combine_s, r.combine_s * r.combine_GBps / pub[1]))
    return out


def hybridep_points(seed: int = 0) -> list[TimingPoint]:
    """HybridEP's 9 kernel-only timings on H100 at 16 SMs (BF16 and FP8 dispatch, combine; EP 16-64)."""
    from netsim.validation.hybridep import compare

    out = []
    for r in compare(seed=seed, latency_s=0.0):
        p = r.published
        out.append(TimingPoint(f"EP {r.ep} dispatch", r.dispatch_s, r.dispatch_s * r.dispatch_GBps / p[2]))
        out.append(
            TimingPoint(
                f"EP {r.ep} FP8 dispatch",
                r.fp8_dispatch_s,
                r.fp8_dispatch_s * r.fp8_dispatch_GBps / r.published_fp8_kernel,
            )
        )
        out.append(TimingPoint(f"EP {r.ep} combine", r.combine_s, r.combine_s * r.combine_GBps / p[3]))
    return out
