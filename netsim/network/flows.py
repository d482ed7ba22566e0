"""The flow store: every flow the network was given, one row per flow in growable numpy columns.

A row holds what a flow *is* (source and destination device ids, size, start time, traffic
class and label codes, rate cap) and what became of it (path latency and weighted hop count
once routed, delivery time once delivered, its state).  Flow ids are row numbers, handed out in
submission order; the ECMP hash of a flow is seeded by its id, so the order in which flows are
submitted is part of the result.

A coflow (see :mod:`netsim.network.coflows`) takes one row here, its *carrier*: the aggregate
the sharing kernel moves; its transfers live in the coflow ledger, not in these columns.
``work`` is what a row must drain in units of its own rate: its size for a flow, the bytes on
the bottleneck link per fair share for a carrier.

Class and label names are stored as small integer codes (``class_names``, ``label_names`` in
first-seen order), so that millions of rows cost a few bytes each.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from netsim.errors import NetsimError, SpecError

PENDING, ACTIVE, DONE = 0, 1, 2


class Column:
    """A growable 1-D numpy array (amortised O(1) append of batches)."""

    def __init__(self, dtype: Any, fill: Any = 0) -> None:
        self.data = np.full(1024, fill, dtype=dtype)
        self.size = 0

    def extend(self, values: np.ndarray) -> None:
        n = values.shape[0]
        need = self.size + n
        if need > self.data.shape[0]:
            self.reserve(n, factor=2)
        self.data[self.size : need] = values
        self.size = need

    def extend_const(self, n: int, value: Any) -> None:
        """Append ``n`` copies of ``value`` (no temporary array)."""
        need = self.size + n
        if need > self.data.shape[0]:
            self.reserve(n, factor=2)
        self.data[self.size : need] = value
        self.size = need

    def reserve(self, n: int, factor: int = 1) -> None:
        """Make room for ``n`` more values (``factor`` 2: at least double, for amortised appends).
        The room is left uninitialised (appends write it; untouched memory costs nothing)."""
        need = self.size + n
        if need > self.data.shape[0]:
            new = np.empty(max(need, factor * self.data.shape[0]), dtype=self.data.dtype)
            new[: self.size] = self.data[: self.size]
            self.data = new

    @property
    def view(self) -> np.ndarray:
        return self.data[: self.size]


def check_sizes(n_dst: int, n: int, nbytes: Sequence[float] | np.ndarray | float) -> np.ndarray:
    """The sizes of ``n`` flows (``nbytes`` broadcast), checked: as many destinations as
    sources, sizes finite and >= 0."""
    if n_dst != n:
        raise SpecError("src and dst must have the same length", field="dst")
    nb = np.broadcast_to(np.asarray(nbytes, dtype=np.float64), (n,))
    if (~np.isfinite(nb)).any() or (nb < 0).any():
        raise SpecError("flow sizes must be finite and >= 0 bytes", field="bytes")
    return nb


def _code(table: dict[str, int], name: str) -> int:
    """The code of ``name`` (codes are handed out in first-seen order)."""
    return table.setdefault(name, len(table))


class FlowStore:
    """The columns of every flow, indexed by flow id.

    Args:
        device_index: device name -> device id (the link table's numbering).
        rate_cap_Bps: a cap on every flow's rate (``inf`` for none).
    """

    def __init__(self, device_index: Mapping[str, int], rate_cap_Bps: float = np.inf) -> None:
        self.device_index = device_index
        self.rate_cap_Bps = rate_cap_Bps
        self.src = Column(np.int64)
        self.dst = Column(np.int64)
        self.nbytes = Column(np.float64)
        self.start = Column(np.float64)
        self.end = Column(np.float64, np.nan)
        self.latency = Column(np.float64)
        self.hops = Column(np.float64)
        self.cls = Column(np.int32)
        self.label = Column(np.int32)
        self.cap = Column(np.float64, np.inf)
        self.state = Column(np.int8)
        self.work = Column(np.float64)
        self.carrier = Column(np.bool_, False)
        self.class_names: dict[str, int] = {}
        self.label_names: dict[str, int] = {}
        self.num_carriers = 0

    @property
    def size(self) -> int:
        """Rows (flows and coflow carriers) stored."""
        return self.src.size

    def _columns(self) -> tuple[Column, ...]:
        return (
            self.src,
            self.dst,
            self.nbytes,
            self.start,
            self.end,
            self.latency,
            self.hops,
            self.cls,
            self.label,
            self.cap,
            self.state,
            self.work,
            self.carrier,
        )

    def reserve(self, n: int) -> None:
        """Make room for ``n`` more rows at once (saves the columns from growing step by step)."""
        for col in self._columns():
            col.reserve(max(int(n), 0))

    def device_ids(self, names: Sequence[str] | np.ndarray, field: str) -> np.ndarray:
        """Device ids of device names; a one-line error naming ``field`` for an unknown one."""
        index = self.device_index
        try:
            return np.fromiter((index[n] for n in names), dtype=np.int64, count=len(names))
        except KeyError as exc:
            raise NetsimError(f"unknown device {exc.args[0]!r}", field=field) from None

    def _ids_of(self, devs: Sequence[str] | np.ndarray, field: str) -> np.ndarray:
        if isinstance(devs, np.ndarray) and devs.dtype.kind in "iu":
            return np.asarray(devs)
        return self.device_ids(list(devs), field)

    def append(
        self,
        src: Sequence[str] | np.ndarray,
        dst: Sequence[str] | np.ndarray,
        nbytes: Sequence[float] | np.ndarray | float,
        start_s: Sequence[float] | np.ndarray | float,
        now: float,
        traffic_class: str,
        label: str,
        rate_cap_Bps: float | np.ndarray | None,
        carrier: bool = False,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Validate flows (device names or ids) and append them as pending rows; their ids and
        start times."""
        s = self._ids_of(src, "src")
        d = self._ids_of(dst, "dst")
        n = s.shape[0]
        nb = check_sizes(d.shape[0], n, nbytes)
        st = np.broadcast_to(np.asarray(start_s, dtype=np.float64), (n,))
        if (~np.isfinite(st)).any() or (st < now - 1e-15).any():
            raise SpecError(f"flow start times must be finite and >= now ({now} s)", field="start_s")
        first = self.src.size
        ids = np.arange(first, first + n, dtype=np.int64)
        self.src.extend(s.astype(np.int64, copy=False))
        self.dst.extend(d.astype(np.int64, copy=False))
        self.nbytes.extend(nb)
        self.start.extend(st)
        self.end.extend_const(n, np.nan)
        self.latency.extend_const(n, 0.0)
        self.hops.extend_const(n, 0.0)
        self.cls.extend_const(n, _code(self.class_names, traffic_class))
        self.label.extend_const(n, _code(self.label_names, label))
        if rate_cap_Bps is None:
            self.cap.extend_const(n, self.rate_cap_Bps)
        elif np.ndim(rate_cap_Bps) == 0:
            self.cap.extend_const(n, min(self.rate_cap_Bps, float(rate_cap_Bps)))
        else:  # one cap per flow (a collective's transfers)
            caps = np.broadcast_to(np.asarray(rate_cap_Bps, dtype=np.float64), (n,))
            if (np.isnan(caps) | (caps <= 0)).any():
                raise SpecError("flow rate caps must be > 0 bytes/s", field="rate_cap_Bps")
            self.cap.extend(np.minimum(caps, self.rate_cap_Bps))
        self.state.extend_const(n, PENDING)
        self.work.extend(nb)
        self.carrier.extend_const(n, carrier)
        self.num_carriers += n if carrier else 0
        return ids, st

    def flow_rows(self) -> np.ndarray:
        """Ids of the rows that are flows (not coflow carriers), ascending."""
        if not self.num_carriers:
            return np.arange(self.size, dtype=np.int64)
        return np.flatnonzero(~self.carrier.view)
