"""GPU time by kernel class (netsim.traces.kernel_classes): real kernel names of cuBLAS, Transformer
Engine, FlashAttention, NCCL, DeepEP and DeepSeek's kernels land in the right class; busy time is
the union of intervals (two streams at once count once); --per, --streams; the CLI and its errors."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from netsim.errors import TraceError
from netsim.traces.kernel_classes import CLASSES, class_breakdown, kernel_class, netsim_kernel_class
from netsim.traces.kineto import load_kineto
from tests.cli_run import run_cli

# (kernel name as a profiler records it, class); names from public traces and libraries
NAMES = [
    ("sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x256x64_warpgroupsize2x1x1_execute_segment_k_off", "gemm"),
    ("void cutlass::device_kernel<dpsk::grouped_gemm::cuda::m_grouped_fp8_ptp128c::GemmKernel>(Params)", "gemm"),
    ("nvjet_hsh_256x128_64x4_1x2_h_bz_coopA_NTN", "gemm"),  # cuBLAS 12.x Hopper GEMMs
    ("void flash::compute_attn_ws<Flash_fwd_kernel_traits<192, 128, 128, 12, 2, false>>(Params)", "attention"),
    ("void cutlass::device_kernel<flash::FlashAttnBwd<flash::CollectiveMainloopBwd<2>>>(Params)", "attention"),
    ("cudnn_generated_fort_native_sdpa_sm90_flash_fprop_wgmma_f16_knob_7_64x128x128_4x1x1_kernel0_0", "attention"),
    ("void transformer_engine::detail::cast_transpose_kernel<8, true, float>(float const*)", "fp8_cast"),
    ("void cuda::per_channel_cast_and_transpose<256, 128, true, true, true, false, true>(int4 const*)", "fp8_cast"),
    ("void cuda::per_token_cast_to_fp8_with_channels<__nv_bfloat16, 128, false>(__nv_bfloat16 const*)", "fp8_cast"),
    ("void transformer_engine::amax_kernel<8, false, __nv_bfloat16>(__nv_bfloat16 const*)", "fp8_cast"),
    ("void layer_norm::ln_fwd_kernel<layer_norm::Kernel_traits<__nv_bfloat16>>(FwdParams)", "norm"),
    ("void transformer_engine::normalization::rmsnorm_fwd_tuned_kernel<Ktraits>(FwdParams)", "norm"),
    ("ncclDevKernel_AllReduce_Sum_bf16_RING_LL(ncclDevKernelArgsStorage<4096ul>)", "communication"),
    ("void dpsk::ep::internode::dispatch<false, 8, true, 8>(int4*, float*)", "communication"),
    ("void deep_ep::intranode::combine<__nv_bfloat16, 8>(int4*)", "communication"),
    ("void dpsk::grouped_gemm::cuda::utils::transpose<512, 128, 4, 4>(unsigned char const*)", "other"),
    (
        "void at::native::unrolled_elementwise_kernel<at::native::direct_copy_kernel_cuda, "
        "TrivialOffsetCalculator<1>, memory::LoadWithCast<1>, memory::StoreWithCast<1> >(int)",
        "other",
    ),
    ("void at::native::vectorized_elementwise_kernel<4, at::native::CUDAFunctor_add<c10::BFloat16>>(int)", "other"),
    ("rotary_kernel", "other"),
]


@pytest.mark.parametrize(("name", "cls"), NAMES)
def test_kernel_names_land_in_their_class(name: str, cls: str) -> None:
    assert kernel_class(name) == cls


def test_netsim_catalogue_kernels_map_to_the_same_classes() -> None:
    assert netsim_kernel_class("grouped_gemm") == "gemm" == netsim_kernel_class("router_linear")
    assert netsim_kernel_class("attention") == "attention"
    assert netsim_kernel_class("rmsnorm") == "norm" == netsim_kernel_class("layernorm")
    assert netsim_kernel_class("residual", quant=True) == "fp8_cast"
    assert netsim_kernel_class("residual") == netsim_kernel_class("swiglu") == "other"


def _kernel(name: str, ts: float, dur: float, stream: int) -> dict[str, object]:
    return {"ph": "X", "cat": "kernel", "name": name, "pid": 0, "tid": stream, "ts": ts, "dur": dur, "args": {}}


def _trace(tmp_path: Path) -> Path:
    gemm, cast, nccl = "sm90_xmma_gemm_bf16", "cast_transpose_kernel", "ncclDevKernel_AllGather_RING_LL"
    ev = [
        {"ph": "X", "cat": "cpu_op", "name": "aten::mm", "pid": 1, "tid": 1, "ts": 0, "dur": 5},
        _kernel(gemm, 0, 100, 7),  # [0, 100)
        _kernel(gemm, 50, 100, 23),  # [50, 150): overlaps the first on another stream
        _kernel(cast, 200, 10, 7),
        _kernel(gemm, 300, 40, 7),
        _kernel(nccl, 0, 400, 27),  # communication beside everything
    ]
    p = tmp_path / "t.json"
    p.write_text(json.dumps({"traceEvents": ev}))
    return p


def test_busy_time_is_the_union_and_per_divides(tmp_path: Path) -> None:
    df = class_breakdown(load_kineto(_trace(tmp_path)), per=2).set_index("class")
    us = 1e-6 / 2
    assert df.loc["gemm", "kernels"] == 3
    assert df.loc["gemm", "sum_s"] == pytest.approx(240 * us)
    assert df.loc["gemm", "busy_s"] == pytest.approx(190 * us)  # [0, 150) and [300, 340)
    assert df.loc["fp8_cast", "busy_s"] == pytest.approx(10 * us)
    assert df.loc["communication", "busy_s"] == pytest.approx(400 * us)
    assert df.loc["compute", "busy_s"] == pytest.approx(200 * us)  # gemm and cast, no overlap between them
    assert df.loc["all", "busy_s"] == pytest.approx(400 * us)
    assert "attention" not in df.index  # classes without kernels are left out
    assert list(df.index) == [c for c in CLASSES if c in df.index] + ["compute", "all"]


def test_busy_time_is_per_device(tmp_path: Path) -> None:
    """Two GPUs running the same kernel at the same time are busy twice, not once."""
    ev = [_kernel("sm90_xmma_gemm_bf16", 0, 100, 7), {**_kernel("sm90_xmma_gemm_bf16", 0, 100, 7), "pid": 1}]
    p = tmp_path / "two.json"
    p.write_text(json.dumps({"traceEvents": ev}))
    df = class_breakdown(load_kineto(p), per=2).set_index("class")
    assert df.loc["gemm", "busy_s"] == pytest.approx(100e-6) == df.loc["gemm", "sum_s"]


def test_streams_select_kernels(tmp_path: Path) -> None:
    df = class_breakdown(load_kineto(_trace(tmp_path)), streams=["23"]).set_index("class")
    assert list(df.index) == ["gemm", "compute", "all"]
    assert df.loc["gemm", "busy_s"] == pytest.approx(100e-6)
    # a stream the trace's kernels are not on is named, with the streams they are on
    with pytest.raises(TraceError, match=r"stream\(s\) 99; the trace's kernel streams: ") as info:
        class_breakdown(load_kineto(_trace(tmp_path)), streams=["23", "99"])
    assert "--streams" in str(info.value) and str(info.value).endswith("streams: 23, 27, 7")


def test_cli_classes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "classes.csv"
    code, text, _ = run_cli(["import", "kineto", str(_trace(tmp_path)), "--classes", str(out), "--per", "2"], capsys)
    assert code == 0 and "GPU kernel time by class (per 2)" in text
    df = pd.read_csv(out).set_index("class")
    assert df.loc["gemm", "busy_s"] == pytest.approx(95e-6)
    # a CPU-only trace has no kernels; --per must be positive: one line, exit 2, nothing written
    cpu = Path(__file__).resolve().parents[1] / "fixtures" / "traces" / "moe_layer_cpu.json"
    code, _, err = run_cli(["import", "kineto", str(cpu), "--classes", str(tmp_path / "c.csv")], capsys)
    assert code == 2 and "no GPU kernels" in err and len(err.strip().splitlines()) == 1
    code, _, err = run_cli(
        ["import", "kineto", str(_trace(tmp_path)), "--classes", str(tmp_path / "d.csv"), "--per", "0"], capsys
    )
    assert code == 2 and "--per" in err
    assert not (tmp_path / "c.csv").exists() and not (tmp_path / "d.csv").exists()


def test_cli_streams_needs_classes_and_a_stream(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    trace = str(_trace(tmp_path))
    out = tmp_path / "ops.csv"
    code, _, err = run_cli(["import", "kineto", trace, "--out", str(out), "--streams", "23"], capsys)
    assert code == 2 and "--streams" in err and "--classes" in err and len(err.strip().splitlines()) == 1
    code, _, err = run_cli(
        ["import", "kineto", trace, "--classes", str(tmp_path / "c.csv"), "--streams", " , "], capsys
    )
    assert code == 2 and "--streams" in err and "at least one stream" in err
    code, _, err = run_cli(["import", "kineto", trace, "--classes", str(tmp_path / "d.csv"), "--streams", "99"], capsys)
    assert code == 2 and "stream(s) 99" in err
    assert not out.exists() and not (tmp_path / "c.csv").exists() and not (tmp_path / "d.csv").exists()
