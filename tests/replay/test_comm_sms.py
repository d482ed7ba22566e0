"""SMs held by communication kernels slow the SM-bound kernels (netsim.calibration.shared_sms)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from netsim.calibration.shared_sms import SharedSMs, with_comm_sms
from netsim.config.scenario import load_scenario
from netsim.errors import NetsimError, SpecError
from netsim.run import prepare, simulate

from .conftest import tiny_scenario
from .helpers import FixedCompute


class Flat(FixedCompute):
    name = "flat"

    def time(self, kernel: str, pass_: str = "fwd", *, dtype: str | None = None, **shape: float) -> float:
        return 1.0


def test_gemms_and_attention_take_sms_over_the_remaining_sms() -> None:
    m = SharedSMs(Flat(1, 1), sms=132, comm_sms=20)
    for kernel in ("gemm", "grouped_gemm", "attention"):
        assert m.time(kernel, "fwd") == pytest.approx(132 / 112)
    for kernel in ("softmax", "permute", "adamw", "swiglu"):  # bounded by HBM bandwidth: unchanged
        assert m.time(kernel, "fwd") == 1.0
    assert "20 of 132 SMs" in m.name


def test_no_held_sms_leaves_the_model_alone_and_bad_counts_are_refused() -> None:
    inner = Flat(1, 1)
    assert with_comm_sms(inner, 0, None) is inner
    with pytest.raises(SpecError, match=r"accelerator\.sms"):
        with_comm_sms(inner, 20, None, "Ascend-910A")
    with pytest.raises(SpecError, match=r"between 1 and .* 131"):
        with_comm_sms(inner, 132, 132)


def _scenario(comm_sms: int, topology: str = "dgx-h100") -> dict[str, Any]:
    base = tiny_scenario(topology=topology)
    base["workload"] = copy.deepcopy(base["workload"])
    base["workload"]["overlap"] = {"comm_sms": comm_sms}
    return base


def test_a_run_with_held_sms_is_slower_by_at_most_the_sm_ratio() -> None:
    steps = {}
    for k in (0, 20):
        prep = prepare(load_scenario(_scenario(k), source="test"))
        res, _ = simulate(prep)
        steps[k] = res.step_times_s[0]
        assert ("20 of 132 SMs" in prep.compute.name) == (k == 20)
    assert steps[0] < steps[20] < steps[0] * 132 / 112


def test_a_topology_without_an_sm_count_is_a_one_line_error() -> None:
    with pytest.raises(NetsimError, match=r"accelerator\.sms") as exc:
        prepare(load_scenario(_scenario(20, topology="ascend-910a"), source="test"))
    assert "\n" not in str(exc.value)
