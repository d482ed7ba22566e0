"""Predicting a measured layer: one transformer layer's GPU time by kernel class.

A published profile of a training step (a PyTorch profiler trace) says how long the GPU spent in
each kind of kernel; :mod:`netsim.traces.kernel_classes` reduces it to classes (GEMM, attention,
FP8 casts, norms, other) per layer.  This predictor asks netsim's compute model for the same
thing: the kernel calls of one micro-batch through one layer, forward and backward, with what the
workload's recompute mode repeats (:func:`netsim.workload.balance.layer_calls`: the same calls the
step's plan is built from), experts at the ``tokens x top_k`` rows a rank receives under
balanced routing, each call timed by the topology's compute model with the SMs the workload's
communication holds (:func:`netsim.run.workload_compute_model`), and summed per class
(:attr:`netsim.workload.kernel_calls.KernelCall.kernel_class`).  ``compute`` is the sum of every
class: netsim runs one rank's kernels one after another, so its busy time is their sum.

This compares the compute model alone, in the conditions of a real training step (the clocks,
the power draw and the SMs the communication kernels take), with no network, pipeline or
schedule in between: where a training case's step time is off, a layer case says whether the
kernels are.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from netsim.validation.cases import PREDICTORS, Prediction
from netsim.validation.sources import LAYER_CLASSES, LayerCase, Source

__all__ = ["layer_class_times_s", "predict_layer"]


def layer_class_times_s(src: Source, case: LayerCase) -> dict[str, float]:
    """Seconds of one micro-batch through one ``case.layer_kind`` layer, per kernel class and
    ``compute`` (their sum)."""
    from netsim.run import load_scenario_workload, workload_compute_model
    from netsim.topology import load_topology
    from netsim.validation.training import scenario_of
    from netsim.workload.balance import layer_calls
    from netsim.workload.graph import model_costs
    from netsim.workload.layout import build_layout, expert_slots
    from netsim.workload.recompute import workload_recompute

    scenario = scenario_of(src, case)
    graph = load_topology(
        scenario.resolve_path(scenario.topology), nodes=scenario.nodes, overrides=tuple(scenario.topology_overrides)
    )
    spec = load_scenario_workload(scenario)
    compute = workload_compute_model(graph, scenario, spec)
    model = spec.model
    layer = _layer_of_kind(case, spec)
    layout = build_layout(spec, graph)
    costs = model_costs(spec, layout, expert_slots(spec) // layout.ep, graph.graph.get("accelerator"))
    mode = workload_recompute(spec)
    out = dict.fromkeys(LAYER_CLASSES, 0.0)
    for call in layer_calls(spec, costs, layer, mode, layout.etp):
        t = call.time_s(compute, model.dtype)
        out[call.kernel_class] += t
        out["compute"] += t
    return out


def _layer_of_kind(case: LayerCase, spec: Any) -> int:
    """The first layer of the case's kind (a one-line error if the model has none)."""
    from netsim.errors import SpecError

    moe = case.layer_kind == "moe"
    for x in range(spec.model.layers):
        if spec.model.is_moe_layer(x) == moe:
            return x
    raise SpecError(f"the model has no {case.layer_kind} layer", field=f"cases.{case.id}.layer_kind")


@PREDICTORS.register("layer")
def predict_layer(src: Source, case: LayerCase, cost_model: str | None = None) -> Iterator[Prediction]:
    """One prediction per measured class (milliseconds per layer); ``cost_model`` is unused (a
    layer case has no communication)."""
    times = layer_class_times_s(src, case)
    for cls in LAYER_CLASSES:
        if cls not in case.measured_ms:
            continue
        yield Prediction(
            metric=f"layer_ms.{cls}",
            size_bytes=None,
            measured=case.measured_ms[cls],
            predicted=times[cls] * 1e3,
            detail={"layer_class": cls, "asserted_class": cls in case.asserted},
        )
