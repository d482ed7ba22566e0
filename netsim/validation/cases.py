"""Predicting validation cases: one predictor per case kind.

A predictor takes a :class:`~netsim.validation.sources.Source` and one of its cases and returns
one :class:`Prediction` per measured point: what netsim predicts for exactly the measured
configuration (the source's topology preset with its overrides, node and GPU counts, and for
collectives the op, NCCL's forced algorithm or protocol and each measured size).  Predictors
register in :data:`PREDICTORS` by case kind; the runner (:mod:`netsim.validation.runner`)
compares, tolerates and reports.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from netsim.registry import Registry
from netsim.validation.sources import CollectiveCase, Source

__all__ = ["PREDICTORS", "Prediction", "predict_collective"]


@dataclass(frozen=True)
class Prediction:
    """One measured point and netsim's prediction of it.

    Attributes:
        metric: what is compared (``time_us`` for collectives; the training metric).
        size_bytes: the collective's size (``None`` for training cases).
        measured, predicted: in the metric's unit.
        lower_is_better: ``True`` for times (an error > 0 is a slower prediction).
        detail: what the simulator chose (NCCL algorithm/protocol, busbw, ...).
    """

    metric: str
    size_bytes: int | None
    measured: float
    predicted: float
    lower_is_better: bool = True
    detail: dict[str, Any] | None = None

    @property
    def rel_error(self) -> float:
        """``predicted / measured - 1``."""
        return self.predicted / self.measured - 1.0


Predictor = Callable[[Source, Any, str | None], Iterator[Prediction]]
PREDICTORS: Registry[Predictor] = Registry("validation case kind", field="cases.kind")


def _graph(src: Source) -> Any:
    from netsim.topology import load_topology

    return load_topology(src.system.topology, nodes=src.system.nodes, overrides=tuple(src.system.overrides()))


@PREDICTORS.register("collective")
def predict_collective(src: Source, case: CollectiveCase, cost_model: str | None = None) -> Iterator[Prediction]:
    """Every measured size of an nccl-tests curve, each simulated alone on a fresh network under
    the topology's collective cost model (or ``cost_model``)."""
    from netsim.collectives.executor import accelerators
    from netsim.collectives.nccl_tests import iter_sweep
    from netsim.collectives.setup import collective_setup, default_routing

    graph = _graph(src)
    setup = collective_setup(graph, cost_model=cost_model)
    devices = accelerators(graph, per_node=src.system.gpus_per_node)
    kw: dict[str, Any] = {"routing": default_routing(graph)}
    if setup.efficiency:
        kw["efficiency"] = setup.efficiency
    sizes = [p.bytes for p in case.points]
    algo = case.algo if setup.name == "nccl" else _ideal_algo(case.algo)
    rows = iter_sweep(
        graph,
        case.netsim_op,
        devices,
        sizes,
        algo=algo,
        cost=setup.cost,
        proto=case.proto if setup.name == "nccl" else None,
        **kw,
    )
    for p, row in zip(case.points, rows, strict=True):
        yield Prediction(
            metric="time_us",
            size_bytes=p.bytes,
            measured=p.time_us,
            predicted=row.time_s * 1e6,
            detail={
                "library_algo": row.library_algo or row.algo,
                "proto": row.proto or "",
                "measured_busbw_GBps": p.busbw_GBps,
                "predicted_busbw_GBps": row.busbw_GBps,
            },
        )


def _ideal_algo(nccl_algo: str | None) -> str | None:
    """The plan algorithm of an NCCL algorithm under the ideal cost model."""
    return {"collnet_direct": "sharp", "collnet_chain": "sharp"}.get(nccl_algo or "", nccl_algo)
