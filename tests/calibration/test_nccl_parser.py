"""The nccl-tests log parser on the synthetic fixtures (tests/fixtures/nccl), good and malformed."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from netsim.calibration.nccl import COLUMNS, parse_nccl_log, parse_nccl_runs, read_nccl_runs, runs_summary
from netsim.collectives.nccl_tests import busbw_factor
from netsim.errors import NetsimError, TraceError

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "nccl"


@pytest.mark.parametrize(
    ("name", "op", "nranks", "nnodes", "redop", "root"),
    [
        ("all_reduce_perf_1n.log", "all_reduce", 4, 1, "sum", -1),
        ("all_reduce_perf_2n.log", "all_reduce", 8, 2, "sum", -1),
        ("all_gather_perf_1n.log", "all_gather", 4, 1, "none", -1),
        ("reduce_scatter_perf_1n.log", "reduce_scatter", 4, 1, "sum", -1),
        ("alltoall_perf_2n.log", "all_to_all", 8, 2, "none", -1),
        ("sendrecv_perf_2n.log", "sendrecv", 2, 2, "sum", -1),
    ],
)
def test_good_logs(name: str, op: str, nranks: int, nnodes: int, redop: str, root: int) -> None:
    runs = parse_nccl_runs((FIX / name).read_text(), source=name)
    assert len(runs) == 1
    run = runs[0]
    assert (run.op, run.nranks, run.nnodes) == (op, nranks, nnodes)
    assert run.header["nThread"] == "1" and run.header["minBytes"] == "8" and run.header["maxBytes"] == "268435456"
    assert run.devices[0] == "NVIDIA H100 80GB HBM3"
    df = run.rows
    assert list(df.columns) == list(COLUMNS)
    # -b 8 -e 256MiB -f 4: 8, 32, ..., 2^27
    assert df["size_bytes"].tolist() == [8 * 4**k for k in range(13)]
    assert (df["count"] == df["size_bytes"] // 4).all()
    assert (df["type"] == "float").all() and (df["redop"] == redop).all() and (df["root"] == root).all()
    assert (df["oop_wrong"] == 0).all()
    # the columns are consistent: algbw = size / time, busbw = algbw * factor (2-decimal rounding)
    algbw = df["size_bytes"] / (df["oop_time_us"] * 1e-6) / 1e9
    assert np.allclose(df["oop_algbw_GBps"], algbw, atol=0.006 + 0.002 * algbw)
    assert np.allclose(df["oop_busbw_GBps"], df["oop_algbw_GBps"] * busbw_factor(op, nranks), atol=0.02, rtol=0.01)
    # the trailer: the mean of the busbw column
    assert run.avg_busbw_GBps == pytest.approx(df["oop_busbw_GBps"].mean(), abs=0.01)
    assert run.out_of_bounds == 0
    # rows point at their line in the file
    lines = (FIX / name).read_text().splitlines()
    for _, r in df.iterrows():
        assert lines[int(r["line"]) - 1].split()[0] == str(r["size_bytes"])


def test_alltoall_in_place_is_na() -> None:
    df = parse_nccl_log(FIX / "alltoall_perf_2n.log")
    assert df["ip_time_us"].isna().all() and df["ip_busbw_GBps"].isna().all() and df["ip_wrong"].isna().all()
    assert df["oop_time_us"].notna().all()


def test_in_place_columns_read() -> None:
    df = parse_nccl_log(FIX / "all_reduce_perf_2n.log")
    assert np.allclose(df["ip_time_us"], df["oop_time_us"])
    assert df.loc[df["size_bytes"] == 134217728, "oop_time_us"].item() > 1000


def test_two_runs_with_debug_noise_and_no_validation() -> None:
    runs = read_nccl_runs([FIX / "all_reduce_perf_noisy.log"])
    assert [r.op for r in runs] == ["all_reduce", "all_reduce"]
    assert runs[1].line > runs[0].line
    for r in runs:
        assert len(r.rows) == 13 and r.rows["oop_wrong"].isna().all() and r.rows["ip_wrong"].isna().all()
    assert runs_summary(runs)["sizes"].tolist() == [13, 13]
    df = parse_nccl_log(FIX / "all_reduce_perf_noisy.log")
    assert len(df) == 26


def test_text_input_and_op_from_argument() -> None:
    text = (FIX / "unknown_op.log").read_text()
    df = parse_nccl_log(text, op="all_reduce")
    assert (df["op"] == "all_reduce").all() and (df["source"] == "<log>").all()
    # the op can also come from the file name
    df2 = parse_nccl_log(text, source="logs/reduce_scatter_perf_node3.txt")
    assert (df2["op"] == "reduce_scatter").all()


def test_header_without_rank_lines_counts_threads_times_gpus() -> None:
    text = "\n".join(ln for ln in (FIX / "all_reduce_perf_1n.log").read_text().splitlines() if "Rank" not in ln)
    text = text.replace("nThread 1 nGpus 1", "nThread 1 nGpus 8")
    run = parse_nccl_runs(text + "\n", source="x_all_reduce.log")[0]
    assert (run.nranks, run.nnodes, run.hosts) == (8, 1, [])


@pytest.mark.parametrize(
    ("name", "line", "words"),
    [
        ("truncated_row.log", 26, "expected 13 columns"),
        ("no_trailer.log", 26, "truncated log"),
        ("bad_number.log", 16, "cannot read time '30x00'"),
        ("row_before_header.log", 12, "before the nccl-tests column header"),
        ("no_rows.log", 3, "no result rows"),
        ("unknown_op.log", 2, "cannot tell which collective"),
    ],
)
def test_malformed_logs_name_file_and_line(name: str, line: int, words: str) -> None:
    with pytest.raises(TraceError) as info:
        parse_nccl_log(FIX / name)
    msg = info.value.one_line()
    assert msg.startswith(str(FIX / name) + ": ")
    assert f"line {line}:" in msg
    assert words in msg
    assert "\n" not in msg
    assert isinstance(info.value, NetsimError)


def test_malformed_line_numbers_match_the_file() -> None:
    lines = (FIX / "bad_number.log").read_text().splitlines()
    assert "30x00" in lines[15]
    trunc = (FIX / "truncated_row.log").read_text().splitlines()
    assert len(trunc) == 26 and len(trunc[25].split()) < 13


def test_missing_file_and_empty_text() -> None:
    with pytest.raises(TraceError, match="no such file"):
        parse_nccl_log(FIX / "does_not_exist.log")
    with pytest.raises(TraceError, match="no nccl-tests run found"):
        parse_nccl_log("# just a comment\n# and another\n")
    with pytest.raises(TraceError, match="unknown collective"):
        parse_nccl_log(FIX / "all_reduce_perf_1n.log", op="allreduce")


def test_row_after_trailer_is_rejected() -> None:
    text = (FIX / "all_reduce_perf_1n.log").read_text()
    row = next(ln for ln in text.splitlines() if ln.strip()[:1].isdigit())
    with pytest.raises(TraceError, match="after the '# Avg bus bandwidth' trailer"):
        parse_nccl_log(text + row + "\n")


def test_negative_time_rejected() -> None:
    text = (FIX / "all_reduce_perf_1n.log").read_text()
    text = text.replace("   30.00    0.00    0.00", "  -30.00    0.00    0.00", 1)
    with pytest.raises(TraceError, match="negative time"):
        parse_nccl_log(text)
    assert not math.isnan(parse_nccl_log(FIX / "all_reduce_perf_1n.log")["oop_time_us"].iloc[0])
