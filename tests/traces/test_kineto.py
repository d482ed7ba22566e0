"""Kineto / Chrome trace import: a real CPU profiler trace, a GPU-shaped one, malformed input."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from netsim.errors import SpecError, TraceError
from netsim.traces.kineto import EVENT_COLUMNS, SUMMARY_COLUMNS, load_kineto, select_events, summarize_ops
from tests.cli_run import run_cli

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "traces"
TRACE = FIX / "moe_layer_cpu.json"


def test_fixture_is_small_and_real() -> None:
    assert TRACE.stat().st_size < 200_000
    doc = json.loads(TRACE.read_text())
    assert doc["schemaVersion"] == 1 and "traceEvents" in doc


def test_load_real_cpu_trace() -> None:
    tr = load_kineto(TRACE)
    ev = tr.events
    assert list(ev.columns) == list(EVENT_COLUMNS)
    assert ev["ts_us"].min() == 0.0 and (ev["dur_us"] >= 0).all()
    assert set(ev["kind"]) >= {"cpu_op", "annotation"}
    names = set(ev.loc[ev["kind"] == "annotation", "name"])
    assert {"moe_layer", "router", "dispatch", "experts", "combine", "optimizer"} <= names
    assert (ev["self_us"] <= ev["dur_us"] + 1e-9).all() and (ev["self_us"] >= 0).all()


def test_self_time_is_duration_minus_direct_children() -> None:
    ev = load_kineto(TRACE).events
    layer = ev[(ev["name"] == "moe_layer")].iloc[0]
    t0, t1 = layer["ts_us"], layer["ts_us"] + layer["dur_us"]
    same = ev[(ev["pid"] == layer["pid"]) & (ev["tid"] == layer["tid"])]
    inside = same[(same["ts_us"] >= t0) & (same["ts_us"] + same["dur_us"] <= t1 + 1e-6)].drop(index=layer.name)
    # direct children: not inside any other event that is itself inside the layer
    direct = []
    for i, r in inside.iterrows():
        enclosing = inside[
            (inside.index != i)
            & (inside["ts_us"] <= r["ts_us"])
            & (inside["ts_us"] + inside["dur_us"] >= r["ts_us"] + r["dur_us"])
        ]
        if enclosing.empty:
            direct.append(r["dur_us"])
    assert layer["self_us"] == pytest.approx(layer["dur_us"] - sum(direct), abs=1e-3)


def test_within_range_selects_the_expert_matmuls() -> None:
    tr = load_kineto(TRACE)
    ev = select_events(tr, within="experts")
    rng = tr.events[tr.events["name"] == "experts"].iloc[0]
    assert (ev["ts_us"] >= rng["ts_us"] - 1e-6).all()
    assert (ev["ts_us"] + ev["dur_us"] <= rng["ts_us"] + rng["dur_us"] + 1e-6).all()
    s = summarize_ops(ev).set_index(["kind", "name"])
    # 4 experts x (up projection + down projection)
    assert s.loc[("cpu_op", "aten::mm"), "count"] == 8
    assert s.loc[("cpu_op", "aten::silu"), "count"] == 4
    assert s.loc[("annotation", "experts"), "count"] == 1
    # wildcards
    assert len(select_events(tr, within="expert*")) == len(ev)


def test_summary_matches_events_by_hand() -> None:
    ev = select_events(load_kineto(TRACE), kinds=["cpu_op"])
    s = summarize_ops(ev)
    assert list(s.columns) == list(SUMMARY_COLUMNS)
    mm = ev[ev["name"] == "aten::mm"]["dur_us"]
    r = s[s["name"] == "aten::mm"].iloc[0]
    assert r["count"] == len(mm)
    assert r["total_s"] == pytest.approx(mm.sum() * 1e-6)
    assert r["median_s"] == pytest.approx(mm.median() * 1e-6)
    assert r["min_s"] == pytest.approx(mm.min() * 1e-6) and r["max_s"] == pytest.approx(mm.max() * 1e-6)
    assert s["share"].sum() == pytest.approx(1.0)
    assert s["total_s"].is_monotonic_decreasing


def test_time_window() -> None:
    tr = load_kineto(TRACE)
    span = float((tr.events["ts_us"] + tr.events["dur_us"]).max())
    ev = select_events(tr, kinds=None, start_us=span * 0.25, end_us=span * 0.5)
    assert 0 < len(ev) < len(tr.events)
    assert ev["ts_us"].min() >= span * 0.25 and (ev["ts_us"] + ev["dur_us"]).max() <= span * 0.5
    with pytest.raises(TraceError, match=r"no events match .*window \[0, 1e-06\] us"):
        select_events(tr, kinds=None, start_us=0, end_us=1e-6)
    with pytest.raises(SpecError, match="unknown event kind 'gpu'"):
        select_events(tr, kinds=["gpu"])


def _gpu_trace(tmp_path: Path) -> Path:
    """A GPU-shaped trace (synthetic): kernels run after the CPU range that launched them."""
    ev = [
        {"ph": "X", "cat": "user_annotation", "name": "layer0", "pid": 1, "tid": 1, "ts": 100, "dur": 50},
        {"ph": "X", "cat": "cpu_op", "name": "aten::mm", "pid": 1, "tid": 1, "ts": 110, "dur": 20},
        {
            "ph": "X",
            "cat": "cuda_runtime",
            "name": "cudaLaunchKernel",
            "pid": 1,
            "tid": 1,
            "ts": 115,
            "dur": 5,
            "args": {"correlation": 7},
        },
        {
            "ph": "X",
            "cat": "cuda_runtime",
            "name": "cudaLaunchKernel",
            "pid": 1,
            "tid": 1,
            "ts": 300,
            "dur": 5,
            "args": {"correlation": 8},
        },
        {
            "ph": "X",
            "cat": "kernel",
            "name": "sm90_gemm",
            "pid": 0,
            "tid": 7,
            "ts": 400,
            "dur": 80,
            "args": {"correlation": 7},
        },
        {
            "ph": "X",
            "cat": "kernel",
            "name": "sm90_gemm",
            "pid": 0,
            "tid": 7,
            "ts": 500,
            "dur": 60,
            "args": {"correlation": 8},
        },
        {"ph": "X", "cat": "gpu_memcpy", "name": "Memcpy HtoD", "pid": 0, "tid": 8, "ts": 90, "dur": 4},
        {"ph": "i", "name": "marker", "pid": 1, "tid": 1, "ts": 1},
    ]
    p = tmp_path / "gpu.json"
    p.write_text(json.dumps({"traceEvents": ev}))
    return p


def test_gpu_kernels_follow_their_launch_into_a_range(tmp_path: Path) -> None:
    tr = load_kineto(_gpu_trace(tmp_path))
    assert tr.events["ts_us"].min() == 0.0 and tr.t0_us == 90.0
    ev = select_events(tr, within="layer0", kinds=["kernel", "cpu_op"])
    kern = ev[ev["kind"] == "kernel"]
    assert list(kern["dur_us"]) == [80.0]  # launched inside layer0, runs after it ended
    s = summarize_ops(select_events(tr, kinds=["kernel"]))
    assert s.iloc[0]["count"] == 2 and s.iloc[0]["total_s"] == pytest.approx(140e-6)


MALFORMED = [
    ("empty.json", "", "trace file is empty"),
    ("garbage.json", "hello", "not valid JSON: Expecting value at line 1 column 1"),
    ("noevents.json", '{"schemaVersion": 1}', "not a Chrome trace: the JSON object has no traceEvents"),
    ("scalar.json", "42", "not a Chrome trace: expected an object with traceEvents or a list of events"),
    ("notlist.json", '{"traceEvents": {}}', "traceEvents: must be a list of events"),
    ("notobj.json", '{"traceEvents": [1]}', "traceEvents[0]: not an object"),
    ("nodur.json", '[{"ph": "X", "name": "a", "ts": 1}]', "traceEvents[0].dur: complete event 'a' has no dur"),
    ("negdur.json", '[{"ph": "X", "name": "a", "ts": 1, "dur": -2}]', "negative duration -2.0 us for 'a'"),
    ("badts.json", '[{"ph": "X", "name": "a", "ts": "soon", "dur": 2}]', "traceEvents[0].ts: must be a number"),
    ("noname.json", '[{"ph": "X", "ts": 1, "dur": 2}]', "traceEvents[0].name: complete event without a name"),
    ("nox.json", '[{"ph": "i", "name": "a", "ts": 1}]', "no complete ('ph': 'X') events in the trace"),
]


@pytest.mark.parametrize(("name", "text", "message"), MALFORMED)
def test_malformed_traces_raise_one_line_trace_errors(tmp_path: Path, name: str, text: str, message: str) -> None:
    p = tmp_path / name
    p.write_text(text)
    with pytest.raises(TraceError) as ei:
        load_kineto(p)
    msg = str(ei.value)
    assert msg.startswith(str(p)) and message in msg and "\n" not in msg


def test_truncated_real_trace(tmp_path: Path) -> None:
    p = tmp_path / "cut.json"
    p.write_text(TRACE.read_text()[:60_000])
    with pytest.raises(TraceError, match=r"not valid JSON: .* \(truncated file\?\)"):
        load_kineto(p)
    with pytest.raises(TraceError, match="trace file not found"):
        load_kineto(tmp_path / "missing.json")


def test_cli_import_kineto(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out, events = tmp_path / "ops.csv", tmp_path / "events.parquet"
    code, stdout, _ = run_cli(
        ["import", "kineto", str(TRACE), "--out", str(out), "--within", "router", "--events", str(events)], capsys
    )
    assert code == 0 and f"wrote {out}" in stdout and "aten::softmax" in stdout
    table = pd.read_csv(out)
    assert list(table.columns) == list(SUMMARY_COLUMNS)
    assert table.loc[table["name"] == "aten::topk", "count"].item() == 1
    assert len(pd.read_parquet(events)) == int(table["count"].sum())


def test_cli_import_kineto_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cut = tmp_path / "cut.json"
    cut.write_text(TRACE.read_text()[:1000])
    code, _, err = run_cli(["import", "kineto", str(cut), "--out", str(tmp_path / "o.csv")], capsys)
    assert code == 2 and err.startswith(f"error: {cut}: not valid JSON") and err.count("\n") == 1
    code, _, err = run_cli(
        ["import", "kineto", str(TRACE), "--out", str(tmp_path / "o.csv"), "--within", "zzz"], capsys
    )
    assert code == 2 and "no record_function range named 'zzz'" in err and "(ranges: " in err
    assert not (tmp_path / "o.csv").exists()


def test_gzip_trace_loads_like_the_plain_one(tmp_path: Path) -> None:
    import gzip

    gz = tmp_path / "trace.pt.trace.json.gz"
    gz.write_bytes(gzip.compress(TRACE.read_bytes()))
    a, b = load_kineto(TRACE), load_kineto(gz)
    pd.testing.assert_frame_equal(a.events, b.events)
    assert a.shapes.keys() == b.shapes.keys()


def test_corrupt_gzip_is_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import gzip

    cut = tmp_path / "cut.json.gz"
    cut.write_bytes(gzip.compress(TRACE.read_bytes())[:500])
    with pytest.raises(TraceError, match="cannot read trace"):
        load_kineto(cut)
    code, _, err = run_cli(["import", "kineto", str(cut), "--out", str(tmp_path / "o.csv")], capsys)
    assert code == 2 and str(cut) in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o.csv").exists()
