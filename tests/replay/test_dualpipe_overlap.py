"""DualPipe's F&B pairs: each expert all-to-all of one chunk flies under the other chunk's compute.

DeepSeek-V3 (arXiv 2412.19437, section 3.2.1, Figure 4) splits a forward and a backward chunk
into attention, dispatch, MLP and combine and orders the pair's computation MLP(B), MLP(F),
ATTN(B), ATTN(F) while the communication runs DISPATCH(F), DISPATCH(B), COMBINE(F), COMBINE(B):
every compute op that needs an all-to-all's result comes, on the compute stream, right after a
compute op of the *other* chunk, which runs while the all-to-all is in flight.
"""

from __future__ import annotations

import itertools
from typing import Any

from netsim.config.workload import load_workload
from netsim.network.engine import Network
from netsim.replay import replay
from netsim.workload.graph import build_plan
from netsim.workload.plan import Op, StepPlan

from .helpers import FixedCompute, chain_topology

PP, M = 4, 8


class MoeCompute(FixedCompute):
    """Attention: ``fwd_s`` forward, ``bwd_s`` backward per call; the experts' grouped GEMMs
    half of that each (two per expert FFN); the rest free."""

    def time(self, kernel: str, pass_: str = "fwd", *, dtype: str | None = None, **shape: float) -> float:
        t = self.fwd_s if pass_ == "fwd" else self.bwd_s
        return t if kernel == "attention" else t / 2 if kernel == "grouped_gemm" else 0.0


def _plan(capacity_Bps: float = 1e9) -> tuple[Any, StepPlan]:
    spec = load_workload(
        {
            "name": "dualpipe-moe",
            "model": {
                "layers": 8,
                "hidden": 256,
                "ffn_hidden": 512,
                "heads": 2,
                "vocab": 1000,
                "seq_len": 256,
                "dtype": "bf16",
                "moe": {"experts": 4, "top_k": 2, "every_n": 1, "capacity_factor": None},
            },
            "parallelism": {"pp": PP, "tp": 1, "ep": 2, "zero_stage": 0},
            "micro_batch_size": 1,
            "num_microbatches": M,
            "schedule": {"name": "dualpipe"},
            "storage": {"enabled": False},
        },
        source="test",
    )
    graph = chain_topology(2 * PP, capacity_Bps)
    return graph, build_plan(spec, graph, MoeCompute(1.0, 2.0))


def _paired(plan: StepPlan) -> set[tuple[int, str, int]]:
    """(stage, F or B, micro-batch) of every action run inside an overlapped F&B pair."""
    assert plan.schedule is not None
    out = set()
    for p in range(PP):
        for unit in plan.schedule.work(p):
            if len(unit.actions) == 2:
                out |= {(p, "F" if a.kind == "F" else "B", a.microbatch) for a in unit.actions}
    return out


def _phase(op: Op) -> str:
    return "F" if op.name.startswith(("F.", "ep.fwd")) else "B"


def test_every_all_to_all_in_a_pair_has_the_other_chunks_compute_behind_it() -> None:
    _, plan = _plan()
    assert plan.layout is not None
    paired = _paired(plan)
    ep = {o.id for o in plan.ops if o.stream.startswith("ep.")}
    waits, exposed = 0, []
    for rank in sorted({o.rank for o in plan.ops}):
        stage = plan.layout.coords(rank)[0]
        compute = sorted((o for o in plan.ops if o.rank == rank and o.kind == "compute"), key=lambda o: o.issue)
        for prev, op in itertools.pairwise(compute):
            if not ep.intersection(op.deps) or (stage, _phase(op), op.microbatch) not in paired:
                continue
            waits += 1
            if (_phase(prev), prev.microbatch) == (_phase(op), op.microbatch):
                exposed.append((rank, prev.name, op.name, op.microbatch))
    assert waits > 0
    assert exposed == [], f"all-to-alls with nothing of the other chunk behind them: {exposed[:4]}"


def test_paired_all_to_alls_run_under_the_other_chunks_compute() -> None:
    # experts and attention 1 s / 2 s; an all-to-all of 2 x 256 x 256 x 2 B at 2e5 B/s takes
    # about 1.3 s: inside a pair it overlaps the other chunk's compute for most of its time
    graph, plan = _plan(capacity_Bps=2e5)
    assert plan.layout is not None
    res = replay(plan, Network(graph, routing="shortest"))
    paired = _paired(plan)
    busy: dict[int, list[tuple[float, float]]] = {}
    for o in plan.ops:
        if o.kind == "compute":
            busy.setdefault(o.rank, []).append((res.op_start[o.id], res.op_end[o.id]))
    covered = total = 0.0
    for o in plan.ops:
        if not o.stream.startswith("ep.") or (plan.layout.coords(o.rank)[0], _phase(o), o.microbatch) not in paired:
            continue
        a, b = res.op_start[o.id], res.op_end[o.id]
        total += b - a
        covered += sum(max(0.0, min(b, e) - max(a, s)) for s, e in busy[o.rank])
    assert total > 0
    assert covered / total > 0.8
