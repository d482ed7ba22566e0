"""Attention-core time from its FLOPs at a published flash-attention throughput.

Kernel tables imported from inference profilers (Vidur) carry the projections around attention
but not the attention core (softmax(QK^T)V).  :class:`FlashAttentionModel` times it as

``time = max(flops / rate(pass, seq), bytes / memory_Bps)``

with the catalogue's FLOPs (causal: half of the ``4 b h s^2 d`` forward, the backward 2.5x the
forward, the same convention as the flash-attention benchmarks) and ``rate`` the throughput a
paper measured for that pass at that sequence length, interpolated linearly in ``log(seq)``
(constant above the longest measured sequence; below the shortest it falls with the first
segment's log-log slope clamped to [0, 1], never faster).  Curves measured at several head
dimensions (``by_head_dim``) are interpolated linearly in ``log(head_dim)`` between the two
that bracket the call's, the nearest one outside their range.  The curves and their sources
live in :mod:`netsim.calibration.profiles`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from netsim.calibration.catalogue import get_kernel
from netsim.calibration.estimate import ComputeEstimate
from netsim.errors import SpecError

__all__ = ["FlashAttentionModel"]


class FlashAttentionModel:
    """Attention times from published throughput curves (one per pass).

    Args:
        curves: ``{"fwd": [(seq, FLOP/s), ...], "bwd": [...]}``, at least one point each.
        memory_Bps: bytes/s for the memory-bound floor.
        name: label for reports (``flash-attention:<source>``).
        dtype: the dtype the curves were measured in (answers carry it).
        by_head_dim: ``{head_dim: curves}`` measured at other head dimensions than ``curves``
            (module doc); ``curves`` stands for every head dimension without it.
    """

    def __init__(
        self,
        curves: Mapping[str, Sequence[tuple[float, float]]],
        memory_Bps: float,
        *,
        name: str = "flash-attention",
        dtype: str = "bfloat16",
        by_head_dim: Mapping[int, Mapping[str, Sequence[tuple[float, float]]]] | None = None,
    ) -> None:
        self.name = name
        self.dtype = dtype
        self.memory_Bps = float(memory_Bps)
        if not (math.isfinite(self.memory_Bps) and self.memory_Bps > 0):
            raise SpecError(f"must be finite and > 0 (got {memory_Bps!r})", field="memory_Bps")
        self._curves = self._parse(curves)
        #: (head dims ascending, their curves): empty when one set of curves serves every head dim
        dims = sorted((by_head_dim or {}).items())
        self._dims = [float(d) for d, _ in dims]
        self._by_dim = [self._parse(c) for _, c in dims]

    @staticmethod
    def _parse(curves: Mapping[str, Sequence[tuple[float, float]]]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for pass_ in ("fwd", "bwd"):
            pts = sorted((float(s), float(r)) for s, r in curves.get(pass_, ()))
            if not pts or any(s <= 0 or r <= 0 or not math.isfinite(r) for s, r in pts):
                raise SpecError(f"attention curve {pass_!r} needs points (seq > 0, FLOP/s > 0)", field="attention")
            out[pass_] = (np.log([s for s, _ in pts]), np.log([r for _, r in pts]))
        return out

    def rate(self, pass_: str, seq: float, head_dim: float | None = None) -> float:
        """Achieved FLOP/s of pass ``pass_`` at sequence length ``seq`` (and ``head_dim``, where the
        curves depend on it: module doc)."""
        if not self._dims or head_dim is None:
            return self._rate(self._curves[pass_], seq)
        dims = self._dims
        if head_dim <= dims[0] or len(dims) == 1:
            return self._rate(self._by_dim[0][pass_], seq)
        if head_dim >= dims[-1]:
            return self._rate(self._by_dim[-1][pass_], seq)
        i = int(np.searchsorted(dims, head_dim))  # dims[i-1] < head_dim <= dims[i]
        lo, hi = self._rate(self._by_dim[i - 1][pass_], seq), self._rate(self._by_dim[i][pass_], seq)
        w = math.log(head_dim / dims[i - 1]) / math.log(dims[i] / dims[i - 1])
        return math.exp((1 - w) * math.log(lo) + w * math.log(hi))

    @staticmethod
    def _rate(curve: tuple[np.ndarray, np.ndarray], seq: float) -> float:
        xs, ys = curve
        x = math.log(seq)
        if len(xs) == 1 or x >= xs[-1]:
            return float(math.exp(ys[-1] if x >= xs[-1] else ys[0]))
        if x <= xs[0]:
            slope = min(max((ys[1] - ys[0]) / (xs[1] - xs[0]), 0.0), 1.0)
            return float(math.exp(ys[0] + slope * (x - xs[0])))
        return float(math.exp(np.interp(x, xs, ys)))

    def estimate(self, kernel: str, pass_: str = "fwd", *, dtype: str | None = None, **shape: float) -> ComputeEstimate:
        """Time of one attention call (``kernel`` must be ``attention``)."""
        if kernel != "attention":
            raise SpecError(f"{self.name} times attention only (asked for {kernel!r})")
        spec = get_kernel(kernel)
        spec.check_pass(pass_)
        q = spec.check_shape(shape)
        flops = spec.flops(q, pass_)
        nbytes = spec.nbytes(q, pass_, self.dtype)
        t = max(flops / self.rate(pass_, q["seq"], q.get("head_dim")), nbytes / self.memory_Bps)
        return ComputeEstimate(kernel, pass_, self.dtype, t, flops, nbytes, self.name)

    def time(self, kernel: str, pass_: str = "fwd", *, dtype: str | None = None, **shape: float) -> float:
        return self.estimate(kernel, pass_, dtype=dtype, **shape).time_s
