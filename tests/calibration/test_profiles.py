"""Compute profiles: presets pick the measured tables, derived answers, dtype fallback, notes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from netsim.calibration.attention import FlashAttentionModel
from netsim.calibration.compute import TableComputeModel
from netsim.calibration.kernels import KernelTable
from netsim.calibration.models import make_compute_model
from netsim.calibration.profiles import COMPUTE_PROFILES, profile_compute_model
from netsim.calibration.roofline import RooflineComputeModel
from netsim.calibration.shared_sms import SMClock
from netsim.config.scenario import load_scenario
from netsim.errors import SpecError
from netsim.topology import load_topology

KERNELS = Path(__file__).resolve().parent.parent.parent / "netsim" / "data" / "kernels"
ATT = {"batch": 1, "heads": 32, "seq": 4096, "head_dim": 128}


def _model(preset: str, *, measured_clock: bool = True, **kw: Any) -> Any:
    """The preset's compute model; ``measured_clock``: at the clock its profile's kernels were
    measured at (the tables as measured, no SM-clock scaling)."""
    acc = dict(load_topology(preset, nodes=1).graph["accelerator"])
    compute = acc.get("compute")
    if measured_clock and isinstance(compute, dict):
        prof = COMPUTE_PROFILES.get(str(compute["profile"]))
        acc["compute"] = {**compute, "clock_mhz": prof.measured_clock_mhz}
    return make_compute_model(acc, default_dtype="bf16", **kw)


@pytest.mark.parametrize(
    ("preset", "table"), [("dgx-h100", "vidur-h100"), ("h800", "vidur-h100"), ("dgx-a100", "vidur-a100")]
)
def test_gpu_presets_use_their_measured_table(preset: str, table: str) -> None:
    m = _model(preset)
    assert isinstance(m, TableComputeModel) and m.name.startswith(f"kernel-table:{table}")
    assert m.estimate("gemm", "fwd", m=4096, n=4096, k=4096).source == "table:surface"


def test_the_a100_profile_times_the_eager_norm_as_liger_measured_it() -> None:
    """rmsnorm_eager on dgx-a100 comes from liger-eager-a100.csv (Hugging Face's LlamaRMSNorm on an
    A100), far below the 80% roofline the H100, which has no such measurement, keeps."""
    a100, h100 = _model("dgx-a100"), _model("dgx-h100")
    e = a100.estimate("rmsnorm_eager", "bwd", tokens=8192, hidden=4096)
    assert a100.name.startswith("kernel-table:vidur-a100+liger-eager-a100") and e.source == "table"
    assert 1.2e12 < e.bytes / e.time_s < 1.4e12  # 1.31 TB/s measured at hidden 4,096
    assert not h100.estimate("rmsnorm_eager", "fwd", tokens=8192, hidden=4096).source.startswith("table")


def test_presets_without_a_table_keep_the_roofline() -> None:
    m = _model("ascend-910a", efficiency=0.5)
    assert isinstance(m, RooflineComputeModel) and m.efficiency == 0.5
    acc = dict(load_topology("dgx-h100", nodes=1).graph["accelerator"])
    acc["compute"] = {"profile": "roofline"}
    assert isinstance(make_compute_model(acc), RooflineComputeModel)


def test_unknown_profile_is_a_spec_error_naming_the_field() -> None:
    acc = dict(load_topology("dgx-h100", nodes=1).graph["accelerator"])
    with pytest.raises(SpecError, match="unknown compute profile 'b200'; allowed: roofline, h100-sxm, a100-sxm") as ei:
        make_compute_model({**acc, "compute": {"profile": "b200"}})
    assert ei.value.field == "accelerator.compute.profile"
    with pytest.raises(SpecError, match=r"kernel table 'nope\.csv' not found"):
        make_compute_model({**acc, "compute": {"profile": "h100-sxm", "kernels": "nope.csv"}})


def test_backward_is_twice_the_forward_for_gemms_and_says_so() -> None:
    m = _model("dgx-h100")
    fwd = m.estimate("gemm", "fwd", m=8192, n=4096, k=4096)
    bwd = m.estimate("gemm", "bwd", m=8192, n=4096, k=4096)
    assert bwd.time_s == pytest.approx(2 * fwd.time_s) and bwd.source == "table:fwd-scaled"
    assert any("backward" in n and "2x" in n for n in m.notes)
    # a memory-bound kernel: forward x the catalogue's byte ratio
    nf = m.estimate("rmsnorm", "fwd", tokens=4096, hidden=8192)
    nb = m.estimate("rmsnorm", "bwd", tokens=4096, hidden=8192)
    assert nb.time_s / nf.time_s == pytest.approx(nb.bytes / nf.bytes)


def test_bf16_is_answered_from_the_fp16_rows_with_a_note() -> None:
    m = _model("dgx-a100")
    a = m.estimate("gemm", "fwd", dtype="bf16", m=2048, n=4096, k=4096)
    b = m.estimate("gemm", "fwd", dtype="fp16", m=2048, n=4096, k=4096)
    assert a.time_s == b.time_s and a.dtype == "bfloat16"
    assert any("bfloat16 kernels timed from the table's float16 rows" in n for n in m.notes)


def test_fp8_gemms_use_the_stated_speedup_and_can_be_overridden() -> None:
    m = _model("h800")
    big = {"m": 16384, "n": 8192, "k": 8192}
    r = m.time("gemm", "fwd", dtype="bf16", **big) / m.time("gemm", "fwd", dtype="fp8", **big)
    assert 1.6 < r <= 1.75  # compute-bound: close to the 1.75x assumption
    small = {"m": 16, "n": 8192, "k": 8192}  # weight-streaming: FP8 halves the bytes instead
    assert m.time("gemm", "fwd", dtype="bf16", **small) / m.time("gemm", "fwd", dtype="fp8", **small) > 1.5
    acc = dict(load_topology("h800", nodes=1).graph["accelerator"])
    slow = make_compute_model({**acc, "compute": {"profile": "h100-sxm", "fp8_gemm_speedup": 1.25}})
    r2 = slow.time("gemm", "fwd", dtype="bf16", **big) / slow.time("gemm", "fwd", dtype="fp8", **big)
    assert 1.2 < r2 <= 1.25
    # non-GEMM kernels of an FP8 workload run at 16 bits
    assert m.time("rmsnorm", "fwd", dtype="fp8", tokens=4096, hidden=4096) == m.time(
        "rmsnorm", "fwd", dtype="bf16", tokens=4096, hidden=4096
    )
    assert any("non-GEMM kernels of a float8 workload" in n for n in m.notes)
    with pytest.raises(SpecError, match="must be finite and > 0"):
        profile_compute_model(acc, {"profile": "h100-sxm", "fp8_gemm_speedup": 0})


def test_attention_from_the_cited_flash_attention_throughput() -> None:
    h100, a100 = _model("dgx-h100"), _model("dgx-a100")
    e = h100.estimate("attention", "fwd", **ATT)
    assert e.source == "flash-attention:FlashAttention-3"
    assert e.time_s == pytest.approx(e.flops / 579e12)  # FA3 Fig. 5, causal, head dim 128, seq 4k
    b = h100.estimate("attention", "bwd", **ATT)
    assert b.time_s == pytest.approx(b.flops / (542e12 * 579 / 638))  # Fig. 6 x causal/non-causal at 4k
    a = a100.estimate("attention", "fwd", **ATT)
    assert a.time_s == pytest.approx(a.flops / (0.73 * 312e12 * 319 / 370))  # FA2 max x FA2's causal shape
    # above the longest published sequence the rate stays; below the shortest it does not rise
    fa = FlashAttentionModel({"fwd": [(512, 100e12), (1024, 200e12)], "bwd": [(512, 1e12)]}, 1e15)
    assert fa.rate("fwd", 4096) == pytest.approx(200e12) and fa.rate("fwd", 256) == pytest.approx(50e12)
    assert fa.rate("bwd", 64) == pytest.approx(1e12)


def test_attention_rate_follows_the_head_dimension() -> None:
    # FA3 Fig. 5 at 4k, causal forward: head dim 64 420, head dim 128 579 TFLOP/s; between them
    # interpolated in log(head_dim), above 128 the 128 curve (no larger panel is used)
    h100 = _model("dgx-h100")

    def rate(d: int) -> float:
        e = h100.estimate("attention", "fwd", **{**ATT, "head_dim": d})
        return float(e.flops / e.time_s)

    assert rate(64) == pytest.approx(420e12) and rate(128) == pytest.approx(579e12)
    assert rate(256) == pytest.approx(579e12) and rate(32) == pytest.approx(420e12)
    assert rate(91) == pytest.approx((420e12 * 579e12) ** 0.5, rel=0.01)  # 91 ~ sqrt(64 * 128)
    b = h100.estimate("attention", "bwd", **{**ATT, "head_dim": 64})  # Fig. 6 x causal/non-causal
    assert b.time_s == pytest.approx(b.flops / (453e12 * 420 / 476))
    a100 = _model("dgx-a100")  # one FA2 curve for every head dimension
    assert a100.time("attention", "fwd", **{**ATT, "head_dim": 64}) == pytest.approx(
        a100.time("attention", "fwd", **ATT) / 2
    )


def test_attention_kernel_is_a_choice_of_the_accelerator() -> None:
    # accelerator.compute.attention: FlashAttention-2 on H100 (the FA3 paper's FA2 bars, causal
    # head dim 128 at 4k: forward 319; backward 310 non-causal x FA2's causal/non-causal 319/368)
    h100 = _model("dgx-h100")
    acc = dict(load_topology("dgx-h100", nodes=1).graph["accelerator"])
    fa2 = make_compute_model(
        {**acc, "compute": {**acc["compute"], "attention": "flash-attention-2", "clock_mhz": 1980}}
    )
    e = fa2.estimate("attention", "fwd", **ATT)
    assert e.source == "flash-attention:FlashAttention-2" and "attention FlashAttention-2" in fa2.name
    assert e.time_s == pytest.approx(e.flops / 319e12)
    b = fa2.estimate("attention", "bwd", **ATT)
    assert b.time_s == pytest.approx(b.flops / (310e12 * 319 / 368))
    # FA2 has one curve for every head dimension; the GEMMs are the profile's either way
    assert fa2.time("attention", "fwd", **{**ATT, "head_dim": 64}) == pytest.approx(e.time_s / 2)
    assert fa2.time("gemm", "fwd", m=4096, n=4096, k=4096) == h100.time("gemm", "fwd", m=4096, n=4096, k=4096)
    named = make_compute_model(
        {**acc, "compute": {**acc["compute"], "attention": "flash-attention-3", "clock_mhz": 1980}}
    )
    assert named.time("attention", "bwd", **ATT) == h100.time("attention", "bwd", **ATT)
    a100 = dict(load_topology("dgx-a100", nodes=1).graph["accelerator"])
    with pytest.raises(
        SpecError,
        match="unknown attention kernel 'flash-attention-3' for compute profile 'a100-sxm'; allowed: flash-attention-2",
    ) as ei:
        make_compute_model({**a100, "compute": {**a100["compute"], "attention": "flash-attention-3"}})
    assert ei.value.field == "accelerator.compute.attention"


def test_cudnn_attention_matches_the_published_cudnn_measurements() -> None:
    # the FA3 paper's cuDNN bars x FA3's causal/non-causal ratio, checked against two independent
    # measurements of cuDNN on H100 at seq 8,192, causal, head dim 128 (profiles module doc)
    acc = dict(load_topology("dgx-h100", nodes=1).graph["accelerator"])
    cudnn = make_compute_model({**acc, "compute": {**acc["compute"], "attention": "cudnn", "clock_mhz": 1980}})
    shape = {"batch": 2, "heads": 32, "seq": 8192, "head_dim": 128}
    f, b = cudnn.estimate("attention", "fwd", **shape), cudnn.estimate("attention", "bwd", **shape)
    assert f.source == "flash-attention:cuDNN"
    assert f.flops / f.time_s == pytest.approx(565.7e12, rel=0.03)  # flash-attention PR #1893
    assert b.flops / b.time_s == pytest.approx(469.8e12, rel=0.03)
    both = (f.flops + b.flops) / (f.time_s + b.time_s)
    assert both == pytest.approx(514e12, rel=0.03)  # Transformer Engine's attention benchmark
    fa3 = _model("dgx-h100")  # FlashAttention-3, the default: ~5% faster than cuDNN at 8K
    f3, b3 = fa3.estimate("attention", "fwd", **shape), fa3.estimate("attention", "bwd", **shape)
    assert (f3.flops + b3.flops) / (f3.time_s + b3.time_s) / both == pytest.approx(1.08, abs=0.03)


def test_cudnn_attention_at_head_dim_64_follows_flash_attention_3_s_head_dim_ratio() -> None:
    # no cuDNN bars at head dim 64 are transcribed: cuDNN's head-dim-128 curves times FA3's own
    # 64/128 ratio (before 2026-12-07 the 128 curves served head dim 64, ~25% too fast there)
    acc = dict(load_topology("dgx-h100", nodes=1).graph["accelerator"])
    cudnn = make_compute_model({**acc, "compute": {**acc["compute"], "attention": "cudnn"}})
    fa3 = _model("dgx-h100")
    for p in ("fwd", "bwd"):
        t = {
            (name, hd): m.estimate("attention", p, batch=1, heads=64, seq=4096, head_dim=hd)
            for name, m in (("cudnn", cudnn), ("fa3", fa3))
            for hd in (64, 128)
        }
        rate = {k: e.flops / e.time_s for k, e in t.items()}
        assert rate[("cudnn", 64)] < rate[("cudnn", 128)]
        assert rate[("cudnn", 64)] / rate[("cudnn", 128)] == pytest.approx(
            rate[("fa3", 64)] / rate[("fa3", 128)], rel=1e-6
        )


def test_attention_kernel_reaches_a_run_through_set(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from netsim.cli import main

    g = load_topology("dgx-h100", nodes=1, overrides=["accelerator.compute.attention=flash-attention-2"])
    assert "attention FlashAttention-2" in make_compute_model(g.graph["accelerator"]).name
    out = tmp_path / "run"
    argv = ["run", "--topology", "dgx-a100", "--nodes", "1", "--workload", "gpt-dense", "-o", str(out)]
    with pytest.raises(SystemExit) as ei:
        main([*argv, "--set", "topology.accelerator.compute.attention=flash-attention-3"])
    assert ei.value.code == 2 and not out.exists()
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "accelerator.compute.attention" in err and "allowed: flash-attention-2" in err


def test_grouped_gemm_is_one_kernel_over_the_experts() -> None:
    m = _model("dgx-h100")
    g = m.estimate("grouped_gemm", "fwd", tokens=4096, experts=8, n=4096, k=7168)
    surf = m.table.gemm_surface("float16")
    assert g.source == "table:surface+grouped"
    assert g.time_s == pytest.approx(surf.grouped_time_s([512.0] * 8, 4096, 7168))
    # fewer tokens per expert are less efficient: same total work on 64 experts takes longer
    assert m.time("grouped_gemm", "fwd", tokens=4096, experts=64, n=512, k=7168) > m.time(
        "grouped_gemm", "fwd", tokens=4096, experts=8, n=512, k=7168
    )
    assert m.time("grouped_gemm", "bwd", tokens=4096, experts=8, n=4096, k=7168) == pytest.approx(2 * g.time_s)


def test_a_table_without_the_workloads_dtype_falls_back_with_a_note() -> None:
    # issue 18 item 18: the shipped CPU table (float32) with a bf16 workload
    cpu = TableComputeModel(KERNELS / "cpu-amd-epyc-1thread.csv", default_dtype="bf16")
    e = cpu.estimate("gemm", "fwd", m=512, n=512, k=512)
    f32 = cpu.estimate("gemm", "fwd", dtype="fp32", m=512, n=512, k=512)
    assert e.time_s == f32.time_s and e.dtype == "bfloat16"
    assert cpu.notes == [
        "the kernel table has no bfloat16 rows: bfloat16 kernels timed from its float32 rows at the same speed (x1.0)"
    ]
    # a kernel the table lacks, through its empirical roofline (which has no bf16 peak either)
    rows = pd.DataFrame(
        [{"kernel": "gemm", "dtype": "fp32", "pass": "fwd", "m": 64, "n": 64, "k": 64, "time_s": 1e-5}] * 1
    )
    t = TableComputeModel(KernelTable.from_frame(rows), default_dtype="bf16")
    assert t.time("attention", "fwd", batch=1, heads=1, seq=64, head_dim=64) > 0
    assert any("knows no bfloat16 peak" in n for n in t.notes)


def test_run_summary_names_the_compute_model_and_its_notes(tmp_path: Path) -> None:
    from netsim.run import prepare
    from tests.replay.conftest import tiny_scenario

    prep = prepare(load_scenario(tiny_scenario()))
    name = prep.compute.name  # type: ignore[attr-defined]
    assert name.startswith("kernel-table:vidur-h100+liger-megatron-h100 | profile h100-sxm")
    assert any("float16" in n for n in prep.compute.notes)  # type: ignore[attr-defined]
    cpu = prepare(load_scenario(tiny_scenario(options={"kernels": str(KERNELS / "cpu-amd-epyc-1thread.csv")})))
    # a table the scenario names replaces the profile's, and nothing is laid over it
    assert cpu.compute.name.startswith("kernel-table:cpu-amd-epyc-1thread | ")  # type: ignore[attr-defined]
    # the CPU table has no bf16: the H100 datasheet roofline (which knows bf16) answers, and says so
    assert "the kernel table has no bfloat16 rows: bfloat16 kernels timed by roofline:H100-SXM5-80GB" in (
        cpu.compute.notes  # type: ignore[attr-defined]
    )


def test_profiles_are_registered_with_sources() -> None:
    assert COMPUTE_PROFILES.names() == ["roofline", "h100-sxm", "a100-sxm"]
    h100 = COMPUTE_PROFILES.get("h100-sxm")
    assert h100.kernels == "vidur-h100.csv" and h100.fp8_gemm_speedup == 1.75
    assert h100.overlays == ("liger-megatron-h100.csv",)
    assert COMPUTE_PROFILES.get("a100-sxm").fp8_gemm_speedup is None


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("accelerator.compute.fp8_gemm_speedup=0", "accelerator.compute.fp8_gemm_speedup"),
        ("accelerator.compute.flash=1", "accelerator.compute.flash"),
    ],
)
def test_bad_compute_sections_name_the_field(override: str, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        load_topology("dgx-h100", nodes=1, overrides=[override])


def test_compute_section_overrides_reach_the_model() -> None:
    g = load_topology("dgx-h100", nodes=1, overrides=["accelerator.compute.profile=roofline"])
    assert isinstance(make_compute_model(g.graph["accelerator"]), RooflineComputeModel)
    g = load_topology("dgx-a100", nodes=1, overrides=["accelerator.compute.kernels=vidur-h100.csv"])
    assert make_compute_model(g.graph["accelerator"]).name.startswith("kernel-table:vidur-h100 | profile a100-sxm")


def test_training_runs_the_sms_at_the_rated_clock() -> None:
    """The H100 tables ran at the 1,980 MHz boost clock; a training step's SM-bound kernels run at
    the rated 1,830 MHz (the preset's ``clock_mhz``), its HBM-bound ones at the measured speed; the
    A100 is rated at its boost clock: no scaling."""
    measured, training = _model("dgx-h100"), _model("dgx-h100", measured_clock=False)
    assert isinstance(training, SMClock) and training.slowdown == pytest.approx(1980 / 1830)
    assert "SM clock 1830 MHz (tables measured at 1980)" in training.name
    for kernel, shape in (("gemm", {"m": 8192, "n": 4096, "k": 4096}), ("attention", ATT)):
        for p in ("fwd", "bwd"):
            assert training.time(kernel, p, **shape) == pytest.approx(1980 / 1830 * measured.time(kernel, p, **shape))
    e = training.estimate("grouped_gemm", "fwd", tokens=4096, experts=8, n=4096, k=7168)
    assert e.source.endswith("x1980/1830 MHz")
    norm = {"tokens": 4096, "hidden": 8192}
    assert training.time("rmsnorm", "fwd", **norm) == measured.time("rmsnorm", "fwd", **norm)
    assert isinstance(_model("dgx-a100", measured_clock=False), TableComputeModel)
    # overridable; a table given instead of the profile's is taken as measured at the training clock
    acc = dict(load_topology("dgx-h100", nodes=1).graph["accelerator"])
    hot = profile_compute_model(acc, {"profile": "h100-sxm", "clock_mhz": 1575})
    assert hot.time("gemm", "fwd", m=4096, n=4096, k=4096) == pytest.approx(
        1980 / 1575 * measured.time("gemm", "fwd", m=4096, n=4096, k=4096)
    )
    assert isinstance(profile_compute_model(acc, {"profile": "h100-sxm"}, table="vidur-h100.csv"), TableComputeModel)
    with pytest.raises(SpecError, match=r"accelerator\.compute\.clock_mhz"):
        load_topology("dgx-h100", nodes=1, overrides=["accelerator.compute.clock_mhz=-5"])


def test_megatron_bias_gelu_is_timed_as_its_measured_swiglu_at_equal_bytes() -> None:
    """h100-sxm times ``gelu`` (absent from its tables) as the Liger-measured Megatron SwiGLU moving
    the same bytes; a table given in the profile's place, or the A100 profile, does not."""
    m = _model("dgx-h100")
    for pass_ in ("fwd", "bwd"):
        gelu = m.estimate("gelu", pass_, tokens=4096, hidden=8192)
        assert gelu.source == "table:analog"
        # swiglu's catalogue bytes are 3/2 (fwd) and 5/3 (bwd) of gelu's per (tokens x width)
        width = 8192 * (2 / 3 if pass_ == "fwd" else 3 / 5)
        swiglu = m.estimate("swiglu", pass_, tokens=4096, hidden=width)
        assert gelu.time_s == pytest.approx(swiglu.time_s, rel=1e-9)
        assert gelu.bytes == pytest.approx(swiglu.bytes, rel=1e-9)
    bwd = m.estimate("gelu", "bwd", tokens=4096, hidden=8192)
    assert bwd.bytes / bwd.time_s < 1e12  # well below the 3.35 TB/s roofline
    assert any("gelu timed as the table's swiglu" in n for n in m.notes)
    # not for another table, nor for the A100 profile (no measured Megatron SwiGLU there)
    acc = dict(load_topology("dgx-h100", nodes=1).graph["accelerator"])
    other = make_compute_model(acc, table=KERNELS / "vidur-h100.csv", default_dtype="bf16")
    assert other.estimate("gelu", "bwd", tokens=4096, hidden=8192).source != "table:analog"
    assert _model("dgx-a100").estimate("gelu", "bwd", tokens=4096, hidden=8192).source != "table:analog"


def test_an_analog_pair_must_be_token_by_width_kernels() -> None:
    table = KernelTable.load(KERNELS / "vidur-h100.csv")
    with pytest.raises(SpecError, match="analog pair must be") as ei:
        TableComputeModel(table, analogs={"gelu": "gemm"})
    assert ei.value.field == "analogs"
