"""Calibrating the collective model against measured nccl-tests curves.

The flow model gives every link its nominal bandwidth and every transfer its path latency; the
collective cost model (:mod:`netsim.collectives.cost`) adds what the library does on top.
A calibration fits the few numbers that differ between one real cluster and the defaults of
its preset, the same parameters the preset itself sets, so that a calibrated run and an
uncalibrated one differ only in the numbers:

* ``link_efficiency[class]`` in (0, 1]: the fraction of nominal capacity payload gets on links
  of that class (``nvlink``, ``ib``, ``roce``, ...); it replaces the preset's ``efficiency:``;
* under the ``nccl`` cost model (the default), ``latency_scale`` > 0: a multiplier on every
  NCCL latency (base and per hop); under ``ideal``, ``step_latency_s`` >= 0: the software
  latency before every transfer.

:func:`fit_calibration` finds the values for which simulated times match measured ones: it
minimises the squared error of ``log(time)`` over the measured sizes with
``scipy.optimize.least_squares``.  Large, bandwidth-bound sizes constrain the efficiency of the
bottleneck class; small, latency-bound sizes the latency.  A class is only *fitted* if the
measured times depend on it (it is a bottleneck somewhere); the others keep the preset's value
and are listed as unconstrained.  A single-node log constrains NVLink, a multi-node log the
inter-node fabric: give both to calibrate both.

The result is a :class:`Calibration`, stored as YAML (format ``netsim-calibration/1``)::

    format: netsim-calibration/1
    topology: dgx-h100          # what the fit simulated
    nodes: 2
    routing: ecmp
    cost_model: nccl
    link_efficiency: {ib: 0.93, nvlink: 0.81}
    latency_scale: 1.12
    step_latency_s: 0.0
    unconstrained_classes: [pcie]
    source_logs: [logs/all_reduce_perf_2n.log]
    fit:
      rms_log_error: 0.031
      points:                   # one per measured size
      - {source: ..., op: all_reduce, nranks: 16, nnodes: 2, size_bytes: 1048576,
         measured_us: 61.2, simulated_us: 59.8, rel_error: -0.023}

Only ``cost_model``, ``link_efficiency`` and the latency parameter are needed to apply a
calibration (:func:`load_calibration`, ``--calibration FILE``); the rest documents the fit.
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

from netsim.calibration.calibration_file import (
    CALIBRATION_FORMAT,
    FitPoint,
    check_calibration_keys,
    parse_fit_points,
    parse_latency,
    parse_link_efficiency,
)
from netsim.errors import LimitError, NetsimError, SpecError
from netsim.io import atomic_file
from netsim.limits import MAX_NESTING, MAX_SPEC_BYTES, check_file_size, check_structure

_MIN_EFFICIENCY = 0.02


@dataclass
class Calibration:
    """Fitted network-model parameters (see the module docstring for the file format).

    Attributes:
        link_efficiency: link class -> efficiency in (0, 1].
        step_latency_s: per-transfer software latency of collectives (``ideal``), seconds.
        cost_model: the collective cost model the fit used (``nccl`` or ``ideal``).
        latency_scale: multiplier on NCCL's latencies (``nccl``).
        topology, nodes, routing: what the fit simulated (documentation).
        unconstrained_classes: classes the measurements did not constrain (left at 1.0).
        source_logs: the measured logs.
        points: per measured size, measured and simulated time.
        rms_log_error: root mean square of ``log(simulated / measured)``.
    """

    link_efficiency: dict[str, float] = field(default_factory=dict)
    step_latency_s: float = 0.0
    cost_model: str = "nccl"
    latency_scale: float = 1.0
    topology: str | None = None
    nodes: int | None = None
    routing: str | None = None
    unconstrained_classes: list[str] = field(default_factory=list)
    source_logs: list[str] = field(default_factory=list)
    points: list[FitPoint] = field(default_factory=list)
    rms_log_error: float | None = None

    def setup_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for :func:`netsim.collectives.setup.collective_setup`."""
        kw: dict[str, Any] = {"cost_model": self.cost_model, "efficiency": dict(self.link_efficiency)}
        if self.cost_model == "ideal":
            kw["step_latency_s"] = self.step_latency_s
        else:
            kw["latency_scale"] = self.latency_scale
        return kw

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": CALIBRATION_FORMAT,
            "topology": self.topology,
            "nodes": self.nodes,
            "routing": self.routing,
            "cost_model": self.cost_model,
            "link_efficiency": {k: round(float(v), 6) for k, v in sorted(self.link_efficiency.items())},
            "latency_scale": float(f"{self.latency_scale:.6g}"),
            "step_latency_s": float(f"{self.step_latency_s:.6g}"),
            "unconstrained_classes": list(self.unconstrained_classes),
            "source_logs": list(self.source_logs),
            "fit": {
                "rms_log_error": None if self.rms_log_error is None else float(f"{self.rms_log_error:.6g}"),
                "points": [
                    {
                        "source": p.source,
                        "op": p.op,
                        "nranks": p.nranks,
                        "nnodes": p.nnodes,
                        "size_bytes": p.size_bytes,
                        "measured_us": round(p.measured_us, 6),
                        "simulated_us": round(p.simulated_us, 6),
                        "rel_error": round(p.rel_error, 6),
                    }
                    for p in self.points
                ],
            },
        }

    def to_yaml(self) -> str:
        head = (
            "# netsim calibration: link efficiencies (fraction of nominal bandwidth per link class)\n"
            "# and the collective latency (NCCL latency scale, or the ideal model's step latency),\n"
            "# fitted to nccl-tests logs.\n"
            "# Apply with `--calibration FILE` (netsim collective / run / flows).\n"
        )
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
        check_calibration_keys(data, source)
        eff = parse_link_efficiency(data, source)
        lat, cost, scale = parse_latency(data, source)
        fit = data.get("fit") or {}
        points = parse_fit_points(fit, source)
        nodes = data.get("nodes")
        rms = fit.get("rms_log_error") if isinstance(fit, Mapping) else None
        return cls(
            link_efficiency=eff,
            step_latency_s=lat,
            cost_model=cost,
            latency_scale=float(scale),
            topology=None if data.get("topology") is None else str(data["topology"]),
            nodes=None if nodes is None else int(nodes),
            routing=None if data.get("routing") is None else str(data["routing"]),
            unconstrained_classes=[str(c) for c in data.get("unconstrained_classes") or []],
            source_logs=[str(s) for s in data.get("source_logs") or []],
            points=points,
            rms_log_error=None if rms is None else float(rms),
        )


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
    """Simulated times of all cases as a function of (efficiencies, latency parameter)."""

    def __init__(self, cases: Sequence[FitCase], routing: str, seed: int, max_sizes: int, cost_model: str) -> None:
        self.cases = cases
        self.routing = routing
        self.seed = seed
        self.cost_model = cost_model
        self.items: list[tuple[int, int]] = []  # (case, size index)
        self.fit_mask: list[bool] = []
        for ci, c in enumerate(cases):
            n = len(c.sizes_bytes)
            keep = set(np.unique(np.round(np.linspace(0, n - 1, min(n, max_sizes))).astype(int)).tolist())
            for si in range(n):
                self.items.append((ci, si))
                self.fit_mask.append(si in keep)
        self.measured = np.array([cases[ci].measured_s[si] for ci, si in self.items], dtype=float)
        self.case_of = np.array([it[0] for it in self.items])
        self.size_of = np.array([cases[ci].sizes_bytes[si] for ci, si in self.items], dtype=float)
        self._cache: dict[tuple[float, ...], np.ndarray] = {}
        self.simulations = 0

    def _setup_kwargs(self, latency: float) -> dict[str, Any]:
        if self.cost_model == "ideal":
            return {"step_latency_s": latency}
        return {"latency_scale": latency}

    def _run(self, k: int, eff: Mapping[str, float], latency: float) -> Any:
        from netsim.collectives.executor import result_of, run_collective
        from netsim.collectives.setup import collective_setup
        from netsim.network.engine import Network

        ci, si = self.items[k]
        c = self.cases[ci]
        setup = collective_setup(c.graph, cost_model=self.cost_model, efficiency=eff, **self._setup_kwargs(latency))
        net = Network(c.graph, routing=self.routing, seed=self.seed, efficiency=setup.efficiency or None)
        proc = run_collective(
            net,
            c.op,
            c.devices,
            float(c.sizes_bytes[si]),
            algo=c.algo,
            chunk_bytes=c.chunk_bytes,
            channels=c.channels,
            cost=setup.cost,
        )
        net.run()
        self.simulations += 1
        return net, result_of(proc).time_s

    def simulate(self, eff: Mapping[str, float], latency: float, which: np.ndarray) -> np.ndarray:
        """Simulated seconds of the items selected by the boolean mask ``which`` (NaN elsewhere)."""
        out = np.full(len(self.items), np.nan)
        for k in np.flatnonzero(which).tolist():
            out[k] = self._run(k, eff, latency)[1]
        return out

    def latency_of(self, z: float) -> float:
        """The latency parameter from its optimisation variable: a step latency in us (ideal)
        or the log of the latency scale (nccl)."""
        return z * 1e-6 if self.cost_model == "ideal" else math.exp(z)

    def times(self, classes: Sequence[str], x: np.ndarray, which: np.ndarray) -> np.ndarray:
        """Times for parameters ``x = (log efficiency per class..., latency variable)`` (cached)."""
        key = tuple(np.round(x, 10).tolist())
        hit = self._cache.get(key)
        if hit is None:
            eff = {c: float(min(1.0, math.exp(v))) for c, v in zip(classes, x[:-1], strict=True)}
            hit = self._cache[key] = self.simulate(eff, self.latency_of(float(x[-1])), which)
        return hit

    def probe(self, eff0: Mapping[str, float]) -> tuple[list[str], dict[int, str]]:
        """At the starting efficiencies, the largest size of every case: the link classes that
        carry bytes and, per case, the class of its bottleneck link (the one that needs the
        longest to carry its bytes)."""
        classes: set[str] = set()
        bottleneck: dict[int, str] = {}
        for ci in range(len(self.cases)):
            k = max(np.flatnonzero(self.case_of == ci).tolist(), key=lambda k: self.size_of[k])
            net, _ = self._run(k, eff0, self.latency_of(0.0))
            lr = net.link_records()
            used = lr[lr["bytes"] > 0]
            classes.update(str(x) for x in used["class"].unique())
            if not used.empty:
                need = used["bytes"] / used["effective_capacity_Bps"]
                bottleneck[ci] = str(used.loc[need.idxmax(), "class"])
        return sorted(classes), bottleneck


def _check_cases(cases: Sequence[FitCase]) -> None:
    """Raise unless there are cases and each has as many positive measured times as sizes."""
    if not cases:
        raise NetsimError("nothing to calibrate: no measured sizes")
    for c in cases:
        if len(c.sizes_bytes) != len(c.measured_s) or len(c.sizes_bytes) == 0:
            raise NetsimError(
                "a fit case needs as many measured times as sizes (and at least one)", source=c.source or None
            )
        if not (np.asarray(c.measured_s) > 0).all():
            raise NetsimError("measured times must be > 0", source=c.source or None)


def _starting_point(
    model: _Model, cls: Sequence[str], base_eff: Mapping[str, float], bottleneck: Mapping[int, str]
) -> tuple[np.ndarray, float, float]:
    """The optimisation's start ``x0 = (log efficiency per class..., latency variable)`` and the
    latency variable's bounds.

    Efficiencies start at the preset's (nccl) or nominal links (ideal); the latency from the
    smallest size of every case; then each case's bottleneck class is scaled by the ratio of
    simulated to measured time at its largest size.
    """
    meas = model.measured
    p = len(cls)
    ends = np.zeros(len(model.items), dtype=bool)
    firsts: list[int] = []
    lasts: dict[int, int] = {}
    for ci in range(len(model.cases)):
        ks = np.flatnonzero(model.case_of == ci)
        firsts.append(int(ks[np.argmin(model.size_of[ks])]))
        lasts[ci] = int(ks[np.argmax(model.size_of[ks])])
        ends[firsts[-1]] = ends[lasts[ci]] = True
    x0 = np.zeros(p + 1)
    for j, name in enumerate(cls):
        x0[j] = math.log(min(1.0, max(base_eff.get(name, 1.0), _MIN_EFFICIENCY)))
    start_eff = {c: math.exp(x0[j]) for j, c in enumerate(cls)}
    if model.cost_model == "ideal":
        t_nominal = model.simulate(start_eff, 0.0, ends)
        lat0 = float(np.median([max(0.0, (meas[k] - t_nominal[k])) for k in firsts]))
        lat_hi_us = float(np.min(meas) * 1e6)
        x0[p] = min(lat0 * 1e6 / 4, lat_hi_us)  # a few steps on the critical path
        lat_lo, lat_hi = 0.0, max(lat_hi_us, 1e-9)
    else:
        t_nominal = model.simulate(start_eff, 1.0, ends)
        ratios_small = [meas[k] / t_nominal[k] for k in firsts if t_nominal[k] > 0]
        x0[p] = float(np.clip(np.log(np.median(ratios_small)) if ratios_small else 0.0, -2.0, 2.0))
        lat_lo, lat_hi = math.log(0.05), math.log(20.0)
    t_lat = model.simulate(start_eff, model.latency_of(float(x0[p])), ends)
    for j, name in enumerate(cls):
        ratios = [t_lat[lasts[ci]] / meas[lasts[ci]] for ci, cb in bottleneck.items() if cb == name]
        if ratios:
            x0[j] = float(np.clip(x0[j] + np.mean(np.log(ratios)), math.log(_MIN_EFFICIENCY), 0.0))
    return x0, lat_lo, lat_hi


def _sensitive_classes(residual: Callable[[np.ndarray], np.ndarray], x0: np.ndarray, p: int) -> list[int]:
    """Indexes of the classes whose efficiency changes some time: each is probed with a 30%
    lower efficiency (the others, never near a bottleneck, stay out of the optimisation)."""
    r0 = residual(x0)
    active = []
    for j in range(p):
        probe = x0.copy()
        probe[j] = max(x0[j] - 0.36, math.log(_MIN_EFFICIENCY))
        if np.abs(residual(probe) - r0).max() > 1e-6:
            active.append(j)
    return active


def _optimise(
    residual: Callable[[np.ndarray], np.ndarray],
    x0: np.ndarray,
    p: int,
    active: list[int],
    lat_lo: float,
    lat_hi: float,
) -> tuple[np.ndarray, np.ndarray]:
    """``least_squares`` over the sensitive classes and the latency (the others stay at
    ``x0``; the sensitive ones start strictly inside their bounds, in place): the fitted
    parameters and each class's sensitivity (0 for the classes left out)."""
    from scipy.optimize import least_squares

    for j in active:  # start strictly inside the bounds (a trust region leaves a bound slowly)
        x0[j] = min(x0[j], math.log(0.99))
    free = [*active, p]

    def residual_free(z: np.ndarray) -> np.ndarray:
        x = x0.copy()
        x[free] = z
        return residual(x)

    lo = np.concatenate([np.full(len(active), math.log(_MIN_EFFICIENCY)), [lat_lo]])
    hi = np.concatenate([np.zeros(len(active)), [lat_hi]])
    res = least_squares(
        residual_free,
        np.clip(x0[free], lo, hi),
        bounds=(lo, hi),
        diff_step=1e-3,
        x_scale="jac",
        max_nfev=30,
        xtol=1e-4,
        ftol=1e-6,
    )
    x = x0.copy()
    x[free] = res.x
    sens = np.zeros(p)
    sens[active] = np.abs(res.jac[:, :-1]).sum(axis=0)
    return x, sens


def _fit_points(cases: Sequence[FitCase], items: Sequence[tuple[int, int]], final: np.ndarray) -> list[FitPoint]:
    """One :class:`FitPoint` per measured size, with the final simulated time."""
    return [
        FitPoint(
            cases[ci].source,
            cases[ci].op,
            len(cases[ci].devices),
            cases[ci].nnodes,
            int(cases[ci].sizes_bytes[si]),
            float(cases[ci].measured_s[si] * 1e6),
            float(final[k] * 1e6),
        )
        for k, (ci, si) in enumerate(items)
    ]


def fit_calibration(
    cases: Sequence[FitCase],
    *,
    routing: str = "ecmp",
    seed: int = 0,
    classes: Sequence[str] | None = None,
    max_sizes: int = 8,
    topology: str | None = None,
    nodes: int | None = None,
    source_logs: Sequence[str] = (),
    cost_model: str = "nccl",
    progress: Callable[[str], None] | None = None,
) -> Calibration:
    """Fit link-class efficiencies and the collective latency to measured collective times.

    Starting point: the preset's efficiencies and latency scale 1 (``nccl``) or the step
    latency from the smallest sizes (``ideal``), each case's bottleneck class scaled by the
    ratio at its largest size; then ``least_squares`` on ``log(time)`` with full simulations.

    Args:
        cases: measured curves with their topology and group.
        routing, seed: the engine's routing policy and seed.
        classes: link classes to fit (default: every class that carries bytes).
        max_sizes: sizes per case used in the optimisation (a log-spaced subset including the
            smallest and the largest; all sizes are simulated for the reported errors).
        topology, nodes, source_logs: recorded in the result.
        cost_model: ``nccl`` (fit the latency scale) or ``ideal`` (fit a step latency).
        progress: called with a short message at each stage.
    """
    from netsim.collectives.setup import collective_setup

    _check_cases(cases)
    say = progress or (lambda _m: None)
    ideal = cost_model == "ideal"
    model = _Model(cases, routing, seed, max(2, int(max_sizes)), cost_model)
    base_eff = {} if ideal else collective_setup(cases[0].graph, cost_model=cost_model).efficiency
    loaded, bottleneck = model.probe(base_eff)
    cls = sorted(classes) if classes is not None else loaded
    p = len(cls)
    mask = np.array(model.fit_mask)
    say(
        f"fitting the efficiency of {', '.join(cls) or 'no link class'} and the "
        f"{'step latency' if ideal else 'NCCL latency scale'} on {int(mask.sum())} sizes"
    )
    meas = model.measured
    x0, lat_lo, lat_hi = _starting_point(model, cls, base_eff, bottleneck)

    def residual(x: np.ndarray) -> np.ndarray:
        t = model.times(cls, x, mask)[mask]
        return np.asarray(np.log(np.maximum(t, 1e-15)) - np.log(meas[mask]))

    # classes whose efficiency does not change any time (never near a bottleneck) stay out of
    # the optimisation: probe each with a 30% lower efficiency
    active = _sensitive_classes(residual, x0, p)
    x, sens = _optimise(residual, x0, p, active, lat_lo, lat_hi)
    unconstrained = [c for c, s in zip(cls, sens, strict=True) if s <= 1e-6]
    eff = {c: float(min(1.0, math.exp(v))) for c, v, s in zip(cls, x[:p], sens, strict=True) if s > 1e-6}
    latency = model.latency_of(float(x[p]))
    lat_s, scale = (latency, 1.0) if ideal else (0.0, latency)
    say(
        f"fitted {', '.join(f'{c}={v:.3f}' for c, v in eff.items()) or 'no efficiency'}, "
        + (f"step latency {lat_s * 1e6:.3f} us" if ideal else f"latency scale {scale:.3f}")
        + f" ({model.simulations} simulations); checking all sizes"
    )
    final = model.simulate(eff, latency, np.ones(len(model.items), dtype=bool))
    points = _fit_points(cases, model.items, final)
    logerr = np.log(final / model.measured)
    return Calibration(
        link_efficiency=eff,
        step_latency_s=lat_s,
        cost_model=cost_model,
        latency_scale=scale,
        topology=topology,
        nodes=nodes,
        routing=routing,
        unconstrained_classes=unconstrained,
        source_logs=list(source_logs),
        points=points,
        rms_log_error=float(np.sqrt(np.mean(logerr**2))),
    )


__all__ = ["CALIBRATION_FORMAT", "Calibration", "FitCase", "FitPoint", "fit_calibration", "load_calibration"]
