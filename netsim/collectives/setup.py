"""One place that turns a topology and the user's choices into how collectives run.

Every entry point that runs collectives (``netsim collective``, ``netsim run``, ``netsim
validate``, ``netsim calibrate``) asks :func:`collective_setup` for the same two things, so a
calibrated run and an uncalibrated one differ only in the numbers:

* the :class:`~netsim.collectives.cost.CostModel` (``nccl`` or ``ideal``): the topology's
  ``collectives.cost_model`` unless the user picks one (``--collective-cost``);
* the achieved efficiency per link class the network runs at (``Network(efficiency=...)``):
  the topology's ``efficiency:`` section under ``nccl``, line rate under ``ideal``; a
  calibration's fitted efficiencies replace the section's classes.

A calibration also carries a latency scale (multiplying the library's latencies) for
``nccl`` or a per-step latency for ``ideal``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import networkx as nx

from netsim.collectives.cost import COST_MODELS, CostModel, NcclCost, make_cost_model
from netsim.errors import SpecError

__all__ = ["CollectiveSetup", "collective_setup", "cost_summary_line", "default_routing", "nccl_cost"]


def default_routing(graph: nx.DiGraph) -> str:
    """The network path policy of the topology's collective library (``collectives.routing``;
    ``ecmp`` when the topology does not say)."""
    spec = graph.graph.get("spec") or {}
    return str((spec.get("collectives") or {}).get("routing") or "ecmp")


@dataclass(frozen=True)
class CollectiveSetup:
    """The cost model and the network efficiencies of a run (module doc)."""

    cost: CostModel
    efficiency: dict[str, float] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.cost.name

    def describe(self) -> dict[str, Any]:
        """For run summaries: the model, its parameters and the link efficiencies."""
        return {**self.cost.describe(), "link_efficiency": dict(sorted(self.efficiency.items()))}

    def summary_line(self) -> str:
        """One readable line (:func:`cost_summary_line`)."""
        return cost_summary_line(self.describe())


def cost_summary_line(d: Mapping[str, Any]) -> str:
    """``collective cost: nccl (NCCL 2.30.7 tuner, hopper, NVLS; links at ib 0.96, nvlink 0.824)``
    from a :meth:`CollectiveSetup.describe` record (what ``summary.json`` stores)."""
    if d.get("collective_cost") == "nccl":
        bits = [f"NCCL {d.get('nccl_version')} tuner", str(d.get("arch"))]
        bits += ["NVLS"] if d.get("nvls") else []
        bits += ["SHARP"] if d.get("collnet") else []
        bits += [f"latency x{d['latency_scale']:.3g}"] if d.get("latency_scale", 1.0) != 1.0 else []
    else:
        bits = ["wire bound"] + (
            [f"step latency {d['step_latency_s'] * 1e6:.3g} us"] if d.get("step_latency_s") else []
        )
    eff = ", ".join(f"{k} {v:.3g}" for k, v in (d.get("link_efficiency") or {}).items()) or "line rate"
    return f"collective cost: {d.get('collective_cost')} ({', '.join(bits)}; links at {eff})"


def collective_setup(
    graph: nx.DiGraph,
    *,
    cost_model: str | None = None,
    efficiency: Mapping[str, float] | None = None,
    latency_scale: float | None = None,
    step_latency_s: float | None = None,
    source: str | None = None,
) -> CollectiveSetup:
    """The collective setup of a run on ``graph``.

    Args:
        cost_model: ``nccl`` / ``ideal``; ``None``: the topology's ``collectives.cost_model``.
        efficiency: fitted efficiencies (a calibration) replacing the topology's per class.
        latency_scale: a calibration's latency multiplier (``nccl``).
        step_latency_s: software latency per transfer (``ideal`` only).
        source: where ``cost_model`` came from, for error messages.
    """
    spec = graph.graph.get("spec") or {}
    settings: dict[str, Any] = dict(spec.get("collectives") or {})
    name = cost_model or str(settings.get("cost_model") or "nccl")
    COST_MODELS.get(name, source=source)
    reference: dict[str, float] = {}
    if name == "ideal":
        eff = dict(efficiency or {})
    else:
        if step_latency_s is not None:
            raise SpecError(
                "a per-step latency applies to the ideal cost model only; the nccl model has NCCL's "
                "latencies (scale them with collectives.latency_scale or a calibration)",
                source=source,
                field="step_latency",
            )
        reference = {str(k): float(v) for k, v in (spec.get("efficiency") or {}).items()}
        eff = {**reference, **(efficiency or {})}
        if latency_scale is not None:
            settings["latency_scale"] = float(latency_scale)
    cost = make_cost_model(
        name,
        graph,
        settings=settings,
        efficiency=eff,
        reference_efficiency=reference if name != "ideal" else None,
        step_latency_s=float(step_latency_s or 0.0),
        source=source,
    )
    return CollectiveSetup(cost=cost, efficiency=eff)


def nccl_cost(graph: nx.DiGraph) -> NcclCost:
    """NCCL's cost model of ``graph`` (the topology's ``collectives`` settings and link
    efficiencies), whatever cost model times the run: for what NCCL's own rules decide, such as
    the thread blocks its kernels run on (:meth:`NcclCost.p2p_rule`)."""
    cost = collective_setup(graph, cost_model="nccl").cost
    assert isinstance(cost, NcclCost)
    return cost
