"""The group-wise all-to-all (LocMoE, arXiv 2401.13920): 1/g over the network, then an
all-gather inside each server (issue 18 item 11)."""

from __future__ import annotations

import numpy as np
import pytest

from netsim.collectives import build_plan
from netsim.collectives.executor import simulate_collective
from netsim.collectives.plan import CollectiveError
from netsim.topology import load_topology

DEVS = ["n0.g0", "n0.g1", "n1.g0", "n1.g1"]  # 2 servers x 2: groups of g = 2


def test_plan_by_hand() -> None:
    # the replicated all-to-all of two TP groups: (server a, member t) sends (b, t)
    m = np.zeros((4, 4))
    m[0, 2] = m[1, 3] = 8.0  # server 0 -> server 1, each member its copy
    m[2, 0] = m[3, 1] = 4.0
    m[0, 0] = 5.0  # stays on the rank
    plan = build_plan("all_to_allv", DEVS, 0, algo="groupwise", matrix=m)
    got = sorted((t.step, t.src, t.dst, t.nbytes) for t in plan.transfers)
    assert got == [
        (0, "n0.g0", "n1.g0", 4.0),
        (0, "n0.g1", "n1.g1", 4.0),  # half of each copy crosses
        (0, "n1.g0", "n0.g0", 2.0),
        (0, "n1.g1", "n0.g1", 2.0),
        (1, "n0.g0", "n0.g1", 2.0),
        (1, "n0.g1", "n0.g0", 2.0),  # the all-gather inside each server
        (1, "n1.g0", "n1.g1", 4.0),
        (1, "n1.g1", "n1.g0", 4.0),
    ]
    by = {(t.src, t.dst, t.step): t for t in plan.transfers}
    gather = by[("n1.g0", "n1.g1", 1)]
    assert set(gather.deps) == {by[("n0.g0", "n1.g0", 0)].id}  # forwards what it received, once it has it


def test_faster_than_direct_when_the_server_links_are_fast() -> None:
    # 2 DGX H100 (NVLink 450 GB/s per GPU, one 400G NIC per GPU): 1/8 over the network, 7/8 over NVLink
    graph = load_topology("dgx-h100", nodes=2)
    devs = [f"n{k}.g{i}" for k in range(2) for i in range(8)]
    t = {a: simulate_collective(graph, "all_to_all", devs, 256 * 2**20, algo=a) for a in ("direct", "groupwise")}
    assert t["groupwise"] < 0.35 * t["direct"]
    # bytes: the direct all-to-all sends every cross-server pair its share; group-wise an eighth of it
    plan = {a: build_plan("all_to_all", devs, 256 * 2**20, algo=a, graph=graph) for a in ("direct", "groupwise")}
    cross = {a: sum(x.nbytes for x in p.transfers if x.src[1] != x.dst[1]) for a, p in plan.items()}
    assert cross["groupwise"] == pytest.approx(cross["direct"] / 8)


def test_needs_equal_servers() -> None:
    with pytest.raises(CollectiveError, match=r"groupwise.*same number of devices on every server"):
        build_plan("all_to_all", ["n0.g0", "n0.g1", "n1.g0"], 1e6, algo="groupwise")
