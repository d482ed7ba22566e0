"""Calibrating the network model against measured nccl-tests curves.

The flow model gives every link its nominal bandwidth and every transfer its path latency.  Real
collectives get less: protocol overhead (headers, flow control, the LL/LL128/Simple protocols)
takes a fraction of every link, and each step of a collective pays a software latency (kernel
launch, synchronisation, proxy threads).  Two kinds of parameters capture that:

* ``link_efficiency[class]`` in (0, 1]: the fraction of nominal capacity payload gets on links
  of that class (``nvlink``, ``ib``, ``roce``, ...), applied as ``Network(efficiency=...)``;
* ``step_latency_s`` >= 0: the software latency before every transfer of a collective, applied
  as ``run_collective(..., step_latency_s=...)``.

:func:`fit_calibration` finds the values for which simulated times match measured ones: it
minimises the squared error of ``log(time)`` over all measured sizes with
``scipy.optimize.least_squares`` over ``(log efficiency per class, step latency)``.  Large,
bandwidth-bound sizes constrain the efficiency of the bottleneck class; small, latency-bound
sizes the step latency.  The step latency enters a collective's time as ``depth * latency``
(``depth``: transfers on the plan's longest dependency chain), so only the efficiencies need
new simulations; the final errors are from full simulations with both.  A class is only
*fitted* if the measured times depend on it (it is a bottleneck somewhere); the others keep 1.0
and are listed as unconstrained.  A single-node log constrains NVLink, a multi-node log the
inter-node fabric: give both to calibrate both.

The result is a :class:`Calibration`, stored as YAML (format ``netsim-calibration/1``)::

    format: netsim-calibration/1
    topology: dgx-h100          # what the fit simulated
    nodes: 2
    routing: ecmp
    link_efficiency: {ib: 0.91, nvlink: 0.83}
    step_latency_s: 4.1e-06
    unconstrained_classes: [pcie]
    source_logs: [logs/all_reduce_perf_2n.log]
    fit:
      rms_log_error: 0.031
      points:                   # one per measured size
      - {source: ..., op: all_reduce, nranks: 16, nnodes: 2, size_bytes: 1048576,
         measured_us: 61.2, simulated_us: 59.8, rel_error: -0.023}

Only ``link_efficiency`` and ``step_latency_s`` are needed to apply a calibration
(:func:`load_calibration`, :meth:`Calibration.engine_kwargs`); the rest documents the fit.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np
import yaml

from netsim.errors import LimitError, NetsimError, SpecError
from netsim.io import atomic_file
from netsim.limits import MAX_NESTING, MAX_SPEC_BYTES, check_file_size, check_structure
from netsim.units import parse_duration

CALIBRATION_FORMAT = "netsim-calibration/1"
_MIN_EFFICIENCY = 0.02


@dataclass(frozen=True)
class FitPoint:
    """One measured size and what the calibrated model predicts for it."""

    source: str
    op: str
    nranks: int
    nnodes: int
    size_bytes: int
    measured_us: float
    simulated_us: float

    @property
    def rel_error(self) -> float:
        """``simulated / measured - 1``."""
        return self.simulated_us / self.measured_us - 1.0 if self.measured_us > 0 else math.nan


@dataclass
class Calibration:
    """Fitted network-model parameters (see the module docstring for the file format).

    Attributes:
        link_efficiency: link class -> efficiency in (0, 1].
        step_latency_s: per-transfer software latency of collectives, seconds.
        topology, nodes, routing: what the fit simulated (documentation).
        unconstrained_classes: classes the measurements did not constrain (left at 1.0).
        source_logs: the measured logs.
        points: per measured size, measured and simulated time.
        rms_log_error: root mean square of ``log(simulated / measured)``.
    """

    link_efficiency: dict[str, float] = field(default_factory=dict)
    step_latency_s: float = 0.0
    topology: str | None = None
    nodes: int | None = None
    routing: str | None = None
    unconstrained_classes: list[str] = field(default_factory=list)
    source_logs: list[str] = field(default_factory=list)
    points: list[FitPoint] = field(default_factory=list)
    rms_log_error: float | None = None

    def engine_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``Network(graph, **kwargs)``: the link efficiencies."""
        return {"efficiency": dict(self.link_efficiency)} if self.link_efficiency else {}

    def collective_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``run_collective``: the step latency."""
        return {"step_latency_s": self.step_latency_s}

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": CALIBRATION_FORMAT,
            "topology": self.topology,
            "nodes": self.nodes,
            "routing": self.routing,
            "link_efficiency": {k: round(float(v), 6) for k, v in sorted(self.link_efficiency.items())},
            "step_latency_s": float(f"{self.step_latency_s:.6g}"),
            "unconstrained_classes": list(self.unconstrained_classes),
            "source_logs": list(self.source_logs),
            "fit": {
                "rms_log_error": None if self.rms_log_error is None else float(f"{self.rms_log_error:.6g}"),
                "points": [{
                    "source": p.source, "op": p.op, "nranks": p.nranks, "nnodes": p.nnodes,
                    "size_bytes": p.size_bytes, "measured_us": round(p.measured_us, 6),
                    "simulated_us": round(p.simulated_us, 6), "rel_error": round(p.rel_error, 6),
                } for p in self.points],
            },
        }

    def to_yaml(self) -> str:
        head = ("# netsim calibration: link efficiencies (fraction of nominal bandwidth per link class)\n"
                "# and per-step software latency of collectives, fitted to nccl-tests logs.\n"
                "# Apply with `--calibration FILE` (netsim collective / run / flows).\n")
        return head + yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None, width=110)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the YAML file atomically."""
        with atomic_file(path) as fh:
            fh.write(self.to_yaml())

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "<calibration>") -> Calibration:
        """Validate a parsed calibration file."""
        if not isinstance(data, Mapping):
            raise SpecError("a calibration file must be a mapping", source=source)
        allowed = {"format", "topology", "nodes", "routing", "link_efficiency", "step_latency_s",
                   "unconstrained_classes", "source_logs", "fit"}
        unknown = sorted(set(data) - allowed)
        if unknown:
            raise SpecError(f"unknown key {unknown[0]!r}; allowed: {', '.join(sorted(allowed))}", source=source,
                            field=unknown[0])
        fmt = data.get("format", CALIBRATION_FORMAT)
        if fmt != CALIBRATION_FORMAT:
            raise SpecError(f"unsupported format {fmt!r}; expected {CALIBRATION_FORMAT!r}", source=source,
                            field="format")
        eff_raw = data.get("link_efficiency") or {}
        if not isinstance(eff_raw, Mapping):
            raise SpecError("must map link classes to efficiencies", source=source, field="link_efficiency")
        eff: dict[str, float] = {}
        for k, v in eff_raw.items():
            if isinstance(v, bool) or not isinstance(v, int | float) or not 0.0 < float(v) <= 1.0:
                raise SpecError(f"must be a number in (0, 1], got {v!r}", source=source,
                                field=f"link_efficiency.{k}")
            eff[str(k)] = float(v)
        try:
            lat = parse_duration(data.get("step_latency_s", 0.0), field="step_latency_s")
        except NetsimError as exc:
            raise exc.with_source(source) from None
        if lat < 0:
            raise SpecError(f"must be >= 0, got {lat!r}", source=source, field="step_latency_s")
        fit = data.get("fit") or {}
        points = []
        if isinstance(fit, Mapping):
            for p in fit.get("points") or []:
                try:
                    points.append(FitPoint(str(p["source"]), str(p["op"]), int(p["nranks"]), int(p["nnodes"]),
                                           int(p["size_bytes"]), float(p["measured_us"]), float(p["simulated_us"])))
                except (KeyError, TypeError, ValueError):
                    raise SpecError(f"malformed fit point {p!r}", source=source, field="fit.points") from None
        nodes = data.get("nodes")
        rms = fit.get("rms_log_error") if isinstance(fit, Mapping) else None
        return cls(link_efficiency=eff, step_latency_s=lat,
                   topology=None if data.get("topology") is None else str(data["topology"]),
                   nodes=None if nodes is None else int(nodes),
                   routing=None if data.get("routing") is None else str(data["routing"]),
                   unconstrained_classes=[str(c) for c in data.get("unconstrained_classes") or []],
                   source_logs=[str(s) for s in data.get("source_logs") or []], points=points,
                   rms_log_error=None if rms is None else float(rms))


def load_calibration(path: str | os.PathLike[str]) -> Calibration:
    """Read and validate a calibration YAML file (errors name the file and the field)."""
    p = Path(path)
    check_file_size(p, MAX_SPEC_BYTES, "a calibration file")
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise SpecError("no such calibration file", source=str(p)) from None
    except OSError as exc:
        raise SpecError(f"cannot read: {exc.strerror}", source=str(p)) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        raise SpecError(f"{where}not valid YAML", source=str(p)) from None
    except RecursionError:
        raise LimitError(f"nested deeper than {MAX_NESTING} levels", source=str(p)) from None
    check_structure(data, str(p))
    return Calibration.from_dict(data or {}, source=str(p))


@dataclass
class FitCase:
    """Measured times of one collective on one group, and how to simulate it.

    Attributes:
        graph: the topology to simulate on.
        op, devices, algo: the collective (``algo=None``: the op's default).
        sizes_bytes, measured_s: the measured curve.
        source: where the measurement came from (log file).
        nnodes: servers the group spans (documentation).
        chunk_bytes, channels: passed to the planner.
    """

    graph: nx.DiGraph
    op: str
    devices: list[str]
    sizes_bytes: np.ndarray
    measured_s: np.ndarray
    algo: str | None = None
    source: str = ""
    nnodes: int = 1
    chunk_bytes: float | None = None
    channels: int | None = None


class _Model:
    """Simulated times of all cases as a function of (efficiencies, step latency)."""

    def __init__(self, cases: Sequence[FitCase], routing: str, seed: int, max_sizes: int) -> None:
        from netsim.collectives.registry import build_plan

        self.cases = cases
        self.routing = routing
        self.seed = seed
        self.items: list[tuple[int, int, Any, int]] = []  # (case, size index, plan, depth)
        self.fit_mask: list[bool] = []
        for ci, c in enumerate(cases):
            n = len(c.sizes_bytes)
            keep = set(np.unique(np.round(np.linspace(0, n - 1, min(n, max_sizes))).astype(int)).tolist())
            for si, size in enumerate(c.sizes_bytes.tolist()):
                plan = build_plan(c.op, c.devices, float(size), algo=c.algo, graph=c.graph,
                                  chunk_bytes=c.chunk_bytes, channels=c.channels)
                self.items.append((ci, si, plan, plan.depth()))
                self.fit_mask.append(si in keep)
        self.depth = np.array([it[3] for it in self.items], dtype=float)
        self.measured = np.array([cases[ci].measured_s[si] for ci, si, _, _ in self.items], dtype=float)
        self.case_of = np.array([it[0] for it in self.items])
        self.size_of = np.array([it[2].nbytes for it in self.items])
        self._cache: dict[tuple[float, ...], np.ndarray] = {}
        self.simulations = 0

    def _run(self, k: int, eff: Mapping[str, float], step_latency_s: float) -> Any:
        from netsim.collectives.executor import execute_plan, result_of
        from netsim.network.engine import Network

        ci, _, plan, _ = self.items[k]
        net = Network(self.cases[ci].graph, routing=self.routing, seed=self.seed, efficiency=dict(eff) or None)
        proc = execute_plan(net, plan, step_latency_s=step_latency_s)
        net.run()
        self.simulations += 1
        return net, result_of(proc).time_s

    def simulate(self, eff: Mapping[str, float], step_latency_s: float, which: np.ndarray) -> np.ndarray:
        """Simulated seconds of the items selected by the boolean mask ``which`` (NaN elsewhere)."""
        out = np.full(len(self.items), np.nan)
        for k in np.flatnonzero(which).tolist():
            out[k] = self._run(k, eff, step_latency_s)[1]
        return out

    def times(self, classes: Sequence[str], x: np.ndarray, which: np.ndarray) -> np.ndarray:
        """Times for parameters ``x = (log efficiency per class..., step latency in us)`` (cached)."""
        key = tuple(np.round(x, 10).tolist())
        hit = self._cache.get(key)
        if hit is None:
            eff = {c: float(min(1.0, math.exp(v))) for c, v in zip(classes, x[:-1], strict=True)}
            hit = self._cache[key] = self.simulate(eff, float(x[-1]) * 1e-6, which)
        return hit

    def probe(self) -> tuple[list[str], dict[int, str]]:
        """At nominal capacity, the largest size of every case: the link classes that carry bytes
        and, per case, the class of its bottleneck link (the one that needs the longest to carry
        its bytes)."""
        classes: set[str] = set()
        bottleneck: dict[int, str] = {}
        for ci in range(len(self.cases)):
            k = max(np.flatnonzero(self.case_of == ci).tolist(), key=lambda k: self.size_of[k])
            net, _ = self._run(k, {}, 0.0)
            lr = net.link_records()
            used = lr[lr["bytes"] > 0]
            classes.update(str(x) for x in used["class"].unique())
            if not used.empty:
                need = used["bytes"] / used["effective_capacity_Bps"]
                bottleneck[ci] = str(used.loc[need.idxmax(), "class"])
        return sorted(classes), bottleneck


def fit_calibration(cases: Sequence[FitCase], *, routing: str = "ecmp", seed: int = 0,
                    classes: Sequence[str] | None = None, max_sizes: int = 8, topology: str | None = None,
                    nodes: int | None = None, source_logs: Sequence[str] = (),
                    progress: Callable[[str], None] | None = None) -> Calibration:
    """Fit link-class efficiencies and the per-step latency to measured collective times.

    Starting point: the step latency from the smallest sizes (``(measured - simulated) / depth``),
    the efficiency of each case's bottleneck class from its largest size (``simulated /
    measured``); then ``least_squares`` on ``log(time)`` with full simulations.

    Args:
        cases: measured curves with their topology and group.
        routing, seed: the engine's routing policy and seed.
        classes: link classes to fit (default: every class that carries bytes).
        max_sizes: sizes per case used in the optimisation (a log-spaced subset including the
            smallest and the largest; all sizes are simulated for the reported errors).
        topology, nodes, source_logs: recorded in the result.
        progress: called with a short message at each stage.
    """
    from scipy.optimize import least_squares

    if not cases:
        raise NetsimError("nothing to calibrate: no measured sizes")
    for c in cases:
        if len(c.sizes_bytes) != len(c.measured_s) or len(c.sizes_bytes) == 0:
            raise NetsimError("a fit case needs as many measured times as sizes (and at least one)",
                              source=c.source or None)
        if not (np.asarray(c.measured_s) > 0).all():
            raise NetsimError("measured times must be > 0", source=c.source or None)
    say = progress or (lambda _m: None)
    model = _Model(cases, routing, seed, max(2, int(max_sizes)))
    loaded, bottleneck = model.probe()
    cls = sorted(classes) if classes is not None else loaded
    p = len(cls)
    mask = np.array(model.fit_mask)
    say(f"fitting the efficiency of {', '.join(cls) or 'no link class'} and the step latency "
        f"on {int(mask.sum())} sizes")
    meas = model.measured
    lat_hi_us = float(np.min(meas / np.maximum(model.depth, 1.0)) * 1e6)  # no step may exceed a whole run

    # starting point
    ends = np.zeros(len(model.items), dtype=bool)
    firsts: list[int] = []
    lasts: dict[int, int] = {}
    for ci in range(len(cases)):
        ks = np.flatnonzero(model.case_of == ci)
        firsts.append(int(ks[np.argmin(model.size_of[ks])]))
        lasts[ci] = int(ks[np.argmax(model.size_of[ks])])
        ends[firsts[-1]] = ends[lasts[ci]] = True
    t_nominal = model.simulate({}, 0.0, ends)
    lat0 = float(np.median([max(0.0, (meas[k] - t_nominal[k]) / max(model.depth[k], 1.0)) for k in firsts]))
    lat0_us = min(lat0 * 1e6, lat_hi_us)
    t_lat = model.simulate({}, lat0_us * 1e-6, ends)
    x0 = np.zeros(p + 1)
    x0[p] = lat0_us
    for j, name in enumerate(cls):
        ratios = [t_lat[lasts[ci]] / meas[lasts[ci]] for ci, cb in bottleneck.items() if cb == name]
        if ratios:
            x0[j] = float(np.clip(np.mean(np.log(ratios)), math.log(_MIN_EFFICIENCY), 0.0))
    def residual(x: np.ndarray) -> np.ndarray:
        t = model.times(cls, x, mask)[mask]
        return np.asarray(np.log(np.maximum(t, 1e-15)) - np.log(meas[mask]))

    # classes whose efficiency does not change any time (never near a bottleneck) stay out of
    # the optimisation: probe each with a 30% lower efficiency
    r0 = residual(x0)
    active = []
    for j in range(p):
        probe = x0.copy()
        probe[j] = max(x0[j] - 0.36, math.log(_MIN_EFFICIENCY))
        if np.abs(residual(probe) - r0).max() > 1e-6:
            active.append(j)
    free = [*active, p]
    for j in active:  # start strictly inside the bounds (a trust region leaves a bound slowly)
        x0[j] = min(x0[j], math.log(0.9))

    def residual_free(z: np.ndarray) -> np.ndarray:
        x = x0.copy()
        x[free] = z
        return residual(x)

    lo = np.concatenate([np.full(len(active), math.log(_MIN_EFFICIENCY)), [0.0]])
    hi = np.concatenate([np.zeros(len(active)), [max(lat_hi_us, 1e-9)]])
    res = least_squares(residual_free, np.clip(x0[free], lo, hi), bounds=(lo, hi), diff_step=1e-3,
                        x_scale="jac", max_nfev=30, xtol=1e-4, ftol=1e-6)
    x = x0.copy()
    x[free] = res.x
    sens = np.zeros(p)
    sens[active] = np.abs(res.jac[:, :-1]).sum(axis=0)
    unconstrained = [c for c, s in zip(cls, sens, strict=True) if s <= 1e-6]
    eff = {c: float(min(1.0, math.exp(v))) for c, v, s in zip(cls, x[:p], sens, strict=True) if s > 1e-6}
    lat_s = float(x[p] * 1e-6)
    say(f"fitted {', '.join(f'{c}={v:.3f}' for c, v in eff.items()) or 'no efficiency'}, "
        f"step latency {lat_s * 1e6:.3f} us ({model.simulations} simulations); checking all sizes")
    final = model.simulate(eff, lat_s, np.ones(len(model.items), dtype=bool))
    points = []
    for k, (ci, si, _, _) in enumerate(model.items):
        c = cases[ci]
        points.append(FitPoint(c.source, c.op, len(c.devices), c.nnodes, int(c.sizes_bytes[si]),
                               float(c.measured_s[si] * 1e6), float(final[k] * 1e6)))
    logerr = np.log(final / model.measured)
    return Calibration(link_efficiency=eff, step_latency_s=lat_s, topology=topology, nodes=nodes, routing=routing,
                       unconstrained_classes=unconstrained, source_logs=list(source_logs), points=points,
                       rms_log_error=float(np.sqrt(np.mean(logerr**2))))


__all__ = ["CALIBRATION_FORMAT", "Calibration", "FitCase", "FitPoint", "fit_calibration", "load_calibration"]
