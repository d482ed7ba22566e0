"""Predicting a measured MoE layer: the wall time of its forward and of its backward.

Megatron-LM times one ``MoELayer`` (router, token dispatch, experts, combine, no attention) on
the ranks of an expert-parallel group with CUDA events around its forward and its backward
(``tests/functional_tests/test_cases/common/moe_perf``): what a dispatcher, a precision or an
expert layout costs, communication and host waits included, without the rest of a model around
it.  netsim answers with the simulator itself: one step of the case's workload (one layer whose
MLP is the MoE layer) on the source's system, through :func:`netsim.run.prepare` and
:func:`netsim.run.simulate` as ``netsim run`` does it, and from the op records of rank 0 (the
rank the benchmark prints) the span from the start of the layer's first MoE op to the end of its
last, in the forward and in the backward.  The MoE ops are the router, experts, shared-expert and
unpermute kernels (names ``F.``/``BW.``/``B.``/``W.``/``R.`` + ``router``, ``experts``,
``shared``, ``unpermute``), the expert-parallel all-to-alls (``ep.fwd-*``, ``ep.bwd-*``; under recomputation
``ep.rcp-fwd-*``, counted in the backward with the ``R.`` kernels) and the host's waits for the
dispatch (``host.fwd-*``); the attention before them in the forward and after them in the
backward is not part of the span.  Nor are two kernels netsim's MoE ops run for the transformer
layer around the MoE layer, which the benchmark's ``MoELayer`` does not: the pre-MLP norm (in the
router op) and the residual add that closes the block (in the unpermute op); their kernel time
(the same on every rank) is taken off each span (:func:`layer_extras_ms`).
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pandas as pd

from netsim.errors import SpecError
from netsim.validation.cases import PREDICTORS, Prediction
from netsim.validation.sources import MoELayerCase, Source

__all__ = ["layer_extras_ms", "moe_layer_spans_ms", "predict_moe_layer"]

#: kernels of the MoE ops that belong to the transformer layer, not to the ``MoELayer`` (module doc)
_LAYER_KERNELS = frozenset({"layernorm", "rmsnorm", "residual"})

#: an op of the MoE layer (module doc), and which pass it belongs to
_MOE_OP = re.compile(r"^(?:(F|BW|B|W|R)\.(?:router|experts|shared|unpermute)|(?:ep|host)\.(rcp-)?(fwd|bwd)-)")


def moe_layer_spans_ms(ops: pd.DataFrame, rank: int = 0, layer: int = 0) -> tuple[float, float]:
    """Milliseconds from the first to the last MoE op of ``layer`` on ``rank``, in the forward and
    in the backward (the ``ops`` table of a replay: ``rank``, ``name``, ``layer``, ``start_s``,
    ``end_s``)."""
    mine = ops[(ops["rank"] == rank) & (ops["layer"] == layer)]
    spans: dict[str, list[tuple[float, float]]] = {"fwd": [], "bwd": []}
    for name, start, end in zip(mine["name"], mine["start_s"], mine["end_s"], strict=True):
        m = _MOE_OP.match(str(name))
        if m is None:
            continue
        kernel, recomputed, phase = m.groups()
        # a recomputed forward (R. kernels, rcp-fwd all-to-alls) runs before, and counts in, the backward
        part = "bwd" if recomputed or kernel in ("BW", "B", "W", "R") else (phase or "fwd")
        spans[part].append((float(start), float(end)))
    if not spans["fwd"] or not spans["bwd"]:
        raise SpecError(
            f"layer {layer} of rank {rank} ran no MoE op in its {'forward' if not spans['fwd'] else 'backward'}: "
            "a moe-layer case needs a workload whose layer is an MoE layer",
            field="cases.workload",
        )
    fwd, bwd = ((max(e for _, e in spans[p]) - min(s for s, _ in spans[p])) * 1e3 for p in ("fwd", "bwd"))
    return fwd, bwd


def layer_extras_ms(kernels: pd.DataFrame) -> tuple[float, float]:
    """Milliseconds per step of the transformer layer's norm and residual kernels inside the MoE
    ops, in the forward and in the backward (the ``kernels`` table of a replay: ``op``, ``kernel``,
    ``pass``, ``time_s``, for one rank).  A norm or residual kernel counts in the pass of its op
    and only as that pass's kernel (a forward op's ``fwd`` call, a backward op's ``bwd`` call):
    the ``residual`` calls that time a cast or a gradient add in a backward op are not the
    layer's."""
    op = kernels["op"].astype(str)
    moe_op = op.str.match(_MOE_OP.pattern)
    forward_op = op.str.startswith("F.")
    mine = moe_op & kernels["kernel"].isin(_LAYER_KERNELS)
    fwd_rows = kernels[mine & forward_op & (kernels["pass"] == "fwd")]
    bwd_rows = kernels[mine & ~forward_op & (kernels["pass"] == "bwd")]
    return float(fwd_rows["time_s"].sum()) * 1e3, float(bwd_rows["time_s"].sum()) * 1e3


@PREDICTORS.register("moe-layer")
def predict_moe_layer(src: Source, case: MoELayerCase, cost_model: str | None = None) -> Iterator[Prediction]:
    """Two predictions: the layer's forward and backward wall time (ms) on rank 0."""
    from netsim.run import prepare, simulate, summarize_replay
    from netsim.validation.training import scenario_of

    prep = prepare(scenario_of(src, case, cost_model))
    moe_layers = prep.workload.model.moe_layers()
    if not moe_layers:
        raise SpecError("a moe-layer case needs a workload with an MoE layer", field=f"cases.{case.id}.workload")
    res, net = simulate(prep)
    summary, tables = summarize_replay(prep, res, net)
    fwd, bwd = moe_layer_spans_ms(tables["ops"], layer=moe_layers[0])
    kernels = tables["kernels"]
    extra_fwd, extra_bwd = layer_extras_ms(kernels[kernels["rank"] == kernels["rank"].iloc[0]])
    fwd, bwd = fwd - extra_fwd, bwd - extra_bwd
    detail = {"step_time_s": float(summary["step_time_s"])}
    yield Prediction("forward_ms", None, case.measured_forward_ms, fwd, detail=detail)
    yield Prediction("backward_ms", None, case.measured_backward_ms, bwd, detail=detail)
