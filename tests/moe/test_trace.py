"""Routing trace format: round trip, validation errors, measured-form converter."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from netsim.errors import TraceError
from netsim.moe import RoutingTrace, TraceMeta, convert_measured, read_routing_trace, write_routing_trace
from netsim.moe.trace import METADATA_KEY

META = TraceMeta(experts=4, ep=2, ranks_per_node=1, hidden=8, top_k=1, router="switch", extra={"note": "t"})


def sample_trace() -> RoutingTrace:
    a = np.array([[3, 0, 1, 0], [0, 2, 0, 5]])
    da = np.array([[1, 0, 0, 0], [0, 0, 0, 0]])
    b = np.array([[0, 0, 4, 4], [1, 1, 1, 1]])
    return RoutingTrace.from_counts(
        [(0, 0, 0, a, da), (0, 1, 0, b, None), (1, 0, 2, b, None), (1, 1, 2, a, None)], META
    )


def test_round_trip(tmp_path: Path) -> None:
    tr = sample_trace()
    path = write_routing_trace(tr, tmp_path / "r.parquet")
    back = read_routing_trace(path)
    assert back.meta == META
    pd.testing.assert_frame_equal(back.table, tr.table)
    tok, drp = back.counts(0, 0)
    assert tok.tolist() == [[3, 0, 1, 0], [0, 2, 0, 5]]
    assert drp.tolist() == [[1, 0, 0, 0], [0, 0, 0, 0]]
    assert back.batch_keys() == [(0, 0, 0), (0, 1, 0), (1, 0, 2), (1, 1, 2)]
    assert back.counts(1, 0, 2)[0].sum() == 12
    # layer 0: column sums of a ([3, 2, 1, 5]) + b ([1, 1, 5, 5]); layer 1: b + a
    assert back.expert_load().tolist() == [[4, 3, 6, 10], [4, 3, 6, 10]]
    # zero entries are not stored
    assert len(tr.table) == 4 + 6 + 6 + 4
    md = json.loads(pq.read_schema(path).metadata[METADATA_KEY])
    assert md["format"] == "netsim.routing_trace" and md["version"] == 1 and md["experts"] == 4


def _write(tmp_path: Path, df: pd.DataFrame, meta: dict | None) -> Path:
    table = pa.Table.from_pandas(df, preserve_index=False)
    if meta is not None:
        table = table.replace_schema_metadata({METADATA_KEY: json.dumps(meta).encode()})
    p = tmp_path / "bad.parquet"
    pq.write_table(table, p)
    return p


def good_df() -> pd.DataFrame:
    return sample_trace().table.copy()


@pytest.mark.parametrize(
    ("mutate", "field", "message"),
    [
        (lambda d: d.drop(columns=["tokens"]), "tokens", "missing column"),
        (lambda d: d.assign(expert=d["expert"] + 4), "expert", ">= experts=4"),
        (lambda d: d.assign(src_rank=d["src_rank"] * 2), "src_rank", ">= ep=2"),
        (lambda d: d.assign(tokens=-d["tokens"]), "tokens", "negative"),
        (lambda d: d.assign(dropped=d["dropped"].astype(float).where(d.index > 0)), "dropped", "missing values"),
        (lambda d: d.assign(layer="x"), "layer", "integers"),
        (lambda d: pd.concat([d, d.iloc[:1]]), "expert", "duplicate row"),
    ],
)
def test_corrupt_columns_name_file_and_column(tmp_path: Path, mutate, field: str, message: str) -> None:
    p = _write(tmp_path, mutate(good_df()), META.to_json())
    with pytest.raises(TraceError, match=message) as exc:
        read_routing_trace(p)
    assert exc.value.source == str(p)
    assert exc.value.field == field


def test_microbatch_column_is_optional(tmp_path: Path) -> None:
    p = _write(tmp_path, good_df().drop(columns=["microbatch"]), META.to_json())
    assert read_routing_trace(p).microbatches == [0]


@pytest.mark.parametrize(
    ("meta", "field"),
    [
        (None, "metadata"),
        ({**META.to_json(), "experts": 0}, "metadata.experts"),
        ({**META.to_json(), "version": 99}, "metadata.version"),
        ({k: v for k, v in META.to_json().items() if k != "router"}, "metadata.router"),
    ],
)
def test_bad_metadata(tmp_path: Path, meta: dict | None, field: str) -> None:
    p = _write(tmp_path, good_df(), meta)
    with pytest.raises(TraceError) as exc:
        read_routing_trace(p)
    assert exc.value.field == field and exc.value.source == str(p)


def test_missing_and_non_parquet_files(tmp_path: Path) -> None:
    with pytest.raises(TraceError, match="not found"):
        read_routing_trace(tmp_path / "nope.parquet")
    bad = tmp_path / "x.parquet"
    bad.write_text("step,layer\n")
    with pytest.raises(TraceError, match="not a readable Parquet file") as exc:
        read_routing_trace(bad)
    assert "x.parquet" in str(exc.value)


def test_convert_measured_csv(tmp_path: Path) -> None:
    csv = tmp_path / "m.csv"
    csv.write_text(
        "step,layer,src_rank,expert,dropped\n0,0,0,1,0\n0,0,0,1,0\n0,0,0,2,1\n0,0,1,3,0\n0,0,1,-1,0\n0,1,1,0,0\n"
    )
    tr = convert_measured(csv, experts=4, ep=2, ranks_per_node=2, hidden=16, top_k=1)
    tok, drp = tr.counts(0, 0)
    assert tok.tolist() == [[0, 2, 0, 0], [0, 0, 0, 1]]
    assert drp.tolist() == [[0, 0, 1, 0], [0, 0, 0, 0]]
    assert tr.counts(0, 1)[0][1, 0] == 1
    assert tr.meta.router == "measured"
    out = write_routing_trace(tr, tmp_path / "m.parquet")
    assert read_routing_trace(out).counts(0, 0)[0].tolist() == tok.tolist()


def test_convert_measured_csv_errors(tmp_path: Path) -> None:
    csv = tmp_path / "m.csv"
    csv.write_text("layer,src_rank\n0,0\n")
    with pytest.raises(TraceError, match="missing column") as exc:
        convert_measured(csv, experts=4, ep=2, ranks_per_node=2, hidden=16, top_k=1)
    assert exc.value.field == "expert"
    csv.write_text("layer,src_rank,expert\n0,0,x\n")
    with pytest.raises(TraceError, match="data row 1") as exc:
        convert_measured(csv, experts=4, ep=2, ranks_per_node=2, hidden=16, top_k=1)
    assert exc.value.field == "expert" and exc.value.source == str(csv)
    csv.write_text("layer,src_rank,expert\n0,5,1\n")
    with pytest.raises(TraceError, match="ep=2"):
        convert_measured(csv, experts=4, ep=2, ranks_per_node=2, hidden=16, top_k=1)


def test_convert_measured_npz(tmp_path: Path) -> None:
    # [layers=1, ranks=2, tokens=3, top_k=2]
    ids = np.array([[[[0, 1], [0, 2], [3, -1]], [[1, 2], [1, 3], [1, 0]]]])
    dropped = np.zeros(ids.shape, dtype=bool)
    dropped[0, 1, 2, 0] = True  # rank 1, token 2, slot 0 (expert 1) was dropped
    p = tmp_path / "m.npz"
    np.savez(p, expert_ids=ids, dropped=dropped)
    tr = convert_measured(p, experts=4, ep=2, ranks_per_node=1, hidden=8, top_k=2)
    tok, drp = tr.counts(0, 0)
    assert tr.meta.tokens_per_rank == 3
    assert tok.tolist() == [[2, 1, 1, 1], [1, 2, 1, 1]]
    assert drp.tolist() == [[0, 0, 0, 0], [0, 1, 0, 0]]
    np.savez(p, expert_ids=ids.astype(float))
    with pytest.raises(TraceError, match="integer array") as exc:
        convert_measured(p, experts=4, ep=2, ranks_per_node=1, hidden=8, top_k=2)
    assert exc.value.field == "expert_ids"
    np.savez(p, other=ids)
    with pytest.raises(TraceError, match="missing array"):
        convert_measured(p, experts=4, ep=2, ranks_per_node=1, hidden=8, top_k=2)


# -- missing layers, windows, per-token expert ids (the Hugging Face importer) -------------------


def test_a_step_without_one_of_the_layers_is_rejected(tmp_path: Path) -> None:
    df = good_df()
    gap = df[~((df["step"] == 1) & (df["layer"] == 1))]  # step 1 (micro-batch 2) lost layer 1
    p = _write(tmp_path, gap, META.to_json())
    with pytest.raises(TraceError, match=r"step 1 micro-batch 2 has no rows for layer\(s\) \[1\]") as exc:
        read_routing_trace(p)
    assert exc.value.field == "layer" and exc.value.source == str(p)


def test_window_renumbers_steps_and_records_itself() -> None:
    tr = sample_trace()
    w = tr.window(1, 2)
    assert w.steps == [0] and w.meta.extra["window"] == [1, 2]
    assert w.counts(0, 1, 2)[0].tolist() == tr.counts(1, 1, 2)[0].tolist()
    with pytest.raises(TraceError, match=r"no steps in \[5, 9\)"):
        tr.window(5, 9)


def test_trace_from_expert_ids_counts_per_rank_and_expert() -> None:
    from netsim.moe.trace import trace_from_expert_ids

    # 1 layer, 2 ranks, 3 tokens, top-2; -1 = empty slot
    ids = np.array([[[[0, 1], [0, 3], [2, -1]], [[3, 3], [1, 0], [1, 2]]]])
    dropped = np.zeros(ids.shape, dtype=bool)
    dropped[0, 1, 0, 1] = True  # rank 1, token 0, second slot (expert 3) dropped
    tr = trace_from_expert_ids(ids, experts=4, ep=2, ranks_per_node=1, hidden=8, dropped=dropped)
    tok, drp = tr.counts(0, 0)
    assert tok.tolist() == [[2, 1, 1, 1], [1, 2, 1, 1]]
    assert drp.tolist() == [[0, 0, 0, 0], [0, 0, 0, 1]]
    assert tr.meta.top_k == 2 and tr.meta.tokens_per_rank == 3
    with pytest.raises(TraceError, match="expert id 4 outside") as exc:
        trace_from_expert_ids(ids + 1, experts=4, ep=2, ranks_per_node=1, hidden=8)
    assert exc.value.field == "expert_ids"
    with pytest.raises(TraceError, match="ranks=3"):
        trace_from_expert_ids(ids, experts=4, ep=3, ranks_per_node=1, hidden=8)


def _gap(d: pd.DataFrame) -> pd.DataFrame:
    return d[~((d["step"] == 1) & (d["layer"] == 1))]


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda d: d.assign(expert=d["expert"] + 16), "expert"),
        (lambda d: d.assign(tokens=-d["tokens"]), "tokens"),
        (_gap, "layer"),
    ],
)
def test_cli_rejects_a_bad_routing_trace_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], mutate, field: str
) -> None:
    from netsim.cli import main

    meta = {**META.to_json(), "experts": 16, "ep": 16}
    p = _write(tmp_path, mutate(good_df()), meta)
    with pytest.raises(SystemExit) as exc:
        main(
            [
                "run",
                "--topology",
                "ascend-910a",
                "--nodes",
                "2",
                "--workload",
                "locmoe-pangu",
                "--routing-trace",
                str(p),
                "--out",
                str(tmp_path / "run"),
            ]
        )
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and str(p) in err and f": {field}:" in err, err
    assert not (tmp_path / "run").exists()
