"""A digest of a step plan: every op and collective field that decides a replay, so a test can
pin a plan "byte for byte" across a change that must not alter it."""

from __future__ import annotations

import hashlib

from netsim.workload.graph import StepPlan


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
