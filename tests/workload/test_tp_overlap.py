"""The SMs Transformer Engine's userbuffers TP overlaps take from their GEMMs
(netsim.workload.tp_overlap): the defaults and overrides, each GEMM's forward, input-gradient and
weight-gradient halves priced apart, and the errors."""

from __future__ import annotations

from typing import Any

import pytest

from netsim.config.workload import OverlapSpec, load_workload
from netsim.errors import SpecError
from netsim.workload.costs import ModelCosts
from netsim.workload.kernel_calls import KernelCall
from netsim.workload.tp_overlap import TE_DEFAULT_MARGIN_SMS, TP_OVERLAP_GEMMS, tp_gemm_slowdowns

DENSE: dict[str, Any] = {"layers": 2, "hidden": 256, "ffn_hidden": 512, "heads": 4, "kv_heads": 2, "vocab": 1000}


class FlopCompute:
    """A GEMM's time = its m * n * k; anything else takes no time."""

    name = "flops"

    def time(self, kernel: str, pass_: str = "fwd", *, dtype: str | None = None, **shape: float) -> float:
        return shape["m"] * shape["n"] * shape["k"] if kernel == "gemm" else 0.0


def _gemms(calls: list[KernelCall]) -> list[float]:
    return [c.time_s(FlopCompute(), "bf16") for c in calls if c.kernel == "gemm"]


def _costs(slowdown: dict[str, float] | None) -> ModelCosts:
    spec = load_workload({"model": {**DENSE, "seq_len": 128, "activation": "swiglu"}}, [], source="t")
    return ModelCosts(spec.model, 1, 2, tp_slowdown=slowdown)


def test_defaults_are_transformer_engines() -> None:
    assert set(TE_DEFAULT_MARGIN_SMS) == set(TP_OVERLAP_GEMMS)
    got = tp_gemm_slowdowns(OverlapSpec(tp_comm_overlap=True), 132)
    assert got == {
        n: pytest.approx(132 / 116)
        for n in ("qkv_dgrad", "qkv_wgrad", "proj_fprop", "fc1_dgrad", "fc1_wgrad", "fc2_fprop")
    }
    # NVIDIA's BF16 recipe for hidden 8192, TP 4 (Megatron-Bridge training/comm_overlap.py)
    recipe = {**dict.fromkeys(TP_OVERLAP_GEMMS, 0), "proj_fprop": 24, "fc2_fprop": 16}
    got = tp_gemm_slowdowns(OverlapSpec(tp_comm_overlap=True, tp_comm_sms=recipe), 132)
    assert got == {"proj_fprop": pytest.approx(132 / 108), "fc2_fprop": pytest.approx(132 / 116)}
    assert tp_gemm_slowdowns(OverlapSpec(tp_comm_sms=dict.fromkeys(TP_OVERLAP_GEMMS, 0)), None) == {}


def test_each_pass_is_priced_apart() -> None:
    s = {"fc1_fprop": 2.0, "fc1_dgrad": 3.0, "fc1_wgrad": 5.0, "fc2_fprop": 7.0, "proj_dgrad": 11.0}
    base, slow = _costs(None), _costs(s)
    f0, f1 = _gemms(base.mlp("F")), _gemms(slow.mlp("F"))
    assert f1 == [2.0 * f0[0], 7.0 * f0[1]]
    b0, b1 = _gemms(base.mlp("B")), _gemms(slow.mlp("B"))
    w0, w1 = _gemms(base.mlp("W")), _gemms(slow.mlp("W"))
    bw0, bw1 = _gemms(base.mlp("BW")), _gemms(slow.mlp("BW"))
    assert b1 == [3.0 * b0[0], b0[1]] and w1 == [5.0 * w0[0], w0[1]]
    assert bw1 == pytest.approx([b + w for b, w in zip(b1, w1, strict=True)])
    assert bw1[0] == pytest.approx(0.5 * (3.0 + 5.0) * bw0[0])
    # the attention's output projection: its input gradient only
    a0, a1 = _gemms(base.attention("BW")), _gemms(slow.attention("BW"))
    assert a1[0] == a0[0] and a1[1] == pytest.approx(0.5 * (11.0 + 1.0) * a0[1])


def test_errors_name_the_field() -> None:
    with pytest.raises(SpecError) as info:
        tp_gemm_slowdowns(OverlapSpec(tp_comm_overlap=True), None, "my-gpu")
    assert info.value.field == "accelerator.sms" and "my-gpu" in str(info.value)
    with pytest.raises(SpecError) as info:
        tp_gemm_slowdowns(OverlapSpec(tp_comm_sms={"fc2_fprop": 108}), 108)
    assert info.value.field == "overlap.tp_comm_sms.fc2_fprop"
    with pytest.raises(SpecError) as info:
        load_workload(
            {"model": {**DENSE, "seq_len": 128}, "overlap": {"tp_comm_sms": {"fc3_fprop": 4}}}, [], source="w.yaml"
        )
    assert "w.yaml" in str(info.value) and "tp_comm_sms" in str(info.value) and "\n" not in str(info.value)
