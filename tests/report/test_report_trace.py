"""Chrome trace export: format, metadata, nesting per thread, options for large runs."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from report_fixtures import make_run_dir

from netsim.errors import NetsimError
from netsim.report.perfetto import assign_lanes, check_nesting, write_chrome_trace


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_run_dir(tmp_path_factory.mktemp("trace") / "run", nodes=2, gpus=2, overlapping=True)


def _load(path: Path) -> dict[str, Any]:
    data = json.loads(path.read_text())
    assert isinstance(data, dict)
    return data


def _threads(trace: dict[str, Any]) -> dict[tuple[int, int], str]:
    return {
        (e["pid"], e["tid"]): e["args"]["name"]
        for e in trace["traceEvents"]
        if e["ph"] == "M" and e["name"] == "thread_name"
    }


def test_trace_format_and_metadata(run: Path, tmp_path: Path) -> None:
    info = write_chrome_trace(run, tmp_path / "trace.json")
    trace = _load(tmp_path / "trace.json")
    events = trace["traceEvents"]
    ops = pd.read_parquet(run / "ops.parquet")
    xs = [e for e in events if e["ph"] == "X"]
    assert len(xs) == len(ops) == info.events_written == info.ops_total
    procs = {e["pid"]: e["args"]["name"] for e in events if e["ph"] == "M" and e["name"] == "process_name"}
    assert procs == {0: "node 0", 1: "node 1", 2: "network"}
    names = set(_threads(trace).values())
    assert {"n0.g0 compute", "n0.g0 comm", "n1.g1 compute", "n1.g1 comm"} <= names
    # every X event sits on a named thread of its node's process
    threads = _threads(trace)
    for e in xs:
        assert (e["pid"], e["tid"]) in threads
        assert threads[(e["pid"], e["tid"])].startswith(f"n{e['pid']}.")
    assert check_nesting(events) == []


def test_trace_times_names_and_args(run: Path, tmp_path: Path) -> None:
    write_chrome_trace(run, tmp_path / "t.json")
    trace = _load(tmp_path / "t.json")
    ops = pd.read_parquet(run / "ops.parquet")
    op = ops[(ops["rank"] == 3) & (ops["name"] == "ep-combine") & (ops["layer"] == 1) & (ops["microbatch"] == 0)]
    assert len(op) == 1
    row = op.iloc[0]
    threads = _threads(trace)
    [ev] = [
        e
        for e in trace["traceEvents"]
        if e["ph"] == "X"
        and e["name"] == "ep-combine L1"
        and e["args"]["rank"] == 3
        and e["args"].get("microbatch") == 0
    ]
    assert ev["ts"] == pytest.approx(row["start_s"] * 1e6, abs=1e-3)  # microseconds
    assert ev["dur"] == pytest.approx((row["end_s"] - row["start_s"]) * 1e6, abs=1e-3)
    assert ev["args"]["traffic_class"] == "ep" and ev["args"]["layer"] == 1 and ev["cat"] == "ep"
    assert threads[(ev["pid"], ev["tid"])] == "n1.g1 comm"
    backward = [e for e in trace["traceEvents"] if e["ph"] == "X" and e["name"] == "backward"]
    assert backward and "layer" not in backward[0]["args"]


def test_partial_overlaps_go_to_sub_threads(run: Path, tmp_path: Path) -> None:
    write_chrome_trace(run, tmp_path / "t.json")
    trace = _load(tmp_path / "t.json")
    names = set(_threads(trace).values())
    assert "n0.g0 comm (2)" in names  # dp-allreduce and pp-send overlap partially on one stream
    threads = _threads(trace)
    pp = [e for e in trace["traceEvents"] if e["ph"] == "X" and e["name"] == "pp-send"]
    dp = [e for e in trace["traceEvents"] if e["ph"] == "X" and e["name"] == "dp-allreduce"]
    assert {threads[(e["pid"], e["tid"])].split()[-1] for e in pp} == {"(2)"}
    assert {threads[(e["pid"], e["tid"])].split()[-1] for e in dp} == {"comm"}
    assert check_nesting(trace["traceEvents"]) == []


def test_checker_detects_partial_overlap() -> None:
    bad = [
        {"ph": "X", "name": "a", "pid": 0, "tid": 1, "ts": 0, "dur": 10},
        {"ph": "X", "name": "b", "pid": 0, "tid": 1, "ts": 5, "dur": 10},
    ]
    assert len(check_nesting(bad)) == 1
    nested = [
        {"ph": "X", "name": "a", "pid": 0, "tid": 1, "ts": 0, "dur": 10},
        {"ph": "X", "name": "b", "pid": 0, "tid": 1, "ts": 2, "dur": 3},
        {"ph": "X", "name": "c", "pid": 0, "tid": 1, "ts": 10, "dur": 1.5},
        {"ph": "X", "name": "d", "pid": 0, "tid": 2, "ts": 5, "dur": 10},
    ]
    assert check_nesting(nested) == []


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 50), st.integers(0, 20)), min_size=1, max_size=40))
def test_assign_lanes_always_nests(intervals: list[tuple[int, int]]) -> None:
    starts = np.array([s for s, _ in intervals], dtype=np.int64)
    ends = starts + np.array([d for _, d in intervals], dtype=np.int64)
    lanes = assign_lanes(starts, ends)
    events = [
        {"ph": "X", "name": str(i), "pid": 0, "tid": int(lane), "ts": int(s) / 1000, "dur": int(e - s) / 1000}
        for i, (s, e, lane) in enumerate(zip(starts, ends, lanes, strict=True))
    ]
    assert check_nesting(events) == []
    # no more lanes than the largest number of intervals alive at one instant
    depth = max(int(((starts <= t) & (ends > t)).sum()) for t in range(0, 71))
    assert int(lanes.max()) + 1 <= max(1, depth)


def test_rank_subset_and_dataframe_input(run: Path, tmp_path: Path) -> None:
    ops = pd.read_parquet(run / "ops.parquet")
    info = write_chrome_trace(ops, tmp_path / "t.json", ranks=[1, 2])
    trace = _load(tmp_path / "t.json")
    xs = [e for e in trace["traceEvents"] if e["ph"] == "X"]
    assert {e["args"]["rank"] for e in xs} == {1, 2}
    assert len(xs) == int(ops["rank"].isin([1, 2]).sum()) == info.events_written
    assert not [e for e in trace["traceEvents"] if e["ph"] == "C"]  # no tier_timeseries given
    with pytest.raises(NetsimError, match="no ops for rank"):
        write_chrome_trace(ops, tmp_path / "t2.json", ranks=[99])


def test_max_events_keeps_spread_ranks_then_truncates(run: Path, tmp_path: Path) -> None:
    ops = pd.read_parquet(run / "ops.parquet")
    per_rank = int(ops.groupby("rank").size().max())
    info = write_chrome_trace(run, tmp_path / "t.json", max_events=2 * per_rank)
    trace = _load(tmp_path / "t.json")
    assert info.ranks == [0, 3]  # first and last rank kept
    assert trace["otherData"]["ranks_shown"] == [0, 3]
    assert info.events_written <= 2 * per_rank
    info2 = write_chrome_trace(run, tmp_path / "t2.json", max_events=10)
    trace2 = _load(tmp_path / "t2.json")
    xs = [e for e in trace2["traceEvents"] if e["ph"] == "X"]
    assert len(xs) == 10 and info2.ranks == [0] and info2.truncated_events == per_rank - 10
    first10 = ops[ops["rank"] == 0].sort_values("start_s").head(10)
    assert max(e["ts"] for e in xs) == pytest.approx(first10["start_s"].max() * 1e6)
    assert check_nesting(trace2["traceEvents"]) == []


def test_aggregate_merges_consecutive_ops(tmp_path: Path) -> None:
    ops = pd.DataFrame(
        {
            "rank": [0, 0, 0, 0, 0],
            "device": ["n0.g0"] * 5,
            "node": [0] * 5,
            "stream": ["compute", "compute", "compute", "comm", "compute"],
            "name": ["attn", "mlp", "attn", "ep-dispatch", "attn"],
            "kind": ["compute", "compute", "compute", "comm", "compute"],
            "traffic_class": ["", "", "", "ep", ""],
            "layer": [0, 0, 1, 1, 2],
            "microbatch": [0, 0, 0, 0, 0],
            "start_s": [0.0, 1e-6, 2e-6, 3e-6, 10e-6],
            "end_s": [1e-6, 2e-6, 3e-6, 4e-6, 11e-6],
        }
    )
    write_chrome_trace(ops, tmp_path / "a.json", aggregate=True)
    xs = [e for e in _load(tmp_path / "a.json")["traceEvents"] if e["ph"] == "X"]
    by_name = {e["name"]: e for e in xs}
    assert set(by_name) == {"compute x3", "ep-dispatch L1", "attn L2"}  # the gap before 10 us splits
    merged = by_name["compute x3"]
    assert merged["ts"] == 0 and merged["dur"] == 3
    assert merged["args"]["count"] == 3 and merged["args"]["last_layer"] == 1
    write_chrome_trace(ops, tmp_path / "b.json", aggregate=True, aggregate_gap_s=10e-6)
    xs2 = [e for e in _load(tmp_path / "b.json")["traceEvents"] if e["ph"] == "X"]
    assert Counter(e["args"].get("count", 1) for e in xs2) == Counter({4: 1, 1: 1})


def test_counter_tracks_are_utilisation_per_tier(run: Path, tmp_path: Path) -> None:
    write_chrome_trace(run, tmp_path / "t.json")
    trace = _load(tmp_path / "t.json")
    cs = [e for e in trace["traceEvents"] if e["ph"] == "C"]
    ts = pd.read_parquet(run / "tier_timeseries.parquet")
    tiers = {f"{n}/{t} utilisation (%)" for n, t in zip(ts["network"], ts["tier"], strict=True)}
    assert {e["name"] for e in cs} == tiers
    row = ts[(ts["network"] == "backend") & (ts["tier"] == "spine")].sort_values("t0_s").iloc[3]
    expect = 100 * row["bytes"] / (row["capacity_Bps"] * (row["t1_s"] - row["t0_s"]))
    [ev] = [
        e
        for e in cs
        if e["name"] == "backend/spine utilisation (%)" and e["ts"] == pytest.approx(row["t0_s"] * 1e6, abs=1e-3)
    ]
    assert ev["args"]["util"] == pytest.approx(expect, abs=1e-3)
    write_chrome_trace(run, tmp_path / "n.json", link_counters=False)
    assert not [e for e in _load(tmp_path / "n.json")["traceEvents"] if e["ph"] == "C"]


def test_trace_of_run_without_ops(tmp_path: Path) -> None:
    run = make_run_dir(tmp_path / "r", layers=1, microbatches=1, omit=("ops",))
    with pytest.raises(NetsimError, match="no ops table"):
        write_chrome_trace(run, tmp_path / "t.json")
