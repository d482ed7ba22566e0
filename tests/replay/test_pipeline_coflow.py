"""Lockstep pipeline transfers as one coflow (the ``coflow`` model on a dense model).

Under lockstep a dense model's unit is a whole pipeline stage, and each pipeline transfer is the
merge of one point-to-point transfer per (TP rank, DP replica).  The ``stream`` model runs them
as that many flows; the ``coflow`` model as one coflow (the large validation cases use it: Llama
3 405B's 16K-GPU step has about 1,000 transfers per pipeline transfer).  On an uncontended
fabric the two give the same step; the published cases measure the difference under contention
(docs: "Validation: published training runs").
"""

from __future__ import annotations

from typing import Any

import pytest

from netsim.config.scenario import load_scenario
from netsim.run import prepare, simulate, summarize_replay

DENSE: dict[str, Any] = {
    "name": "dense",
    "model": {"layers": 8, "hidden": 2048, "ffn_hidden": 8192, "heads": 16, "vocab": 8192, "seq_len": 2048},
    "parallelism": {"pp": 4, "tp": 8, "ep": 1, "zero_stage": 1},
    "micro_batch_size": 1,
    "num_microbatches": 8,
    "steps": 1,
}


def _run(model: str) -> tuple[dict[str, Any], Any]:
    scenario = {
        "name": "dense-pp",
        "topology": "dgx-a100",
        "nodes": 16,
        "workload": DENSE,
        "seed": 0,
        "options": {"lockstep": True, "collective_model": model},
    }
    prep = prepare(load_scenario(scenario))
    res, net = simulate(prep)
    return summarize_replay(prep, res, net)[0], net


def test_lockstep_pipeline_transfers_as_coflows_keep_the_bytes_and_the_step() -> None:
    stream, stream_net = _run("stream")
    merged, net = _run("coflow")
    assert stream["lockstep"] and merged["lockstep"]
    # every (TP, DP) instance of a pipeline transfer is one transfer of a coflow, not a flow
    assert stream_net.flows.num_carriers == 0 and net.flows.num_carriers > 0
    assert merged["num_flows"] == stream["num_flows"]
    for cls, v in stream["bytes_by_class"].items():
        assert merged["bytes_by_class"][cls] == pytest.approx(v, rel=1e-12), cls
    assert stream["bytes_by_class"]["pp"] > 0
    # 128 GPUs on one uncontended fat tree: the same step to the last digits
    assert merged["step_time_s"] == pytest.approx(stream["step_time_s"], rel=1e-9)
