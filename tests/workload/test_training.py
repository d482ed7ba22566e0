"""What real training runs do, in the plan: recomputation, the distributed optimizer's bytes,
gradient accumulation with overlapped reduction, the optimizer step time."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from netsim.config.workload import load_workload
from netsim.topology import load_topology
from netsim.workload.graph import StepPlan, build_plan

from ..replay.helpers import FixedCompute


def _plan(compute: Any = None, **sets: Any) -> StepPlan:
    graph = load_topology("dgx-h100", nodes=2)
    spec = load_workload(
        {
            "model": {
                "layers": 2,
                "hidden": 256,
                "ffn_hidden": 512,
                "heads": 4,
                "vocab": 1000,
                "seq_len": 128,
                "moe": {"experts": 16, "top_k": 2, "every_n": 2},
            },
            "parallelism": {"pp": 2, "tp": 2, "ep": 8, "zero_stage": 1},
            "num_microbatches": 4,
            "grad_bucket_bytes": "1MB",
        },
        [f"{k}={v}" for k, v in sets.items()],
        source="t",
    )
    return build_plan(spec, graph, compute or FixedCompute(1e-3, 2e-3))


def test_selective_recompute_reruns_the_attention_core_before_its_backward() -> None:
    plan = _plan(**{"training.recompute": "selective"})
    m = plan.schedule.m
    for rank in range(plan.layout.world):
        ops = plan.ops_of_rank(rank)
        rc = [o for o in ops if o.name == "R.attn-core"]
        assert len(rc) == m  # one layer per stage, every micro-batch's backward
        assert all(o.duration_s == pytest.approx(1e-3) for o in rc)  # the attention kernel's forward
        by_id = {o.id: o for o in ops}
        for o in ops:
            if o.name == "BW.attn":  # waits for the recomputation of its micro-batch
                assert any(
                    by_id[d].name == "R.attn-core" and by_id[d].microbatch == o.microbatch for d in o.deps if d in by_id
                )
    assert Counter(o.name for o in _plan().ops)["R.attn-core"] == 0


def test_full_recompute_repeats_the_forward_and_its_collectives() -> None:
    none, full = _plan(), _plan(**{"training.recompute": "full"})
    n_none, n_full = Counter(o.name for o in none.ops), Counter(o.name for o in full.ops)
    for part in ("attn", "mlp", "router", "experts", "unpermute"):
        assert n_full[f"R.{part}"] == n_none[f"F.{part}"] > 0, part
    phases = Counter(c.phase for c in full.collectives.values())
    for phase in ("fwd-dispatch", "fwd-combine", "fwd-attn-ag", "fwd-attn-rs", "fwd-mlp-ag", "fwd-mlp-rs"):
        assert phases[f"rcp-{phase}"] == phases[phase] > 0, phase
    # the recomputed dispatch sends the forward's tokens again: EP bytes grow by the forward's share
    fwd = sum(
        c.nbytes + c.local_bytes
        for c in none.collectives.values()
        if c.traffic_class == "ep" and c.phase.startswith("fwd-") and not c.phase.endswith("-meta")
    )
    total = lambda p: sum(p.ep_bytes.values())  # noqa: E731
    assert total(full) == pytest.approx(total(none) + fwd, rel=1e-12)


@pytest.mark.parametrize(("grad", "param", "g_bytes", "p_bytes"), [("fp32", None, 4, 2), ("bf16", "fp32", 2, 4)])
def test_distributed_optimizer_bytes_follow_the_dtypes(
    grad: str, param: str | None, g_bytes: int, p_bytes: int
) -> None:
    sets: dict[str, Any] = {"optimizer.grad_dtype": grad, "parallelism.ep": 4}
    if param is not None:
        sets["optimizer.param_dtype"] = param
    plan = _plan(**sets)
    for rank in (0, plan.layout.world - 1):
        ops = [o for o in plan.ops if o.rank == rank and o.coll is not None and o.traffic_class == "dp"]
        rs = sum(o.coll.nbytes for o in ops if o.name == "dp.grad-reduce-scatter")
        ag = sum(o.coll.nbytes for o in ops if o.name == "dp.param-all-gather")
        assert rs == pytest.approx(plan.params_per_rank[rank] * g_bytes)
        assert ag == pytest.approx(plan.params_per_rank[rank] * p_bytes)


def test_grad_bytes_per_element_is_the_deprecated_spelling_of_grad_dtype() -> None:
    spec = load_workload(
        {
            "model": {"layers": 1, "hidden": 8, "ffn_hidden": 8, "heads": 1, "vocab": 8, "seq_len": 8},
            "grad_bytes_per_element": 2,
        },
        source="t",
    )
    assert spec.optimizer.grad_dtype == "bf16" and spec.grad_bytes_per_element == 2


def test_only_the_last_microbatch_starts_gradient_reductions() -> None:
    plan = _plan()
    m = plan.schedule.m
    by_id = {o.id: o for o in plan.ops}
    for o in plan.ops:
        if o.name != "dp.grad-reduce-scatter":
            continue
        # the op whose end makes the bucket's gradients final: the last micro-batch's backward
        mbs = {by_id[d].microbatch for d in o.deps if by_id[d].rank == o.rank}
        assert mbs == {m - 1}, (o.rank, mbs)  # accumulation over micro-batches 0..m-2 happens in place


class _HbmTime(FixedCompute):
    """Attention as FixedCompute; the adamw kernel moves 28 bytes per parameter at 1 TB/s."""

    def time(self, kernel: str, pass_: str = "fwd", *, dtype: str | None = None, **shape: float) -> float:
        if kernel == "adamw":
            return shape["params"] * 28 / 1e12
        return super().time(kernel, pass_, dtype=dtype, **shape)


def test_optimizer_step_is_the_bytes_adam_moves_over_hbm_bandwidth() -> None:
    plan = _plan(_HbmTime(1e-3, 2e-3))
    for rank in (0, plan.layout.world - 1):
        (opt,) = [o for o in plan.ops_of_rank(rank) if o.name == "optimizer"]
        dense, expert = (
            plan.params_per_rank[rank] - plan.expert_params_per_rank[rank],
            plan.expert_params_per_rank[rank],
        )
        L = plan.layout
        shard = dense / L.dp + expert / (L.stage_size // L.ep)  # ZeRO 1: the rank's 1/dp share
        assert opt.duration_s == pytest.approx(shard * 30 / 1e12, rel=1e-12)  # bf16 weights, fp32 grads
        assert opt.stream == "compute"


def test_bad_optimizer_dtypes_are_one_line_errors() -> None:
    from netsim.errors import SpecError

    model = {"layers": 1, "hidden": 8, "ffn_hidden": 8, "heads": 1, "vocab": 8, "seq_len": 8}
    bad = r"optimizer\.grad_dtype: must be one of 'fp32', 'bf16' or 'fp16' \(got 'fp64'\)"
    with pytest.raises(SpecError, match=bad) as err:
        load_workload({"model": model}, ["optimizer.grad_dtype=fp64"], source="x")
    assert "\n" not in str(err.value)
    with pytest.raises(SpecError, match=r"grad_bytes_per_element \(deprecated\) must be 4 or 2 \(got 3\)"):
        load_workload({"model": model, "grad_bytes_per_element": 3}, source="x")
