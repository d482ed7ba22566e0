"""The global batch: fixed (strong scaling) or growing with the cluster (tokens per device fixed)."""

from __future__ import annotations

from typing import Any

import pytest

from netsim.config.workload import load_workload
from netsim.errors import SpecError, WorkloadError
from netsim.topology import load_topology
from netsim.workload.batch import batch_plan
from netsim.workload.graph import build_plan

from ..replay.helpers import FixedCompute

_DENSE: dict[str, Any] = {
    "model": {"layers": 2, "hidden": 256, "ffn_hidden": 512, "heads": 4, "vocab": 1000, "seq_len": 128},
    "parallelism": {"tp": 8, "zero_stage": 1},
    "storage": {"enabled": False},
}


def _spec(**fields: Any) -> Any:
    return load_workload({**_DENSE, **fields}, source="batch.yaml")


@pytest.mark.parametrize("nodes", [1, 2, 4])
def test_fixed_and_per_device_batches_on_growing_clusters(nodes: int) -> None:
    dp = nodes  # tp 8 = one 8-GPU server per replica
    fixed = batch_plan(_spec(global_batch_size=32), dp)
    assert (fixed.scaling, fixed.global_batch_size, fixed.microbatches) == ("fixed", 32, 32 // dp)
    # "batch 32 on 8 devices", grown with the cluster: the same micro-batches per replica
    grown = batch_plan(_spec(global_batch_size=32, batch_reference_devices=8), dp)
    assert (grown.scaling, grown.global_batch_size, grown.microbatches) == ("per-device", 32 * nodes, 32)
    per_replica = batch_plan(_spec(num_microbatches=32), dp)
    assert per_replica == grown
    assert grown.summary()["tokens_per_device"] == 32 * 128 / 8  # fixed whatever the cluster
    assert fixed.summary() == {
        "scaling": "fixed",
        "global_batch_size": 32,
        "global_batch_tokens": 32 * 128,
        "tokens_per_device": 32 * 128 / (8 * dp),
        "microbatches_per_replica": 32 // dp,
    }


def test_the_plan_reports_the_batch_it_used() -> None:
    graph = load_topology("dgx-h100", nodes=2)
    plan = build_plan(_spec(global_batch_size=8, batch_scaling="fixed"), graph, FixedCompute(1e-3, 2e-3))
    assert plan.schedule.m == 4 and plan.summary_fields()["batch"]["scaling"] == "fixed"
    plan = build_plan(_spec(num_microbatches=3), graph, FixedCompute(1e-3, 2e-3))
    assert plan.summary_fields()["batch"] == {
        "scaling": "per-device",
        "global_batch_size": 6,
        "global_batch_tokens": 6 * 128,
        "tokens_per_device": 6 * 128 / 16,
        "microbatches_per_replica": 3,
    }


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"batch_scaling": "fixed"}, "batch_scaling fixed needs global_batch_size"),
        (
            {"batch_scaling": "per-device", "global_batch_size": 32},
            "batch_scaling per-device with global_batch_size needs batch_reference_devices",
        ),
        ({"batch_reference_devices": 8}, "batch_reference_devices needs global_batch_size"),
        (
            {"batch_scaling": "fixed", "global_batch_size": 8, "batch_reference_devices": 8},
            "batch_reference_devices applies to batch_scaling per-device only",
        ),
        ({"batch_scaling": "weak"}, "batch_scaling"),
    ],
)
def test_inconsistent_batch_fields_are_one_line_errors(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(SpecError, match=message) as exc:
        _spec(**fields)
    assert "\n" not in str(exc.value) and "batch.yaml" in str(exc.value)


def test_a_batch_that_does_not_split_names_the_field() -> None:
    with pytest.raises(
        WorkloadError,
        match=r"batch_reference_devices: global_batch_size 3 at 8 devices does not "
        r"scale to whole sequences on 12 devices",
    ):
        batch_plan(_spec(global_batch_size=3, batch_reference_devices=8, parallelism={"tp": 4}), 3)
    with pytest.raises(
        WorkloadError,
        match=r"global_batch_size: global_batch_size 6 \(scaled from 3 at 8 devices\) "
        r"must be a multiple of micro_batch_size \* dp = 1 \* 4",
    ):
        batch_plan(_spec(global_batch_size=3, batch_reference_devices=8, parallelism={"tp": 4}), 4)
