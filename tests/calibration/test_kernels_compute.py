"""ComputeModel: roofline arithmetic, table model with roofline fallback (no torch needed)."""

from __future__ import annotations

import pandas as pd
import pytest

from netsim.calibration.compute import ComputeEstimate, ComputeModel, TableComputeModel
from netsim.calibration.kernels import KernelTable
from netsim.calibration.models import make_compute_model
from netsim.calibration.roofline import RooflineComputeModel
from netsim.errors import SpecError

H100ISH = {"name": "h100ish", "peak_flops": {"bf16": "989TFLOPS", "fp8": 1.979e15}, "memory_Bps": "3.35TB/s"}


def test_roofline_compute_and_memory_bound_by_hand() -> None:
    r = RooflineComputeModel({"bf16": 1e15}, 2e12, efficiency=0.5, memory_efficiency=0.8)
    # gemm 4096^3 bf16: 2*4096^3 flops / (1e15 * 0.5) vs 2*3*4096^2 bytes / (2e12 * 0.8)
    flops = 2 * 4096**3
    nbytes = 2 * 3 * 4096**2
    assert r.time("gemm", "fwd", m=4096, n=4096, k=4096) == pytest.approx(max(flops / 5e14, nbytes / 1.6e12))
    assert flops / 5e14 > nbytes / 1.6e12  # compute-bound
    # rmsnorm is memory-bound: bytes = 2 * (2 t h + 2 h)
    t, h = 8192, 4096
    assert r.time("rmsnorm", "fwd", tokens=t, hidden=h) == pytest.approx(2 * (2 * t * h + 2 * h) / 1.6e12)
    # permute moves bytes and does no flops
    est = r.estimate("permute", "fwd", tokens=1024, hidden=4096, topk=2)
    assert est.flops == 0 and est.time_s == pytest.approx(est.bytes / 1.6e12) and est.source == "roofline"


def test_roofline_from_accelerator_with_units_and_dtypes() -> None:
    r = RooflineComputeModel.from_accelerator(H100ISH, efficiency=0.6)
    assert r.peak_for("bfloat16") == pytest.approx(9.89e14) and r.default_dtype == "bfloat16"
    t_bf16 = r.time("gemm", "fwd", m=8192, n=8192, k=8192)
    t_fp8 = r.time("gemm", "fwd", dtype="fp8", m=8192, n=8192, k=8192)
    assert t_bf16 == pytest.approx(2 * 8192**3 / (9.89e14 * 0.6))
    assert t_fp8 == pytest.approx(t_bf16 * 9.89e14 / 1.979e15)
    with pytest.raises(SpecError, match="no peak FLOP/s for dtype float32"):
        r.time("gemm", "fwd", dtype="fp32", m=1, n=1, k=1)
    # adamw runs in fp32 and is memory-bound: 7 fp32 arrays of `params`
    assert r.time("adamw", "step", params=1e9) == pytest.approx(28e9 / 3.35e12)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"peak_flops": -1.0, "memory_Bps": 1.0}, "peak_flops"),
        ({"peak_flops": 1.0, "memory_Bps": 0.0}, "memory_Bps"),
        ({"peak_flops": 1.0, "memory_Bps": 1.0, "efficiency": 1.5}, "efficiency"),
        ({"peak_flops": {"int4": 1.0}, "memory_Bps": 1.0}, "peak_flops"),
    ],
)
def test_roofline_rejects_bad_parameters(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(SpecError) as ei:
        RooflineComputeModel(**kwargs)  # type: ignore[arg-type]
    assert ei.value.field == field


def test_roofline_needs_accelerator_fields() -> None:
    with pytest.raises(SpecError, match="accelerator needs peak_flops"):
        RooflineComputeModel.from_accelerator({"name": "x"})


def _table() -> KernelTable:
    rows = [
        {"kernel": "gemm", "dtype": "bf16", "pass": "fwd", "m": 1024, "n": 1024, "k": 1024, "time_s": 2.0e-4},
        {"kernel": "gemm", "dtype": "bf16", "pass": "fwd", "m": 4096, "n": 1024, "k": 1024, "time_s": 4.0e-4},
        {"kernel": "rmsnorm", "dtype": "bf16", "pass": "fwd", "tokens": 4096, "hidden": 1024, "time_s": 1.0e-4},
    ]
    return KernelTable.from_frame(pd.DataFrame(rows), {"device_name": "testdev"})


def test_table_model_uses_table_then_empirical_roofline() -> None:
    m = TableComputeModel(_table())
    assert isinstance(m, ComputeModel)
    est = m.estimate("gemm", "fwd", m=2048, n=1024, k=1024)
    assert est.source == "table" and est.dtype == "bfloat16"
    assert est.time_s == pytest.approx(2e-4 * 2**0.5)  # halfway in log space
    assert m.time("gemm", "fwd", m=2048, n=1024, k=1024) == est.time_s
    # attention is not in the table: empirical roofline from the table's best throughputs
    best_flops = 2 * 4096 * 1024 * 1024 / 4e-4  # FLOP/s of the fastest gemm row
    best_Bps = 2 * (2 * 4096 * 1024 + 2 * 1024) / 1e-4  # bytes/s of the rmsnorm row
    att = m.estimate("attention", "fwd", dtype="bf16", batch=1, heads=8, seq=2048, head_dim=128)
    assert att.source.startswith("roofline:table")
    assert att.time_s == pytest.approx(max(att.flops / best_flops, att.bytes / best_Bps))


def test_table_model_strict_and_custom_fallback() -> None:
    strict = TableComputeModel(_table(), strict=True)
    with pytest.raises(SpecError, match="does not cover attention/fwd"):
        strict.time("attention", "fwd", batch=1, heads=1, seq=8, head_dim=8)
    fb = RooflineComputeModel(1e12, 1e11, name="datasheet")
    m = TableComputeModel(_table(), fb)
    assert m.estimate("swiglu", "bwd", dtype="bf16", tokens=10, hidden=10).source == "datasheet"
    # dtype not in the table -> fallback too
    assert m.estimate("gemm", "fwd", dtype="fp32", m=64, n=64, k=64).source == "datasheet"


def test_make_compute_model() -> None:
    r = make_compute_model(H100ISH, efficiency=0.7)
    assert isinstance(r, RooflineComputeModel) and r.efficiency == 0.7
    t = make_compute_model(H100ISH, _table())
    assert isinstance(t, TableComputeModel)
    with pytest.raises(SpecError, match="needs a kernel table or an accelerator"):
        make_compute_model()


def test_estimate_is_frozen_record() -> None:
    e = ComputeEstimate("gemm", "fwd", "bfloat16", 1.0, 2.0, 3.0, "table")
    with pytest.raises(AttributeError):
        e.time_s = 2.0  # type: ignore[misc]
