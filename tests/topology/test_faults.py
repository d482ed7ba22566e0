"""Degraded links and slow accelerators (netsim.topology.faults): where they are marked, what the
flow engine and the step builder make of them (hand-checked ratios), the run summary's line, and
one-line errors for patterns that match nothing or the wrong device."""

from __future__ import annotations

import pytest

from netsim.collectives.executor import accelerators
from netsim.collectives.nccl_tests import iter_sweep
from netsim.collectives.setup import collective_setup, default_routing
from netsim.config.workload import load_workload
from netsim.errors import SpecError, TopologyError, WorkloadError
from netsim.network.links import LinkTable
from netsim.topology import load_topology
from netsim.topology.faults import degraded_links, device_speeds, fault_summary
from netsim.workload.graph import build_plan

from ..workload.plans import ShapeCompute

HALF_NIC = "degraded_links=[{a: n0.nic3, b: 'r*', bandwidth: 0.5}]"
SLOW_GPU = "slow_devices=[{device: n1.g5, speed: 0.8}]"


def test_degraded_link_is_marked_both_ways_and_halves_its_capacity_only() -> None:
    g = load_topology("dgx-h100", nodes=2, overrides=(HALF_NIC,))
    marked = degraded_links(g)
    assert sorted((u, v) for u, v, _ in marked) == [("n0.nic3", "r3.leaf0"), ("r3.leaf0", "n0.nic3")]
    assert {f for *_, f in marked} == {0.5}
    base, lt = LinkTable.from_graph(load_topology("dgx-h100", nodes=2)), LinkTable.from_graph(g)
    k = lt.edge_id[(lt.index["n0.nic3"], lt.index["r3.leaf0"])]
    assert lt.capacity_Bps[k] == pytest.approx(base.capacity_Bps[k] / 2)
    assert lt.nominal_Bps[k] == base.nominal_Bps[k]  # routing and records keep the nominal rate
    back = lt.edge_id[(lt.index["r3.leaf0"], lt.index["n0.nic3"])]
    others = [i for i in range(lt.num_links) if i not in (k, back)]
    assert lt.capacity_Bps[back] == pytest.approx(base.capacity_Bps[back] / 2)
    assert (lt.capacity_Bps[others] == base.capacity_Bps[others]).all()


def _ring_all_gather_us(overrides: tuple[str, ...]) -> float:
    graph = load_topology("dgx-h100", nodes=2, overrides=overrides)
    setup = collective_setup(graph)
    row = next(
        iter_sweep(
            graph, "all_gather", accelerators(graph), [1 << 30], algo="ring", cost=setup.cost,
            routing=default_routing(graph),
        )
    )  # fmt: skip
    return row.time_s * 1e6


def test_one_slow_nic_port_doubles_a_bandwidth_bound_ring() -> None:
    # NCCL's rings split the bytes evenly over their channels, one per NIC across the servers:
    # the channel through the half-rate port takes twice as long, and the call waits for it
    base, slow = _ring_all_gather_us(()), _ring_all_gather_us((HALF_NIC,))
    assert slow / base == pytest.approx(2.0, rel=0.1)


def _plan(overrides: tuple[str, ...], lockstep: bool = False):  # type: ignore[no-untyped-def]
    spec = load_workload(
        {
            "model": {"layers": 4, "hidden": 256, "ffn_hidden": 512, "heads": 8, "vocab": 1000, "seq_len": 128},
            "parallelism": {"pp": 2, "tp": 2, "zero_stage": 1},
            "num_microbatches": 4,
        },
        source="t",
    )
    graph = load_topology("dgx-h100", nodes=2, overrides=overrides)
    return build_plan(spec, graph, ShapeCompute(), lockstep=lockstep)


def test_slow_accelerator_stretches_only_its_ranks_compute() -> None:
    base, slow = _plan(()), _plan((SLOW_GPU,))
    ranks = [r for r, d in enumerate(slow.layout.devices) if d == "n1.g5"]
    assert len(ranks) == 1
    pairs = list(zip(base.ops, slow.ops, strict=True))
    for a, b in pairs:
        if a.kind != "compute":
            assert b.duration_s == a.duration_s
        elif a.rank in ranks:
            assert b.duration_s == pytest.approx(a.duration_s / 0.8)
        else:
            assert b.duration_s == a.duration_s
    assert device_speeds(load_topology("dgx-h100", nodes=2, overrides=(SLOW_GPU,))) == {"n1.g5": 0.8}


def test_fault_summary_names_what_runs_slow() -> None:
    g = load_topology("dgx-h100", nodes=2, overrides=(HALF_NIC, SLOW_GPU))
    f = fault_summary(g)
    assert f["degraded_links"] == [{"a": "n0.nic3", "b": "r3.leaf0", "bandwidth": 0.5}]
    assert f["slow_devices"] == {"n1.g5": 0.8}
    assert f["line"] == "faults: 1 link(s) degraded (n0.nic3-r3.leaf0 x0.5); 1 slow accelerator(s) (n1.g5 x0.8)"
    assert fault_summary(load_topology("dgx-h100", nodes=2)) == {}


@pytest.mark.parametrize(
    ("override", "words", "field"),
    [
        (
            "degraded_links=[{a: n9.nic1, bandwidth: 0.5}]",
            "no link between devices matching 'n9.nic1'",
            "degraded_links[0]",
        ),
        ("slow_devices=[{device: n1.gpu5, speed: 0.8}]", "no device matches 'n1.gpu5'", "slow_devices[0].device"),
        ("slow_devices=[{device: n1.nic1, speed: 0.8}]", "not an accelerator", "slow_devices[0].device"),
        ("degraded_links=[{a: n1.nic1, bandwidth: 1.5}]", "must be <= 1", "degraded_links"),
    ],
)
def test_bad_faults_are_one_line_errors(override: str, words: str, field: str) -> None:
    with pytest.raises((SpecError, TopologyError)) as info:
        load_topology("dgx-h100", nodes=2, overrides=(override,))
    msg = str(info.value)
    assert words in msg and field in msg and "\n" not in msg


def test_slow_accelerator_refuses_lockstep() -> None:
    with pytest.raises(WorkloadError, match="drop --lockstep") as info:
        _plan((SLOW_GPU,), lockstep=True)
    assert "\n" not in str(info.value)
