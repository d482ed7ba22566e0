"""Running sweeps serially: the result table, the comparison report, failures and resuming."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from netsim.sweep import PointResult, load_sweep, run_sweep

from .conftest import write_sweep


def test_serial_sweep_writes_one_row_per_point_with_fields_and_metrics(micro_sweep: Path, tmp_path: Path) -> None:
    sweep = load_sweep(micro_sweep)
    calls: list[tuple[int, int, str | None]] = []
    out = run_sweep(
        sweep,
        tmp_path / "out",
        workers=1,
        reports=False,
        progress=lambda d, t, r: calls.append((d, t, None if r is None else r.id)),
    )
    assert out.executor == "serial" and out.failed == [] and out.reused == []
    ids = [p.id for p in sweep.points]
    assert out.ran == ids
    assert calls == [(0, 4, None)] + [(i + 1, 4, pid) for i, pid in enumerate(ids)]
    df = pd.read_parquet(out.path / "results.parquet")
    pd.testing.assert_frame_equal(df, out.table)
    assert list(df.columns[:6]) == [
        "point",
        "id",
        "status",
        "error",
        "topology.backend.fabric",
        "workload.parallelism.ep",
    ]
    assert list(df["point"]) == [0, 1, 2, 3] and list(df["id"]) == ids
    assert list(df["topology.backend.fabric"]) == ["rail-optimized"] * 2 + ["leaf-spine"] * 2
    assert list(df["workload.parallelism.ep"]) == [4, 8, 4, 8]
    assert set(df["status"]) == {"ok"}
    for col in ("step_time_s", "breakdown_s.compute", "bytes_by_class.ep", "east_west_bytes", "alltoall_share"):
        assert col in df.columns and (df[col] > 0).all(), col
    assert list(df["parallelism.ep"]) == [4, 8, 4, 8]  # flattened from summary.json
    # each row is the point's summary.json
    for _, row in df.iterrows():
        summary = json.loads((out.path / "points" / row["id"] / "summary.json").read_text())
        assert row["step_time_s"] == summary["step_time_s"]
        assert row["bytes_by_class.dp"] == summary["bytes_by_class"]["dp"]
        assert row["ep_bytes_inter_node"] == summary["ep_bytes_inter_node"]
    # EP 8 crosses the servers (EP 4 does not), so there the fabric changes the step time
    assert (df.loc[df["workload.parallelism.ep"] == 4, "ep_bytes_inter_node"] == 0).all()
    assert (df.loc[df["workload.parallelism.ep"] == 8, "ep_bytes_inter_node"] > 0).all()
    rail, leaf = df.loc[df["workload.parallelism.ep"] == 8, "step_time_s"]
    assert rail != leaf
    # csv holds the same table
    csv = pd.read_csv(out.path / "results.csv", keep_default_na=False)
    assert list(csv.columns) == list(df.columns) and list(csv["id"]) == ids
    # the comparison report uses the first point as its baseline
    assert out.compare == out.path / "compare" / "report.html" and out.compare.is_file()
    cmp = pd.read_parquet(out.path / "compare" / "compare.parquet")
    assert list(cmp["label"]) == ids and list(cmp["baseline"]) == [True, False, False, False]
    assert cmp["step_time_s_ratio"].iloc[0] == 1.0
    manifest = (out.path / "sweep.yaml").read_text()
    assert all(pid in manifest for pid in ids)


def test_failed_point_is_recorded_and_the_others_complete(tmp_path: Path) -> None:
    (tmp_path / "bad-kernels.csv").write_text("garbage,x\n1,2\n")  # passes validation, fails to load
    sweep = load_sweep(write_sweep(tmp_path, grid={"options.kernels": [None, "bad-kernels.csv"], "seed": [0, 1]}))
    out = run_sweep(sweep, tmp_path / "out", workers=1, reports=False, compare=False)
    df = out.table
    assert list(df["status"]) == ["ok", "ok", "failed", "failed"]
    assert out.failed == [p.id for p in sweep.points[2:]]
    assert (df["error"].iloc[:2] == "").all()
    kernels = (tmp_path / "bad-kernels.csv").resolve()
    assert df["error"].iloc[2] == f"{kernels}: kernel: missing column (a kernel table needs kernel, dtype, pass, " + (
        "time_s and the shape columns)"
    )
    assert df["step_time_s"].iloc[:2].notna().all() and df["step_time_s"].iloc[2:].isna().all()
    assert list(df["options.kernels"]) == ["null", "null", "bad-kernels.csv", "bad-kernels.csv"]
    for p in sweep.points[2:]:
        assert not (out.path / "points" / p.id).exists()
        assert "missing column" in (out.path / "failed" / f"{p.id}.txt").read_text()
    # a rerun retries the failed points only
    again = run_sweep(sweep, tmp_path / "out", workers=1, reports=False, compare=False)
    assert again.reused == [p.id for p in sweep.points[:2]] and again.ran == out.failed


class _Stop(KeyboardInterrupt):
    pass


def test_interrupted_sweep_resumes_with_only_the_missing_points(micro_sweep: Path, tmp_path: Path) -> None:
    sweep = load_sweep(micro_sweep)
    out_dir = tmp_path / "out"

    def stop_after_two(done: int, total: int, result: PointResult | None) -> None:
        if done == 2:
            raise _Stop  # like Ctrl-C after the second point

    with pytest.raises(_Stop):
        run_sweep(sweep, out_dir, workers=1, reports=False, compare=False, progress=stop_after_two)
    ids = [p.id for p in sweep.points]
    assert sorted(d.name for d in (out_dir / "points").iterdir()) == sorted(ids[:2])
    assert not (out_dir / "results.parquet").exists()
    mtimes = {pid: (out_dir / "points" / pid / "summary.json").stat().st_mtime_ns for pid in ids[:2]}

    ran: list[str] = []
    out = run_sweep(
        sweep,
        out_dir,
        workers=1,
        reports=False,
        compare=False,
        progress=lambda d, t, r: ran.append(r.id) if r is not None else None,
    )
    assert ran == ids[2:] and out.ran == ids[2:] and out.reused == ids[:2]
    for pid, mtime in mtimes.items():
        assert (out_dir / "points" / pid / "summary.json").stat().st_mtime_ns == mtime
    assert list(out.table["status"]) == ["ok"] * 4

    # a deleted point, and one whose directory is incomplete (no summary.json), run again;
    # a temporary directory left by a killed run is cleaned up
    import shutil

    shutil.rmtree(out_dir / "points" / ids[1])
    (out_dir / "points" / ids[3] / "summary.json").unlink()
    (out_dir / "points" / f".{ids[0]}.tmp-abc123").mkdir()
    table = (out_dir / "results.csv").read_bytes()
    out = run_sweep(sweep, out_dir, workers=1, reports=False, compare=False)
    assert out.ran == [ids[1], ids[3]] and out.reused == [ids[0], ids[2]]
    assert not (out_dir / "points" / f".{ids[0]}.tmp-abc123").exists()
    assert (out_dir / "results.csv").read_bytes() == table


def test_sweep_killed_mid_way_resumes(micro_sweep: Path, tmp_path: Path) -> None:
    """SIGKILL a real `netsim sweep` after its first point: the rerun runs only the rest."""
    out_dir = tmp_path / "out"
    entry = "import sys; from netsim.cli import main; main(sys.argv[1:])"
    args = ["sweep", str(micro_sweep), "-o", str(out_dir), "-j", "1", "--no-reports"]
    cmd = [sys.executable, "-c", entry, *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)

    def finished() -> list[str]:  # complete run directories (not the hidden temporary ones)
        return sorted(p.parent.name for p in (out_dir / "points").glob("*/summary.json") if p.parent.name[0] != ".")

    try:
        deadline = time.monotonic() + 60
        while not finished():
            assert proc.poll() is None, "the sweep ended before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.02)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    done = finished()
    sweep = load_sweep(micro_sweep)
    ids = [p.id for p in sweep.points]
    assert 1 <= len(done) < 4
    out = run_sweep(sweep, out_dir, workers=1, reports=False, compare=False)
    assert sorted(out.reused) == done
    assert out.ran == [pid for pid in ids if pid not in done]
    assert list(out.table["status"]) == ["ok"] * 4
    assert sorted(d.name for d in (out_dir / "points").iterdir()) == sorted(ids)
