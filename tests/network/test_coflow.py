"""Coflows (:meth:`Network.transfer_coflow`, the ``coflow`` collective model), worked on paper.

A coflow drains when its most loaded link (relative to its capacity) has drained; against other
traffic it weighs as many fair shares as it has transfers on that link; its transfers are listed
as ordinary flows (bytes, ends), the carrier is not.
"""

from __future__ import annotations

import numpy as np
import pytest

from netsim.collectives import accelerators, run_collective, simulate_collective
from netsim.collectives.executor import result_of
from netsim.network import Network
from netsim.network.coflows import CoflowLedger
from netsim.topology import load_topology
from tests.network.graphs import star

GB = 1e9


def _ids(net: Network, names: list[str]) -> np.ndarray:
    return np.array([net.links.index[n] for n in names], dtype=np.int64)


def test_coflow_alone_drains_at_its_bottleneck_and_lists_its_transfers() -> None:
    net = Network(star(4, bw=GB, lat=1e-6))
    # h0 -> h3 (1 GB), h1 -> h3 (2 GB), h2 -> h1 (0.5 GB): sw->h3 carries 3 GB, the bottleneck
    ev = net.transfer_coflow(
        _ids(net, ["h0", "h1", "h2"]),
        _ids(net, ["h3", "h3", "h1"]),
        np.array([1.0, 2.0, 0.5]) * GB,
        traffic_class="ep",
        label="a2a",
    )
    net.run()
    assert ev.triggered
    flows = net.flow_records()
    assert net.num_flows == 3 and len(flows) == 3
    assert flows["bytes"].tolist() == [1 * GB, 2 * GB, 0.5 * GB]
    assert set(flows["traffic_class"]) == {"ep"}
    # every transfer is delivered at the drain (3 s) plus its own path latency (2 links x 1 us)
    assert flows["end_s"].tolist() == pytest.approx([3.0 + 2e-6] * 3, rel=1e-12)
    assert net.makespan_s == pytest.approx(3.0 + 2e-6, rel=1e-12)
    links = net.link_records().set_index("link")
    # each link carries exactly its transfers' bytes
    assert links.loc["sw->h3", "bytes"] == pytest.approx(3 * GB)
    assert links.loc["h2->sw", "bytes"] == pytest.approx(0.5 * GB)
    assert links["bytes"].sum() == pytest.approx(2 * 3.5 * GB)


def test_coflow_weighs_its_transfers_on_the_bottleneck_as_fair_shares() -> None:
    # a coflow of 3 transfers into h3 and one ordinary flow into h3: per-flow max-min fairness on
    # sw->h3 gives the coflow 3/4 of the link and the flow 1/4 while both are active
    net = Network(star(5, bw=GB, lat=0.0))
    net.transfer_coflow(_ids(net, ["h0", "h1", "h2"]), _ids(net, ["h3", "h3", "h3"]), GB)
    fid = net.submit("h4", "h3", GB)
    net.run()
    ends = net.flow_end_s()
    # 4 GB through a 1 GB/s link: all done at 4 s; the coflow (3 GB at 0.75 GB/s) also at 4 s
    assert ends[fid] == pytest.approx(4.0)
    flows = net.flow_records()
    # the ordinary flow first, then the coflow's transfers, numbered after the last flow id
    assert flows["flow_id"].tolist() == [fid, fid + 1, fid + 2, fid + 3]
    assert flows["end_s"].tolist() == pytest.approx([4.0] * 4)
    # with exact flows the four share equally and also end at 4 s
    ref = Network(star(5, bw=GB, lat=0.0))
    ref.submit_many(["h0", "h1", "h2", "h4"], ["h3"] * 4, GB)
    ref.run()
    assert ref.flow_end_s() == pytest.approx([4.0] * 4)


def test_coflow_runs_no_faster_than_its_most_capped_transfer() -> None:
    # the links allow 1 GB/s into h3, but h0 -> h3 (1 GB) is capped at 0.25 GB/s: moving
    # uniformly, the coflow drains when that transfer has, at 4 s (uncapped: 1 s)
    net = Network(star(4, bw=GB, lat=0.0))
    src, dst = _ids(net, ["h0", "h1"]), _ids(net, ["h3", "h2"])
    net.transfer_coflow(src, dst, np.array([1.0, 0.5]) * GB, rate_cap_Bps=np.array([0.25, 10.0]) * GB)
    net.run()
    assert net.makespan_s == pytest.approx(4.0)
    # a cap above what the links allow changes nothing
    ref = Network(star(4, bw=GB, lat=0.0))
    ref.transfer_coflow(src, dst, np.array([1.0, 0.5]) * GB, rate_cap_Bps=np.array([5.0, 5.0]) * GB)
    ref.run()
    assert ref.makespan_s == pytest.approx(1.0)


def test_coflow_of_same_device_transfers_arrives_at_once() -> None:
    net = Network(star(2))
    ev = net.transfer_coflow(_ids(net, ["h0", "h1"]), _ids(net, ["h0", "h1"]), GB)
    net.run()
    assert ev.triggered and net.makespan_s == 0.0


@pytest.mark.parametrize("nodes", [2, 4])
def test_uniform_alltoall_coflow_matches_exact(nodes: int) -> None:
    g = load_topology("dgx-h100", nodes=nodes)
    devs = accelerators(g)
    size = 64 * 2**20 * len(devs)
    exact = simulate_collective(g, "all_to_all", devs, size)
    coflow = simulate_collective(g, "all_to_all", devs, size, model="coflow")
    assert coflow == pytest.approx(exact, rel=1e-6)


def test_skewed_alltoallv_coflow_is_close_to_exact_and_never_above_it() -> None:
    g = load_topology("dgx-h100", nodes=2)
    devs = accelerators(g)
    n = len(devs)
    m = np.random.default_rng(1).gamma(0.5, 2.0, size=(n, n)) * 2**20
    np.fill_diagonal(m, 0.0)
    exact = simulate_collective(g, "all_to_allv", devs, float(m.sum()), matrix=m)
    coflow = simulate_collective(g, "all_to_allv", devs, float(m.sum()), matrix=m, model="coflow")
    # the coflow is the bottleneck bound: exact max-min can only be slower, here by < 5%
    assert coflow <= exact * (1 + 1e-9)
    assert coflow >= 0.95 * exact


def test_coflow_model_leaves_rings_to_the_stream_plan() -> None:
    g = load_topology("dgx-h100", nodes=2)
    devs = accelerators(g)
    stream = simulate_collective(g, "all_reduce", devs, 2**28, model="stream", step_latency_s=2e-6)
    coflow = simulate_collective(g, "all_reduce", devs, 2**28, model="coflow", step_latency_s=2e-6)
    assert coflow == stream


def test_coflow_collective_records_one_flow_per_transfer() -> None:
    g = load_topology("dgx-h100", nodes=2)
    devs = accelerators(g)
    net = Network(g)
    proc = run_collective(net, "all_to_all", devs, 16 * 2**20 * len(devs), model="coflow", traffic_class="ep")
    net.run()
    res = result_of(proc)
    n = len(devs)
    assert res.num_transfers == n * (n - 1)
    flows = net.flow_records()
    assert len(flows) == n * (n - 1) and (flows["traffic_class"] == "ep").all()
    assert flows["bytes"].sum() == pytest.approx(16 * 2**20 * n * (n - 1))
    assert flows["end_s"].max() == pytest.approx(res.end_s)


def test_repeated_coflow_keeps_its_routes() -> None:
    g = load_topology("dgx-h100", nodes=4)
    net = Network(g, routing="ecmp", seed=3)
    devs = accelerators(g)
    ids = np.array([net.links.index[d] for d in devs], dtype=np.int64)
    src, dst = np.repeat(ids, ids.size), np.tile(ids, ids.size)
    keep = src != dst
    net.transfer_coflow(src[keep], dst[keep], 2**20)
    net.run()
    once = net.link_records()["bytes"].to_numpy().copy()
    net.transfer_coflow(src[keep], dst[keep], 2**20)
    net.run()
    # the second coflow took exactly the paths of the first: every link carried its bytes twice
    assert np.allclose(net.link_records()["bytes"].to_numpy(), 2 * once)
    flows = net.flow_records()
    assert flows["hops"].to_numpy()[: keep.sum()].tolist() == flows["hops"].to_numpy()[keep.sum() :].tolist()


def test_direct_alltoallv_shortcut_matches_the_plan_path() -> None:
    from netsim.collectives import build_plan
    from netsim.collectives.executor import execute_plan

    g = load_topology("dgx-h100", nodes=2)
    devs = accelerators(g)
    n = len(devs)
    m = np.random.default_rng(4).gamma(0.5, 2.0, size=(n, n)) * 2**20
    m[0, :] = 0.0  # a silent rank
    times, flows = [], []
    for shortcut in (True, False):
        net = Network(g)
        if shortcut:
            proc = run_collective(net, "all_to_allv", devs, 0.0, matrix=m, model="coflow", step_latency_s=3e-6)
        else:
            plan = build_plan("all_to_allv", devs, 0.0, matrix=m, graph=g, stream=True)
            proc = execute_plan(net, plan, step_latency_s=3e-6, coflow=True)
        net.run()
        times.append(result_of(proc).time_s)
        flows.append(net.flow_records()[["src", "dst", "bytes", "end_s"]])
    assert times[0] == times[1]
    assert flows[0].equals(flows[1])


def test_coflow_route_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    g = load_topology("dgx-h100", nodes=2)
    net = Network(g)
    monkeypatch.setattr(CoflowLedger, "CACHE_ENTRIES", 50)
    ids = np.array([net.links.index[d] for d in accelerators(g)], dtype=np.int64)
    for k in range(1, 6):  # five different pair sets
        net.transfer_coflow(ids[: k + 1], np.roll(ids[: k + 1], 1), 2**20)
        net.run()
    ledger = net.coflows
    assert len(ledger.routes) >= 1
    assert ledger.cached_entries == sum(r.link.size for r, _ in ledger.routes.values())
    assert ledger.cached_entries <= 50 or len(ledger.routes) == 1


def test_flow_columns_sum_coflows_over_their_pairs() -> None:
    net = Network(star(4, bw=GB, lat=1e-6))
    src, dst = _ids(net, ["h0", "h1", "h2"]), _ids(net, ["h3", "h3", "h1"])
    for k in range(3):  # the same pairs three times (one pair set), once as another class
        net.transfer_coflow(src, dst, np.array([1.0, 2.0, 0.5]) * GB * (k + 1), traffic_class="ep" if k < 2 else "dp")
    net.submit("h0", "h1", GB, traffic_class="pp")
    net.run()
    cols = net.flow_columns()
    flows = net.flow_records()
    keep = cols["keep"]
    assert int(cols["count"][keep].sum()) == net.num_flows == len(flows) == 10
    names = cols["class_names"]
    for cls in ("ep", "dp", "pp"):
        sel = keep & (cols["traffic_class"] == names.index(cls))
        assert cols["bytes"][sel].sum() == pytest.approx(flows.loc[flows["traffic_class"] == cls, "bytes"].sum())
    # the ep coflows share rows: one per pair, standing for two flows each
    ep = keep & (cols["traffic_class"] == names.index("ep"))
    assert ep.sum() == 3 and set(cols["count"][ep]) == {2}
    assert len(net.coflows.pair_sets) == 1
