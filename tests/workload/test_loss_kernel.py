"""The loss kernel of the output head (``training.cross_entropy``): its implementation, shape and
the measured H100 times it takes."""

from __future__ import annotations

from typing import Any

import pytest

from netsim.calibration.kernels import KernelTable
from netsim.calibration.profiles import KERNEL_DATA_DIR, profile_compute_model
from netsim.config.workload import load_workload
from netsim.errors import SpecError
from netsim.topology import load_topology
from netsim.workload.costs import LOSS_KERNELS, ModelCosts
from netsim.workload.graph import build_plan

LLAMA8B: dict[str, Any] = {
    "layers": 32,
    "hidden": 4096,
    "ffn_hidden": 14336,
    "heads": 32,
    "kv_heads": 8,
    "vocab": 128256,
    "seq_len": 8192,
    "activation": "swiglu",
}


def _h100() -> Any:
    g = load_topology("dgx-h100", nodes=1)
    acc = g.graph["accelerator"]
    return profile_compute_model(acc, acc["compute"], default_dtype="bf16")


def test_the_head_ends_with_the_loss_of_the_configured_implementation() -> None:
    spec = load_workload({"model": LLAMA8B}, source="t")
    for impl, kernel in LOSS_KERNELS.items():
        c = ModelCosts(spec.model, 1, 2, cross_entropy=impl)
        fwd, bwd = c.head("F")[-1], c.head("BW")[-1]
        assert (fwd.kernel, fwd.pass_, bwd.kernel, bwd.pass_) == (kernel, "fwd", kernel, "bwd")
        assert dict(fwd.shape) == {"tokens": 8192.0, "vocab": 128256 / 2}  # the rank's vocabulary columns
        assert fwd.no_fp8 and all(k.kernel == "gemm" for k in c.head("W"))  # no weight gradient; 16-bit


def test_loss_times_on_h100_come_from_the_measured_megatron_kernels() -> None:
    model = _h100()
    liger = KernelTable.load(KERNEL_DATA_DIR / "liger-megatron-h100.csv")
    for kernel in ("cross_entropy", "cross_entropy_fused", "cross_entropy_online", "swiglu"):
        for pass_ in ("fwd", "bwd"):
            est = model.estimate(kernel, pass_, dtype="bf16", **_measured_shape(liger, kernel, pass_))
            assert est.source == "table"
            row = liger.df[(liger.df.kernel == kernel) & (liger.df["pass"] == pass_)].iloc[-1]
            assert est.time_s == pytest.approx(row.time_s, rel=1e-9)
    # a Llama-3 8B micro-batch (8192 tokens, 128,256 columns): unfused > fused > one-pass
    t = [model.time(k, "fwd", dtype="bf16", tokens=8192, vocab=128256) for k in LOSS_KERNELS.values()]
    assert t[0] > t[1] > t[2] > 1e-3


def _measured_shape(t: KernelTable, kernel: str, pass_: str) -> dict[str, float]:
    row = t.df[(t.df.kernel == kernel) & (t.df["pass"] == pass_)].iloc[-1]
    col = "hidden" if kernel == "swiglu" else "vocab"
    return {"tokens": float(row.tokens), col: float(row[col])}


def test_a_bad_loss_implementation_names_the_field() -> None:
    with pytest.raises(SpecError, match=r"training\.cross_entropy"):
        load_workload({"model": LLAMA8B}, ["training.cross_entropy=liger"], source="t")


def test_the_loss_lengthens_the_last_stage_by_its_measured_time() -> None:
    g = load_topology("dgx-h100", nodes=1)
    model = _h100()
    heads = {}
    for impl in ("unfused", "te"):
        spec = load_workload(
            {"model": {**LLAMA8B, "layers": 2}, "parallelism": {"tp": 8, "pp": 1}, "num_microbatches": 1},
            [f"training.cross_entropy={impl}"],
            source="t",
        )
        plan = build_plan(spec, g, model)
        heads[impl] = sum(o.duration_s for o in plan.ops if o.rank == 0 and "head" in o.name)
    diff = heads["unfused"] - heads["te"]
    want = sum(
        model.time(k, p, dtype="bf16", tokens=8192, vocab=128256 / 8)
        for p in ("fwd", "bwd")
        for k in ("cross_entropy",)
    ) - sum(model.time("cross_entropy_online", p, dtype="bf16", tokens=8192, vocab=128256 / 8) for p in ("fwd", "bwd"))
    assert diff == pytest.approx(want, rel=1e-9)
