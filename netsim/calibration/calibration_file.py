"""The calibration file's contents: its format tag, the fit points it records, and the checks
that turn a parsed file into validated values (keys, link efficiencies, the latency parameters,
the fit points), each raising :class:`~netsim.errors.SpecError` naming the file and the field.

:mod:`netsim.calibration.fit` (which re-exports ``CALIBRATION_FORMAT`` and ``FitPoint``) builds
a :class:`~netsim.calibration.fit.Calibration` from them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from netsim.errors import NetsimError, SpecError
from netsim.units import parse_duration

CALIBRATION_FORMAT = "netsim-calibration/1"


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


def check_calibration_keys(data: Mapping[str, Any], source: str) -> None:
    """Reject unknown keys and an unsupported format in a calibration file."""
    allowed = {
        "format",
        "topology",
        "nodes",
        "routing",
        "cost_model",
        "link_efficiency",
        "latency_scale",
        "step_latency_s",
        "unconstrained_classes",
        "source_logs",
        "fit",
    }
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise SpecError(
            f"unknown key {unknown[0]!r}; allowed: {', '.join(sorted(allowed))}", source=source, field=unknown[0]
        )
    fmt = data.get("format", CALIBRATION_FORMAT)
    if fmt != CALIBRATION_FORMAT:
        raise SpecError(f"unsupported format {fmt!r}; expected {CALIBRATION_FORMAT!r}", source=source, field="format")


def parse_link_efficiency(data: Mapping[str, Any], source: str) -> dict[str, float]:
    """The ``link_efficiency`` mapping of a calibration file, each value in (0, 1]."""
    eff_raw = data.get("link_efficiency") or {}
    if not isinstance(eff_raw, Mapping):
        raise SpecError("must map link classes to efficiencies", source=source, field="link_efficiency")
    eff: dict[str, float] = {}
    for k, v in eff_raw.items():
        if isinstance(v, bool) or not isinstance(v, int | float) or not 0.0 < float(v) <= 1.0:
            raise SpecError(f"must be a number in (0, 1], got {v!r}", source=source, field=f"link_efficiency.{k}")
        eff[str(k)] = float(v)
    return eff


def parse_latency(data: Mapping[str, Any], source: str) -> tuple[float, str, Any]:
    """The step latency, cost model and latency scale of a calibration file."""
    try:
        lat = parse_duration(data.get("step_latency_s", 0.0), field="step_latency_s")
    except NetsimError as exc:
        raise exc.with_source(source) from None
    if lat < 0:
        raise SpecError(f"must be >= 0, got {lat!r}", source=source, field="step_latency_s")
    # files written before the nccl cost model carry only a step latency: the ideal model
    cost = str(data.get("cost_model", "ideal" if "latency_scale" not in data else "nccl"))
    if cost not in ("nccl", "ideal"):
        raise SpecError(f"unknown cost model {cost!r}; allowed: nccl, ideal", source=source, field="cost_model")
    scale = data.get("latency_scale", 1.0)
    if isinstance(scale, bool) or not isinstance(scale, int | float) or not 0 < float(scale) < 1e6:
        raise SpecError(f"must be a number > 0, got {scale!r}", source=source, field="latency_scale")
    return lat, cost, scale


def parse_fit_points(fit: Any, source: str) -> list[FitPoint]:
    """The fit points recorded in a calibration file's ``fit`` section."""
    points = []
    if isinstance(fit, Mapping):
        for p in fit.get("points") or []:
            try:
                points.append(
                    FitPoint(
                        str(p["source"]),
                        str(p["op"]),
                        int(p["nranks"]),
                        int(p["nnodes"]),
                        int(p["size_bytes"]),
                        float(p["measured_us"]),
                        float(p["simulated_us"]),
                    )
                )
            except (KeyError, TypeError, ValueError):
                raise SpecError(f"malformed fit point {p!r}", source=source, field="fit.points") from None
    return points


__all__ = [
    "CALIBRATION_FORMAT",
    "FitPoint",
    "check_calibration_keys",
    "parse_fit_points",
    "parse_latency",
    "parse_link_efficiency",
]
