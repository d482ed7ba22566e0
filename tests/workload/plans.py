"""Small step plans for byte-for-byte tests: a compute model whose times follow each kernel's
shape, a two-server plan builder, and a digest of every op and collective field that decides a
replay, so a test can pin a plan across a change that must not alter it."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from netsim.config.workload import load_workload
from netsim.topology import load_topology
from netsim.workload.graph import StepPlan, build_plan

#: a small DeepSeek-style model's MLA and MoE sections (latent attention, 16 experts with one
#: shared, DeepEP dispatch, the first layer dense)
MLA_MOE: dict[str, Any] = {
    "mla": {"q_lora_rank": 64, "kv_lora_rank": 32, "qk_nope_head_dim": 32, "qk_rope_head_dim": 16, "v_head_dim": 32},
    "moe": {
        "experts": 16,
        "top_k": 2,
        "first_dense": 1,
        "shared_experts": 1,
        "expert_ffn_hidden": 128,
        "dispatcher": "deepep",
    },
}


class ShapeCompute:
    """Every kernel takes time from its shape; backward x2, FP8 x0.5 (so any change of shape,
    pass or dtype moves a digest)."""

    name = "shape"

    def time(self, kernel: str, pass_: str = "fwd", *, dtype: str | None = None, **shape: float) -> float:
        fp8 = 0.5 if dtype in ("fp8", "float8") else 1.0
        return 1e-9 * (len(kernel) + sum(shape.values())) * (2.0 if pass_ == "bwd" else 1.0) * fp8


def small_plan(model: Mapping[str, Any], parallelism: Mapping[str, Any], schedule: str, *sets: str) -> StepPlan:
    """``model`` with ``parallelism`` on two dgx-h100 servers, 4 micro-batches, 1 MB gradient
    buckets, ``sets`` applied (empty ones skipped), timed by :class:`ShapeCompute`."""
    spec = load_workload(
        {
            "model": dict(model),
            "parallelism": dict(parallelism),
            "num_microbatches": 4,
            "schedule": {"name": schedule},
            "grad_bucket_bytes": "1MB",
        },
        [s for s in sets if s],
        source="t",
    )
    return build_plan(spec, load_topology("dgx-h100", nodes=2), ShapeCompute())


def plan_digest(plan: StepPlan, *, memory: bool = False) -> str:
    """SHA-256 over the ops (id, rank, kind, stream, name, deps, issue order, duration and the
    collective's key, op, ranks, bytes, class and endpoints); ``memory``: the memory tally too."""
    h = hashlib.sha256()
    for o in plan.ops:
        c = o.coll
        coll = None if c is None else (c.key, c.op, c.ranks, c.nbytes, c.traffic_class, c.src, c.dst)
        h.update(repr((o.id, o.rank, o.kind, o.stream, o.name, tuple(o.deps), o.issue, o.duration_s, coll)).encode())
    if memory:
        h.update(repr(plan.memory.summary()).encode())
    return h.hexdigest()
