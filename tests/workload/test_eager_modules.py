"""Model pieces run as eager PyTorch ops (``training.eager_modules``) and PyTorch's foreach Adam
(``optimizer.implementation``): their byte counts, where their kernels sit in a layer, what they
keep in memory, and the inputs they refuse."""

from __future__ import annotations

from typing import Any

import pytest

from netsim.calibration.catalogue import KERNELS
from netsim.calibration.eager_counts import FOREACH_ADAMW_EXTRA_BYTES
from netsim.config.workload import load_workload
from netsim.errors import SpecError
from netsim.workload.costs import ModelCosts
from netsim.workload.optimizer import ADAMW_KERNEL_BYTES_PER_PARAM, optimizer_precision

LLAMA: dict[str, Any] = {
    "layers": 2,
    "hidden": 1024,
    "ffn_hidden": 2816,
    "heads": 16,
    "kv_heads": 4,
    "vocab": 1024,
    "seq_len": 512,
    "activation": "swiglu",
}


def _costs(*edits: str, tp: int = 1) -> ModelCosts:
    spec = load_workload({"model": LLAMA}, list(edits), source="t")
    return ModelCosts(
        spec.model,
        2,
        tp,
        sequence_parallel=False,
        activation_fusion=spec.training.activation_fusion,
        eager_modules=spec.training.eager_modules,
    )


def _per_element(kernel: str, pass_: str) -> float:
    return KERNELS[kernel].nbytes({"tokens": 1000.0, "hidden": 100.0}, pass_, "bf16") / 1e5


@pytest.mark.parametrize(
    ("kernel", "fwd", "bwd"),
    [
        ("rmsnorm", 4.0, 6.0),  # one fused kernel: read x, write y; back read x and dy, write dx
        ("rmsnorm_eager", 36.0, 92.0),  # eight fp32 ops forward, thirteen back (eager_counts)
        ("rope_eager", 36.0, 36.0),  # cast, broadcast product, sum, cast back
    ],
)
def test_an_eager_op_sequence_moves_many_times_a_fused_kernels_bytes(kernel: str, fwd: float, bwd: float) -> None:
    # (the fused norm also reads its weight and writes its gradient: a hundredth of these rows)
    assert _per_element(kernel, "fwd") == pytest.approx(fwd, rel=1e-2)
    assert _per_element(kernel, "bwd") == pytest.approx(bwd, rel=1e-2)


def test_eager_norms_replace_the_fused_ones_and_the_rotary_embedding_follows_the_qkv_gemm() -> None:
    fused, eager = _costs(), _costs("training.eager_modules=[norm, rope]")
    f = [c.kernel for c in fused.attention("F")]
    e = [c.kernel for c in eager.attention("F")]
    assert f[0] == "rmsnorm" and "rope_eager" not in f
    assert e[0] == "rmsnorm_eager" and e[1:3] == ["gemm", "rope_eager"] and e[3] == "attention"
    assert eager.mlp("F")[0].kernel == "rmsnorm_eager"
    # the rope rotates the queries and the keys (16 + 4 heads of 64), all T = 2 x 512 tokens
    (rope,) = [c for c in eager.attention("F") if c.kernel == "rope_eager"]
    assert dict(rope.shape) == {"tokens": 1024.0, "hidden": 20 * 64.0}
    assert "rope_eager" in [c.kernel for c in eager.attention("BW")]
    # under TP: each rank rotates its own heads, and the TP pieces put the rope before the core
    tp = _costs("training.eager_modules=[rope]", tp=4)
    (r,) = [c for c in tp.attention("F") if c.kernel == "rope_eager"]
    assert dict(r.shape)["hidden"] == (4 + 1) * 64.0
    pieces = tp.tp_forward("attn")
    assert [c.kernel for c in pieces.gemm_in] == ["gemm"] and pieces.mid[0].kernel == "rope_eager"


def test_the_eager_pieces_lengthen_a_step_by_their_bytes() -> None:
    from netsim.calibration.roofline import RooflineComputeModel

    model = RooflineComputeModel({"bf16": 300e12}, 2e12, 1.0, 1.0)

    def seconds(c: ModelCosts) -> float:
        calls = [*c.attention("F"), *c.attention("BW"), *c.mlp("F"), *c.mlp("BW")]
        return sum(x.time_s(model, "bf16") for x in calls)

    fused, eager = _costs(), _costs("training.eager_modules=[norm, rope]")
    t, h, qk = 1024.0, 1024.0, 20 * 64.0
    extra = 2 * (36 + 92 - 4 - 6) * t * h + (36 + 36) * t * qk  # two norms, one rotary embedding
    # (less the fused norms' weight bytes, a thousandth)
    assert seconds(eager) - seconds(fused) == pytest.approx(extra / 2e12, rel=1e-3)


def test_an_eager_norm_keeps_its_fp32_upcast_for_the_backward() -> None:
    from netsim.workload.memory import ActivationModel
    from netsim.workload.recompute import workload_recompute

    def per_layer(*edits: str) -> float:
        spec = load_workload({"model": {**LLAMA, "seq_len": 1024}}, list(edits), source="t")
        return ActivationModel(spec, 1, 1024, workload_recompute(spec), None).layer(0)

    extra = per_layer("training.eager_modules=[norm]") - per_layer()
    assert extra == pytest.approx(2 * 4.0 * 1024 * 1024)  # two norms, 4 bytes per element
    full = "training.recompute=full"
    assert per_layer(full, "training.eager_modules=[norm]") == per_layer(full)  # nothing kept inside


def test_foreach_adam_moves_its_intermediate_passes() -> None:
    fused = optimizer_precision(load_workload({"model": LLAMA}, [], source="t"))
    foreach = optimizer_precision(load_workload({"model": LLAMA}, ["optimizer.implementation=foreach"], source="t"))
    assert foreach.step_bytes - fused.step_bytes == FOREACH_ADAMW_EXTRA_BYTES == 52.0
    (call,) = foreach.step_calls(1e9)
    assert call.scale == pytest.approx(foreach.step_bytes / ADAMW_KERNEL_BYTES_PER_PARAM)


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        ({"model": {**LLAMA, "activation": "gelu"}, "training": {"eager_modules": ["norm"]}}, "LayerNorm"),
        ({"model": LLAMA, "training": {"eager_modules": ["softmax"]}}, "'norm' or 'rope'"),
        ({"model": LLAMA, "optimizer": {"implementation": "apex"}}, "'fused' or 'foreach'"),
    ],
)
def test_bad_eager_settings_are_one_line_errors(data: dict[str, Any], needle: str) -> None:
    with pytest.raises(SpecError) as err:
        load_workload(data, [], source="w.yaml")
    msg = str(err.value)
    assert needle in msg and "w.yaml" in msg and "\n" not in msg.strip()


def test_the_torch_sequences_compute_what_the_model_code_computes() -> None:
    torch = pytest.importorskip("torch")
    from netsim.calibration.torch_kernels import kernel_closures

    closures, _ = kernel_closures(torch, "rmsnorm_eager", {"tokens": 8, "hidden": 16}, torch.float32, "cpu")
    closures["fwd"]()
    closures["bwd"]()
    # the rotation keeps each pair's length (an orthogonal 2 x 2 per pair)
    closures, _ = kernel_closures(torch, "rope_eager", {"tokens": 8, "hidden": 16}, torch.float32, "cpu")
    closures["fwd"]()
    with pytest.raises(SpecError, match="even hidden"):
        kernel_closures(torch, "rope_eager", {"tokens": 8, "hidden": 15}, torch.float32, "cpu")
