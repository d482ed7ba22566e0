"""The kernels around the routed experts that depend on the framework's implementation: the
activation fused or eager (``training.activation_fusion``), the router-probability weighting as a
kernel of its own, and the token dispatcher's local permutations (Megatron's ``alltoall`` sorts
the received rows by local expert; HybridEP permutes inside its kernels)."""

from __future__ import annotations

from typing import Any

import pytest

from netsim.calibration.catalogue import KERNELS
from netsim.config.workload import load_workload
from netsim.workload.costs import ModelCosts
from netsim.workload.kernel_calls import KernelCall

MOE: dict[str, Any] = {
    "layers": 1,
    "hidden": 1024,
    "ffn_hidden": 2048,
    "heads": 8,
    "vocab": 1024,
    "seq_len": 1024,
    "activation": "swiglu",
    "moe": {"experts": 8, "top_k": 2},
}


def _costs(*edits: str, slots: int = 2) -> ModelCosts:
    spec = load_workload({"model": MOE}, list(edits), source="t")
    return ModelCosts(spec.model, 1, 1, expert_slots_per_rank=slots, activation_fusion=spec.training.activation_fusion)


def _kernels(calls: list[KernelCall]) -> list[str]:
    return [c.kernel for c in calls]


def _bytes_per_element(kernel: str, pass_: str) -> float:
    """Bytes the catalogue counts per element of a ``[tokens, hidden]`` tensor in 16 bits."""
    shape = {"tokens": 1000.0, "hidden": 100.0}
    return KERNELS[kernel].nbytes(shape, pass_, "bf16") / 1e5


@pytest.mark.parametrize(
    ("kernel", "fwd", "bwd"),
    [
        ("swiglu", 6.0, 10.0),  # Megatron's fused kernel: read two, write one; back read three, write two
        ("swiglu_eager", 10.0, 26.0),  # silu, then the product; back: two products, silu's, the cat
        ("gelu_eager", 4.0, 6.0),
        ("prob_weight", 12.0, 34.0),  # through an fp32 product and its cast back
    ],
)
def test_the_activation_kernels_count_the_bytes_their_passes_move(kernel: str, fwd: float, bwd: float) -> None:
    assert _bytes_per_element(kernel, "fwd") == pytest.approx(fwd)
    assert _bytes_per_element(kernel, "bwd") == pytest.approx(bwd)


def test_a_fused_activation_weights_inside_and_an_eager_one_in_a_kernel_of_its_own() -> None:
    fused, eager = _costs(), _costs("training.activation_fusion=false")
    assert _kernels(fused.experts("F", 4096)).count("swiglu") == 1
    assert "prob_weight" not in _kernels(fused.experts("F", 4096))
    f = _kernels(eager.experts("F", 4096))
    assert f.index("swiglu_eager") + 1 == f.index("prob_weight")  # right after the activation
    assert _kernels(eager.experts("BW", 4096)).count("prob_weight") == 1
    assert "prob_weight" not in _kernels(eager.experts("W", 4096))  # no weights: nothing deferred
    # the moe_act recomputation re-runs both
    assert _kernels(eager.expert_act(4096)) == ["swiglu_eager", "prob_weight"]
    # a GELU model runs PyTorch's own GELU kernel when unfused
    gelu = load_workload({"model": {**MOE, "activation": "gelu"}}, ["training.activation_fusion=false"], source="t")
    g = ModelCosts(gelu.model, 1, 1, expert_slots_per_rank=1, activation_fusion=False)
    assert _kernels(g.experts("F", 4096))[1:3] == ["gelu_eager", "prob_weight"]
    assert _kernels(g.mlp("F")).count("gelu_eager") == 1


def test_the_weighting_stays_in_16_bits_in_an_fp8_model() -> None:
    c = _costs("model.dtype=fp8", "training.activation_fusion=false")
    (w,) = [x for x in c.experts("F", 4096) if x.kernel == "prob_weight"]
    assert w.no_fp8


def test_megatrons_alltoall_sorts_the_rows_of_several_local_experts() -> None:
    two = _kernels(_costs("model.moe.dispatcher=alltoall", slots=2).experts("F", 4096))
    assert two[0] == "permute" and two[-1] == "permute"  # sorted by expert, then back
    one = _kernels(_costs("model.moe.dispatcher=alltoall", slots=1).experts("F", 4096))
    assert "permute" not in one
    deepep = _kernels(_costs("model.moe.dispatcher=deepep", slots=2).experts("F", 4096))
    assert "permute" not in deepep
    (sort, *_, back) = _costs(slots=2).experts("BW", 4096)
    assert dict(sort.shape) == {"tokens": 4096.0, "hidden": 1024.0, "topk": 1.0}
    assert sort.kernel == back.kernel == "permute" and sort.pass_ == "bwd"


def test_hybridep_runs_no_permutation_kernel_around_its_all_to_alls() -> None:
    for part in ("F", "BW"):
        a2a, hybrid = _costs("model.moe.dispatcher=alltoall"), _costs("model.moe.dispatcher=hybridep")
        assert "permute" in _kernels(a2a.moe_pre(part)) and "unpermute" in _kernels(a2a.moe_post(part))
        assert "permute" not in _kernels(hybrid.moe_pre(part))
        assert "unpermute" not in _kernels(hybrid.moe_post(part))
        assert "router_linear" in _kernels(hybrid.moe_pre(part))  # the rest stays


def _residual_bytes(calls: list[KernelCall]) -> float:
    """Bytes the ``residual`` calls among ``calls`` move (each scaled to its bytes)."""
    res = KERNELS["residual"]
    return sum(c.scale * res.nbytes(dict(c.shape), "fwd", "bf16") for c in calls if c.kernel == "residual")


def test_an_fp32_router_adds_its_backward_casts_and_nothing_to_its_forward() -> None:
    bf16, fp32 = _costs(), _costs("model.moe.router_dtype=fp32")
    assert fp32.moe_pre("F") == bf16.moe_pre("F")
    assert fp32.moe_pre("W") == bf16.moe_pre("W")  # the router's backward is all in B
    tokens, hidden, experts = 1024, 1024, 8
    extra = 16.0 * tokens * hidden + 6.0 * experts * hidden  # RouterGatingLinearFunction.backward in fp32
    for part in ("B", "BW"):
        added = _residual_bytes(fp32.moe_pre(part)) - _residual_bytes(bf16.moe_pre(part))
        assert added == pytest.approx(extra)
        assert _kernels(fp32.moe_pre(part))[: len(bf16.moe_pre(part))] == _kernels(bf16.moe_pre(part))
    casts = fp32.moe_pre("BW")[len(bf16.moe_pre("BW")) :]
    assert {c.label for c in casts} == {"fp32 router cast"}  # the kernel tally names them so
    # a GrAP router (LocMoE) has no gating linear to run in fp32
    assert fp32.moe_pre("BW", "router_grap") == bf16.moe_pre("BW", "router_grap")


def test_an_unknown_router_dtype_names_the_field_and_the_allowed_values() -> None:
    from netsim.errors import SpecError

    with pytest.raises(SpecError, match=r"router_dtype.*fp32"):
        load_workload({"model": MOE}, ["model.moe.router_dtype=fp64"], source="t")
