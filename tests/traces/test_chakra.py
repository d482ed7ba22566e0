"""Chakra JSON traces: parsing, validation, replay through the run's replay (exact small cases), CLI."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import networkx as nx
import pandas as pd
import pytest

from netsim.collectives.setup import collective_setup
from netsim.errors import NetsimError, TraceError
from netsim.report import write_report
from netsim.run import RunOutcome
from netsim.traces.chakra import load_chakra, load_chakra_rank
from netsim.traces.chakra_plan import default_devices, replay_chakra
from tests.cli_run import run_cli

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "traces" / "chakra4"


def star(n: int, bw_Bps: float = 1e9) -> nx.DiGraph:
    """n accelerators h0..h{n-1} on one switch; every link bw_Bps, zero latency."""
    g = nx.DiGraph(name="star")
    g.add_node("sw", kind="switch", node=-1, index=-1, network="backend", latency_s=0.0)
    for i in range(n):
        g.add_node(f"h{i}", kind="accelerator", node=i, index=0, network="backend", latency_s=0.0)
        for a, b in ((f"h{i}", "sw"), ("sw", f"h{i}")):
            g.add_edge(a, b, capacity_Bps=bw_Bps, latency_s=0.0, link_class="ib", network="backend", tier="t")
    return g


def replay(d: Path | str, g: nx.DiGraph, out: Path, **kw: Any) -> RunOutcome:
    """Replay on ``g`` with the ideal (wire-bound) collective cost model, no report."""
    return replay_chakra(d, g, out, setup=collective_setup(g, cost_model="ideal"), report=None, **kw)


def by_node(o: RunOutcome) -> pd.DataFrame:
    return o.tables["trace_nodes"].set_index(["rank", "node_id"])


def comp(i: int, us: float, deps: list[int] | None = None, name: str = "") -> dict[str, Any]:
    return {"id": i, "name": name or f"c{i}", "type": "COMP_NODE", "duration_micros": us, "data_deps": deps or []}


def coll(i: int, ct: str, size: float, deps: list[int] | None = None, pg: str | None = None) -> dict[str, Any]:
    attrs: dict[str, Any] = {"comm_type": ct, "comm_size": size}
    if pg:
        attrs["pg_name"] = pg
    return {"id": i, "name": f"{ct.lower()}{i}", "type": "COMM_COLL_NODE", "data_deps": deps or [], "attrs": attrs}


def send(i: int, dst: int, size: float, deps: list[int] | None = None) -> dict[str, Any]:
    return {"id": i, "type": "COMM_SEND", "data_deps": deps or [], "attrs": {"comm_dst": dst, "comm_size": size}}


def recv(i: int, src: int, size: float, deps: list[int] | None = None) -> dict[str, Any]:
    return {"id": i, "type": "COMM_RECV", "data_deps": deps or [], "attrs": {"comm_src": src, "comm_size": size}}


def write(tmp: Path, ranks: list[list[dict[str, Any]]], **extra: Any) -> Path:
    d = tmp / "trace"
    d.mkdir(exist_ok=True)
    for r, nodes in enumerate(ranks):
        (d / f"rank{r}.json").write_text(json.dumps({"nodes": nodes, **extra}))
    return d


# ------------------------------------------------------------------ parsing


def test_fixture_parses_all_spellings() -> None:
    tr = load_chakra(FIX)
    assert tr.num_ranks == 4
    assert tr.process_groups == {
        "ep_s0": (0, 1),
        "dp_s0": (0, 1),
        "ep_s1": (2, 3),
        "dp_s1": (2, 3),
        "<world>": (0, 1, 2, 3),
    }
    r0, r1, r2 = tr.ranks[0], tr.ranks[1], tr.ranks[2]
    # long names, short names and protobuf enum numbers + attribute lists give the same nodes
    assert [r0.nodes[i].type for i in (1, 2, 5, 6)] == [
        "COMP_NODE",
        "COMM_COLL_NODE",
        "COMM_SEND_NODE",
        "COMM_RECV_NODE",
    ]
    assert [r1.nodes[i].type for i in (1, 2, 5, 6)] == [r0.nodes[i].type for i in (1, 2, 5, 6)]
    n = r2.nodes[3]
    assert (n.type, n.comm_type, n.comm_size, n.pg_name) == ("COMM_COLL_NODE", "ALL_TO_ALL", 2097152.0, "ep_s1")
    assert r2.nodes[1].comm_src == 0 and r2.nodes[1].comm_size == 1048576.0
    assert r0.nodes[1].duration_s == pytest.approx(200e-6)
    assert r0.nodes[12].comm_type == "BARRIER" and r0.nodes[12].comm_size == 4.0
    assert r0.nodes[6].deps == (5,)


def test_ctrl_deps_are_not_dependencies(tmp_path: Path) -> None:
    # as Chakra's feeder: ctrl_deps name the calling op (which may not even be in the trace)
    p = tmp_path / "rank0.json"
    p.write_text(json.dumps({"nodes": [comp(1, 5), {**comp(2, 5), "ctrl_deps": [1, 99]}]}))
    assert load_chakra_rank(p).nodes[2].deps == ()


def test_missing_duration_is_zero(tmp_path: Path) -> None:
    # proto3: a field at its default is not written, so a missing duration_micros is 0
    p = tmp_path / "rank0.json"
    p.write_text('{"nodes": [{"id": 1, "type": "COMP"}]}')
    assert load_chakra_rank(p).nodes[1].duration_s == 0.0


def test_topological_order_respects_dependencies() -> None:
    rt = load_chakra_rank(FIX / "rank2.json")
    pos = {nid: i for i, nid in enumerate(rt.order)}
    for n in rt.nodes.values():
        assert all(pos[d] < pos[n.id] for d in n.deps)


BAD_RANK_FILES = [
    ('{"nodes": [{"id": 1, "type": "GPU_NODE", "duration_micros": 1}]}', "node 1.type: unknown node type 'GPU_NODE'"),
    ('{"nodes": [{"type": "COMP", "duration_micros": 1}]}', "nodes[0].id: node has no id"),
    ('{"nodes": [{"id": -1, "type": "COMP", "duration_micros": 1}]}', "nodes[0].id: must be >= 0"),
    (
        '{"nodes": [{"id": 1, "type": "COMP", "duration_micros": -5}]}',
        "node 1.duration_micros: must be finite and >= 0",
    ),
    (
        '{"nodes": [{"id": 1, "type": "COMP", "duration_micros": 1}, {"id": 1, "type": "COMP", "duration_micros": 1}]}',
        "nodes[1].id: duplicate node id 1",
    ),
    (
        '{"nodes": [{"id": 1, "type": "COMP", "duration_micros": 1, "data_deps": [7]}]}',
        ": node 1 ('node1') depends on unknown node 7",
    ),
    (
        '{"nodes": [{"id": 1, "type": "COMP", "duration_micros": 1, "data_deps": [2]},'
        ' {"id": 2, "type": "COMP", "duration_micros": 1, "data_deps": [1]}]}',
        ": dependency cycle: node 1 ('node1') can never start",
    ),
    (
        '{"nodes": [{"id": 1, "type": "COMM_COLL", "attrs": {"comm_type": "ALLTOALLW", "comm_size": 1}}]}',
        "node 1.comm_type: unknown comm_type 'ALLTOALLW'",
    ),
    (
        '{"nodes": [{"id": 1, "type": "COMM_COLL", "attrs": {"comm_size": 1}}]}',
        "node 1.comm_type: collective 'node1' has no comm_type and its name names no collective",
    ),
    (
        '{"nodes": [{"id": 1, "type": "COMM_COLL", "attrs": {"comm_type": 12, "comm_size": 1}}]}',
        "node 1.comm_type: unknown comm_type 12",
    ),
    ('{"nodes": [{"id": 1, "type": 9, "duration_micros": 1}]}', "node 1.type: unknown node type 9"),
    (
        '{"nodes": [{"id": 1, "type": "COMP", "attrs": {"is_cpu_op": "maybe"}}]}',
        "node 1.is_cpu_op: must be true or false",
    ),
    (
        '{"nodes": [{"id": 1, "type": "COMM_SEND", "attrs": {"comm_size": 1}}]}',
        "node 1.comm_dst: send 'node1' has no comm_dst",
    ),
    (
        '{"nodes": [{"id": 1, "type": "COMM_RECV", "attrs": {"comm_src": "x", "comm_size": 1}}]}',
        "node 1.comm_src: must be an integer (got 'x')",
    ),
    (
        '{"nodes": [{"id": 1, "type": "COMP", "duration_micros": 1, "attrs": 5}]}',
        "node 1.attrs: attrs must be an object or a list",
    ),
    ('{"nodes": {}}', "nodes: must be a list of nodes"),
    ('{"nodes": []}', "trace has no nodes"),
    ('{"graph": []}', "not a Chakra trace: the JSON object has no nodes"),
    ('{"workload_graph": {}}', "workload_graph: must be a list of nodes"),
    ('{"nodes": [{"id": 1, "type": "COMP", "duration_micros": 1}', "not valid JSON"),
    (
        '{"rank": 3, "nodes": [{"id": 1, "type": "COMP", "duration_micros": 1}]}',
        "rank: file says rank 3, its name says 0",
    ),
]


@pytest.mark.parametrize(("text", "message"), BAD_RANK_FILES)
def test_malformed_rank_files_raise_one_line_errors(tmp_path: Path, text: str, message: str) -> None:
    p = tmp_path / "rank0.json"
    p.write_text(text)
    with pytest.raises(TraceError) as ei:
        load_chakra_rank(p, 0)
    msg = str(ei.value)
    assert msg.startswith(f"{p}: ") and message in msg and "\n" not in msg


def test_truncated_fixture_file(tmp_path: Path) -> None:
    d = tmp_path / "t"
    d.mkdir()
    for f in FIX.glob("*.json"):
        (d / f.name).write_text(f.read_text())
    (d / "rank2.json").write_text((FIX / "rank2.json").read_text()[:700])
    with pytest.raises(TraceError, match=r"rank2.json: not valid JSON: .*\(truncated file\?\)"):
        load_chakra(d)


def _cross_rank_cases() -> list[tuple[list[list[dict[str, Any]]], dict[str, Any], str]]:
    ar = [coll(1, "ALL_REDUCE", 1e6)]
    return [
        ([ar, []], {}, "trace has no nodes"),
        ([ar, [comp(1, 5)]], {}, "all ranks: rank 1 has 0 collectives, rank 0 has 1"),
        (
            [ar, [coll(1, "ALL_GATHER", 1e6)]],
            {},
            "collective #0 is ALL_GATHER of 1e+06 B (node 1) on rank 1 but ALL_REDUCE",
        ),
        ([ar, [coll(1, "ALL_REDUCE", 2e6)]], {}, "collective #0 is ALL_REDUCE of 2e+06 B"),
        ([[send(1, 1, 10)], [comp(1, 1)]], {}, "rank 0 sends 1 message(s) to rank 1 (tag 0) but rank 1 receives 0"),
        ([[send(1, 1, 10)], [recv(1, 0, 20)]], {}, "send node 1 on rank 0 has 10 B, its receive node 1 on rank 1 20 B"),
        ([[send(1, 5, 10)], [comp(1, 1)]], {}, "node 1 ('node1') names rank 5, but the trace has ranks 0..1"),
        (
            [[coll(1, "ALL_REDUCE", 8, pg="g")], [coll(1, "ALL_REDUCE", 8, pg="g")]],
            {"process_groups": {"g": [0]}},
            "rank 1 runs a collective of process group 'g', which does not contain it",
        ),
    ]


@pytest.mark.parametrize("case", range(len(_cross_rank_cases())))
def test_cross_rank_validation(tmp_path: Path, case: int) -> None:
    ranks, extra, message = _cross_rank_cases()[case]
    d = write(tmp_path, ranks, **extra)
    with pytest.raises(TraceError) as ei:
        load_chakra(d)
    assert message in str(ei.value)
    assert "\n" not in str(ei.value)


def test_directory_errors(tmp_path: Path) -> None:
    with pytest.raises(TraceError, match="no such trace file or directory"):
        load_chakra(tmp_path / "nope")
    with pytest.raises(TraceError, match=r"no rank traces \(\*\.et, \*\.json\)"):
        load_chakra(tmp_path)
    d = write(tmp_path, [[comp(1, 1)], [comp(1, 1)], [comp(1, 1)]])
    (d / "rank1.json").unlink()
    with pytest.raises(TraceError, match=r"ranks must be 0..1; missing rank 1 \(have \[0, 2\]\)"):
        load_chakra(d)
    (d / "notes.json").write_text('{"nodes": [{"id": 1, "type": "COMP", "duration_micros": 1}]}')
    with pytest.raises(TraceError, match="cannot tell the rank"):
        load_chakra(d)


def test_process_group_file_conflict(tmp_path: Path) -> None:
    c = [coll(1, "ALL_REDUCE", 8, pg="g")]
    d = write(tmp_path, [c, c], process_groups={"g": [0, 1]})
    (d / "process_groups.json").write_text('{"g": [0]}')
    with pytest.raises(TraceError, match=r"process group 'g' is \[0, 1\] here but \[0\] in .*process_groups.json"):
        load_chakra(d)


# ------------------------------------------------------------------ replay, exact small cases


def test_send_recv_exact_times(tmp_path: Path) -> None:
    # rank 0: 100 us compute, then send 1 MB; rank 1: receive, then 50 us compute.
    # 1e6 B over two 1e9 B/s hops with no latency take 1 ms; the transfer starts when both
    # ends have arrived (100 us): rank 1 waits idle until then.
    d = write(tmp_path, [[comp(1, 100), send(2, 1, 1e6, [1])], [recv(1, 0, 1e6), comp(2, 50, [1])]])
    o = replay(d, star(2), tmp_path / "run")
    ops = by_node(o)
    assert ops.loc[(0, 2), "start_s"] == pytest.approx(100e-6) and ops.loc[(0, 2), "end_s"] == pytest.approx(1.1e-3)
    assert ops.loc[(1, 1), "start_s"] == pytest.approx(100e-6) and ops.loc[(1, 1), "end_s"] == pytest.approx(1.1e-3)
    assert o.summary["step_time_s"] == pytest.approx(1.15e-3)
    r = o.tables["ranks"].set_index("rank")
    cols = ["compute_s", "communication_s", "overlap_s", "idle_s"]
    assert r.loc[0, cols].tolist() == pytest.approx([100e-6, 1e-3, 0.0, 50e-6])
    assert r.loc[1, cols].tolist() == pytest.approx([50e-6, 1e-3, 0.0, 100e-6])
    assert r.loc[0, ["dp", "pp", "ep", "tp"]].tolist() == [-1, -1, -1, -1]  # a trace has no parallel layout
    assert o.summary["bytes_by_class"]["pp"] == 1e6 and sum(o.summary["bytes_by_class"].values()) == 1e6
    assert o.summary["trace"]["p2p_transfers"] == 1


def test_collective_waits_for_every_member_and_overlaps_compute(tmp_path: Path) -> None:
    # rank 0 computes 300 us before the all-reduce; rank 1 joins at once and computes 500 us
    # alongside.  Ideal ring all-reduce of S bytes on 2 ranks with no latency: S / bw.
    size = 2e6
    d = write(
        tmp_path,
        [
            [comp(1, 300), coll(2, "ALL_REDUCE", size, [1], pg="dp0")],
            [coll(1, "ALL_REDUCE", size, pg="dp0"), comp(2, 500)],
        ],
    )
    o = replay(d, star(2), tmp_path / "run")
    ops = by_node(o)
    assert ops.loc[(0, 2), "end_s"] == pytest.approx(300e-6 + size / 1e9)
    assert ops.loc[(1, 1), "end_s"] == pytest.approx(300e-6 + size / 1e9)
    r1 = o.tables["ranks"].set_index("rank").loc[1]
    # comm [0.3, 2.3 ms] (from the moment both arrived), compute [0, 0.5 ms]
    assert (r1["overlap_s"], r1["communication_s"], r1["compute_s"]) == pytest.approx((200e-6, 1.8e-3, 300e-6))
    assert o.summary["bytes_by_class"]["dp"] == pytest.approx(2 * size)
    assert o.summary["exposed_comm_s_by_class"]["dp"] == pytest.approx(1.9e-3)  # mean of 2.0 and 1.8 ms


def test_compute_nodes_share_one_stream_and_scale(tmp_path: Path) -> None:
    d = write(tmp_path, [[comp(1, 100), comp(2, 200), comp(3, 50, [1, 2])]])
    o = replay(d, star(1), tmp_path / "a")
    assert by_node(o).loc[(0, 2), "start_s"] == pytest.approx(100e-6)  # waits for the stream
    assert o.summary["step_time_s"] == pytest.approx(350e-6)
    assert replay(d, star(1), tmp_path / "b", compute_scale=0.5).summary["step_time_s"] == pytest.approx(175e-6)


def test_cpu_ops_run_on_their_thread_and_count_as_neither(tmp_path: Path) -> None:
    # a CPU op (100 us, thread 1) launches a GPU kernel (300 us); a second CPU op on the same
    # thread runs alongside the kernel; a CPU op on thread 2 runs from 0.
    cpu = {"is_cpu_op": True, "tid": 1}
    nodes = [
        {**comp(1, 100), "attrs": cpu},
        comp(2, 300, [1]),
        {**comp(3, 80, [1]), "attrs": cpu},
        {**comp(4, 40), "attrs": {"is_cpu_op": True, "tid": 2}},
    ]
    o = replay(write(tmp_path, [nodes]), star(1), tmp_path / "run")
    ops = by_node(o)
    assert ops.loc[(0, 2), ["start_s", "end_s"]].tolist() == pytest.approx([100e-6, 400e-6])
    assert ops.loc[(0, 3), ["start_s", "end_s"]].tolist() == pytest.approx([100e-6, 180e-6])
    assert ops.loc[(0, 4), "start_s"] == 0.0
    r = o.tables["ranks"].iloc[0]
    assert (r["compute_s"], r["idle_s"]) == pytest.approx((300e-6, 100e-6))  # host time is idle for the GPU
    assert set(o.tables["ops"]["kind"]) == {"host", "compute"}


def test_measured_collectives_keep_their_time(tmp_path: Path) -> None:
    # no comm_size (the feeder JSON form) and GATHER (no root): the longest measured duration
    # of the members, once all have arrived; a CPU-side c10d call runs on its thread
    def kernel(i: int, us: float, deps: list[int] | None = None, ct: str | None = None) -> dict[str, Any]:
        return {
            "id": i,
            "name": "ncclKernel_AllReduce_RING_LL_Sum_float",
            "type": "COMM_COLL_NODE",
            "duration_micros": us,
            "data_deps": deps or [],
            "attrs": {"comm_type": ct} if ct else {},
        }

    c10d = {
        "id": 9,
        "name": "c10d::allreduce_",
        "type": "COMM_COLL_NODE",
        "duration_micros": 30,
        "attrs": {"is_cpu_op": True},
    }
    gather = {**kernel(1, 50), "attrs": {"comm_type": "GATHER", "comm_size": 8}}
    d = write(tmp_path, [[comp(1, 100), kernel(2, 500, [1]), c10d], [gather]])
    with pytest.raises(
        TraceError,
        match=r"collective #0 is GATHER of 8 B \(node 1\) on rank 1 but ALL_REDUCE of "
        r"unknown size \(node 2\) on rank 0",
    ):
        load_chakra(d)
    o = replay(write(tmp_path, [[gather], [{**gather, "duration_micros": 70}]]), star(2), tmp_path / "gather")
    assert o.summary["step_time_s"] == pytest.approx(70e-6) and o.summary["trace"]["measured_collectives"] == 1
    d = write(tmp_path, [[comp(1, 100), kernel(2, 500, [1]), c10d], [kernel(1, 400), comp(2, 10, [1])]])
    o = replay(d, star(2), tmp_path / "run")
    ops = by_node(o)
    assert ops.loc[(1, 1), ["start_s", "end_s"]].tolist() == pytest.approx([100e-6, 600e-6])
    assert ops.loc[(0, 9), ["start_s", "end_s"]].tolist() == pytest.approx([0.0, 30e-6])
    t = o.summary["trace"]
    assert (t["measured_collectives"], t["simulated_collectives"], t["host_ops"]) == (1, 0, 1)
    assert o.summary["num_flows"] == 0


def test_collectives_of_a_group_run_in_trace_order(tmp_path: Path) -> None:
    # on rank 1 the second all-reduce is ready first; it must still wait for the first
    d = write(
        tmp_path,
        [
            [coll(1, "ALL_REDUCE", 1e6), coll(2, "ALL_REDUCE", 1e6)],
            [comp(1, 400), coll(2, "ALL_REDUCE", 1e6, [1]), coll(3, "ALL_REDUCE", 1e6)],
        ],
    )
    ops = by_node(replay(d, star(2), tmp_path / "run"))
    assert ops.loc[(1, 3), "end_s"] == pytest.approx(400e-6 + 2e-3)
    assert ops.loc[(1, 2), "end_s"] == pytest.approx(400e-6 + 1e-3)


def test_deadlock_is_a_trace_error(tmp_path: Path) -> None:
    d = write(
        tmp_path,
        [
            [coll(1, "ALL_REDUCE", 8, pg="a"), coll(2, "ALL_REDUCE", 8, [1], pg="b")],
            [coll(1, "ALL_REDUCE", 8, pg="b"), coll(2, "ALL_REDUCE", 8, [1], pg="a")],
        ],
    )
    with pytest.raises(TraceError, match=r"replay deadlocked: rank 0 never finished node 1 .*group a"):
        replay(d, star(2), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_fixture_replay_writes_a_run_directory(tmp_path: Path) -> None:
    out = tmp_path / "run"
    g = star(4)
    o = replay(FIX, g, out)
    tables = ("ranks", "ops", "links", "tier_timeseries", "traffic_matrix", "trace_nodes")
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [*(f"{t}.{e}" for t in tables for e in ("csv", "parquet")), "summary.json", "scenario.yaml", ".netsim-output"]
    )
    ranks = pd.read_csv(out / "ranks.csv")
    span = o.summary["step_time_s"]
    parts = ranks[["compute_s", "communication_s", "overlap_s", "idle_s"]].sum(axis=1)
    assert parts.tolist() == pytest.approx([span] * 4)
    t = o.summary["trace"]
    assert (t["simulated_collectives"], t["p2p_transfers"], t["ranks"]) == (9, 4, 4)
    summary = json.loads((out / "summary.json").read_text())
    for key in (
        "step_time_s",
        "breakdown_s",
        "bytes_by_class",
        "exposed_comm_s_by_class",
        "num_ranks",
        "topology",
        "workload",
        "seed",
        "compute_model",
        "collective_cost",
    ):
        assert key in summary
    assert summary["collective_cost"]["collective_cost"] == "ideal"
    # same input, same result
    again = replay(FIX, g, tmp_path / "again")
    assert (tmp_path / "again" / "summary.json").read_bytes() == (out / "summary.json").read_bytes()
    pd.testing.assert_frame_equal(again.tables["ranks"], o.tables["ranks"])


def test_the_default_cost_model_is_the_topology_s(tmp_path: Path) -> None:
    from netsim.topology import load_topology

    g = load_topology("dgx-h100", nodes=2)
    o = replay_chakra(FIX, g, tmp_path / "run", ranks_per_node=2, report=None)
    assert o.summary["collective_cost"]["collective_cost"] == "nccl"


def test_placement_errors(tmp_path: Path) -> None:
    with pytest.raises(NetsimError, match="the trace has 4 ranks but the topology places only 2"):
        replay(FIX, star(2), tmp_path / "run")
    with pytest.raises(NetsimError, match="fewer than 2 ranks per node"):
        default_devices(star(4), ranks_per_node=2)


# ------------------------------------------------------------------ CLI


def test_cli_replay_chakra(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    code, stdout, _ = run_cli(
        [
            "replay-chakra",
            str(FIX),
            "--topology",
            "dgx-h100",
            "--nodes",
            "2",
            "--ranks-per-node",
            "2",
            "--out",
            str(out),
            "--no-report",
        ],
        capsys,
    )
    assert code == 0 and "step (makespan)" in stdout and f"wrote {out}" in stdout
    assert "collectives: 9 simulated" in stdout
    ranks = pd.read_csv(out / "ranks.csv")
    assert ranks["device"].tolist() == ["n0.g0", "n0.g1", "n1.g0", "n1.g1"]
    links = pd.read_csv(out / "links.csv")
    # the pipeline send/recv crosses servers: bytes on the back-end fabric
    assert links.loc[links["network"] == "backend", "bytes"].sum() > 0
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_cli_replay_chakra_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad"
    bad.mkdir()
    for f in FIX.glob("*.json"):
        doc = json.loads(f.read_text())
        (bad / f.name).write_text(json.dumps(doc))
    doc = copy.deepcopy(json.loads((FIX / "rank1.json").read_text()))
    doc["nodes"][0]["type"] = "TENSOR_NODE"
    (bad / "rank1.json").write_text(json.dumps(doc))
    out = tmp_path / "run"
    code, _, err = run_cli(["replay-chakra", str(bad), "--topology", "dgx-h100", "--out", str(out)], capsys)
    assert code == 2 and "rank1.json: node 1.type: unknown node type 'TENSOR_NODE'" in err and err.count("\n") == 1
    assert not out.exists()


def test_a_trace_run_has_the_run_report(tmp_path: Path) -> None:
    out = tmp_path / "run"
    replay_chakra(FIX, star(4), out, setup=collective_setup(star(4), cost_model="ideal"), report=write_report)
    report = (out / "report.md").read_text()
    assert "chakra:chakra4" in report and (out / "report.html").is_file() and (out / "trace.json").is_file()
