"""`write_report` on synthetic run directories: files, self-containment, determinism, omissions."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest
from report_checks import external_references, html_figures, is_png, markdown_figures, parse_html
from report_fixtures import RunFactory, make_run_dir

from netsim.errors import NetsimError
from netsim.io import MARKER
from netsim.report import TABLES, build_report, load_run, write_report
from netsim.report.figures import aggregate_breakdown, top_links
from netsim.report.fmt import fmt_time
from netsim.report.render import render_markdown

ALL_FIGURES = {
    "breakdown.png",
    "timeline.png",
    "alltoall_layers.png",
    "traffic_matrix.png",
    "link_tiers.png",
    "tier_timeseries.png",
    "bytes.png",
    "expert_load.png",
    "top_links.png",
}


def test_report_files_exist_and_html_is_self_contained(moe_report: Path) -> None:
    html_text = (moe_report / "report.html").read_text()
    doc = parse_html(html_text)
    assert doc.errors == []
    assert external_references(doc) == []
    assert not any(tag == "script" for tag, _ in doc.tags)
    assert not any(tag == "link" for tag, _ in doc.tags)
    assert "http-equiv" in html_text and "default-src 'none'" in html_text
    embedded = html_figures(doc)
    assert set(embedded) == {f"figures/{name}" for name in ALL_FIGURES}
    on_disk = {p.name for p in (moe_report / "figures").iterdir()}
    assert on_disk == ALL_FIGURES
    for rel, data in embedded.items():
        path = moe_report / rel
        assert is_png(path), rel
        assert path.read_bytes() == data  # the embedded image is the file it names


def test_markdown_links_every_figure(moe_report: Path) -> None:
    md = (moe_report / "report.md").read_text()
    links = markdown_figures(md)
    assert sorted(links) == sorted(f"figures/{n}" for n in ALL_FIGURES)
    for rel in links:
        assert is_png(moe_report / rel)
    assert "http" not in "".join(links)


def test_report_numbers_match_the_tables(moe_report: Path) -> None:
    run = load_run(moe_report)
    md = (moe_report / "report.md").read_text()
    step = run.summary["step_time_s"]
    assert f"| step time | {fmt_time(step)} |" in md
    ranks = run.tables["ranks"]
    mean_compute = fmt_time(ranks["compute_s"].mean())
    assert re.search(rf"\| compute \| {re.escape(mean_compute)} \|", md)
    # the most congested link of the table is the first row of the congestion section
    worst = run.tables["links"].sort_values("peak_utilization", ascending=False).iloc[0]
    section = md.split("## Most congested links", 1)[1]
    first_row = next(line for line in section.splitlines() if line.startswith("| ") and "->" in line)
    assert first_row.startswith(f"| {worst['link']} |")
    # per-layer all-to-all time is the sum over micro-batches and phases
    a2a = run.tables["alltoall_layers"]
    layer0 = fmt_time(a2a.loc[a2a["layer"] == 0, "duration_s"].sum())
    assert re.search(rf"\| 0 \| 4 \| {re.escape(layer0)} \|", md)


def test_report_is_deterministic(tmp_path: Path, moe_report: Path) -> None:
    again = make_run_dir(tmp_path / "moe-run")  # same name, same content, another place
    write_report(again)
    names = ["report.html", "report.md", "trace.json", *(f"figures/{n}" for n in sorted(ALL_FIGURES))]
    for name in names:
        assert (again / name).read_bytes() == (moe_report / name).read_bytes(), name


def test_no_timestamp_in_png(moe_report: Path) -> None:
    data = (moe_report / "figures" / "breakdown.png").read_bytes()
    assert b"tIME" not in data
    assert b"Software" not in data


def test_missing_optional_tables_are_omitted_with_a_note(make_run: RunFactory) -> None:
    run = make_run("partial", omit=("alltoall_layers", "expert_load", "tier_timeseries", "traffic_matrix"))
    write_report(run, trace=False)
    md = (run / "report.md").read_text()
    figs = {p.name for p in (run / "figures").iterdir()}
    assert figs == ALL_FIGURES - {"alltoall_layers.png", "tier_timeseries.png", "traffic_matrix.png"}
    notes = md.split("## Notes", 1)[1].split("\n## ", 1)[0]
    for table in ("alltoall_layers", "tier_timeseries", "traffic_matrix"):
        assert f"`{table}`" in notes
    assert "No `expert_load` table" in md  # MoE section kept (summary has MoE fields), heatmap dropped
    assert not (run / "trace.json").exists()
    assert external_references(parse_html((run / "report.html").read_text())) == []


@pytest.mark.parametrize(
    ("dispatcher", "latency_us", "host_us", "row"),
    [
        ("deepep", 250.0, 0.0, "deepep, 250 us fixed per call"),
        ("hybridep", 320.0, 616.0, "hybridep, 320 us fixed per call, 616 us host wait per forward dispatch"),
        ("alltoall", 0.0, 0.0, "alltoall"),
    ],
)
def test_summary_names_the_dispatcher_and_its_time_per_call(
    make_run: RunFactory, dispatcher: str, latency_us: float, host_us: float, row: str
) -> None:
    run = make_run(f"moe-{dispatcher}", layers=1, microbatches=1)
    summary = json.loads((run / "summary.json").read_text())
    summary["moe_dispatch"] = {"dispatcher": dispatcher, "call_latency_us": latency_us, "host_sync_us": host_us}
    (run / "summary.json").write_text(json.dumps(summary))
    md = render_markdown(build_report(load_run(run))[0])
    assert f"| token dispatcher | {row} |" in md


def test_non_moe_run_has_no_moe_sections(make_run: RunFactory) -> None:
    run = make_run("dense", moe=False, layers=1, microbatches=1)
    doc, figs = build_report(load_run(run))
    md = render_markdown(doc)
    assert "## Expert load and locality" not in md
    assert "## All-to-all per layer" not in md
    assert "Expert load and locality: omitted, the run has no MoE layers." in md
    assert set(figs) == ALL_FIGURES - {"expert_load.png", "alltoall_layers.png"}


def test_csv_only_run_dir_reads_like_parquet(make_run: RunFactory) -> None:
    csv_run = make_run("csv", csv_only=True, layers=1, microbatches=1)
    pq_run = make_run("pq", layers=1, microbatches=1)
    assert not list(csv_run.glob("*.parquet"))
    a, b = load_run(csv_run), load_run(pq_run)
    assert set(a.tables) == set(b.tables) == set(TABLES)
    for name in TABLES:
        pd.testing.assert_frame_equal(
            a.tables[name], b.tables[name], check_dtype=False, rtol=1e-9
        )  # CSV keeps 12 digits
    doc_a, _ = build_report(a)
    doc_b, _ = build_report(b)
    assert render_markdown(doc_a).replace("csv", "pq") == render_markdown(doc_b).replace("csv", "pq")


def test_only_summary(tmp_path: Path) -> None:
    run = make_run_dir(tmp_path / "bare", layers=1, microbatches=1)
    for f in run.iterdir():
        if f.suffix in (".csv", ".parquet"):
            f.unlink()
    write_report(run)
    md = (run / "report.md").read_text()
    assert "No `trace.json`: the run has no `ops` table." in md
    assert {p.name for p in (run / "figures").iterdir()} == {"bytes.png", "expert_load.png"}


def test_missing_summary_is_a_netsim_error(tmp_path: Path) -> None:
    run = make_run_dir(tmp_path / "nosummary", layers=1, microbatches=1)
    (run / "summary.json").unlink()
    with pytest.raises(NetsimError, match=r"summary\.json is missing"):
        write_report(run)
    assert not (run / "report.html").exists()
    with pytest.raises(NetsimError, match="no such directory"):
        write_report(tmp_path / "does-not-exist")


def test_bad_summary_and_bad_table(tmp_path: Path) -> None:
    run = make_run_dir(tmp_path / "bad", layers=1, microbatches=1)
    (run / "summary.json").write_text("[1, 2]")
    with pytest.raises(NetsimError, match="JSON object"):
        write_report(run)
    for text in ("{}", '{"step_time_s": "fast"}', '{"step_time_s": NaN}'):
        (run / "summary.json").write_text(text)
        with pytest.raises(NetsimError, match=r"summary\.json: step_time_s must be a number of seconds"):
            write_report(run)
    assert not (run / "report.html").exists()
    run2 = make_run_dir(tmp_path / "bad2", layers=1, microbatches=1)
    links = pd.read_parquet(run2 / "links.parquet").drop(columns=["peak_utilization"])
    links.to_parquet(run2 / "links.parquet")
    with pytest.raises(NetsimError, match=r"links.parquet: table 'links' lacks column\(s\) peak_utilization"):
        write_report(run2)


def test_failed_report_leaves_previous_report(tmp_path: Path, moe_report: Path) -> None:
    run = tmp_path / "keep"
    shutil.copytree(moe_report, run)
    before = (run / "report.html").read_bytes()
    (run / "ranks.parquet").write_bytes(b"not parquet")
    with pytest.raises(NetsimError, match="cannot read table"):
        write_report(run, trace=False)
    assert (run / "report.html").read_bytes() == before
    assert not [p for p in run.iterdir() if p.name.startswith(".") and p.name != MARKER]  # no temporaries left


def test_many_ranks_are_aggregated(tmp_path: Path) -> None:
    run = make_run_dir(tmp_path / "big", nodes=20, gpus=4, layers=1, microbatches=1, moe=False)
    ranks = pd.read_parquet(run / "ranks.parquet")
    agg, xlabel, _ = aggregate_breakdown(ranks)
    assert len(agg) == 20 and xlabel.startswith("node")
    node3 = ranks[ranks["node"] == 3]
    assert agg.loc[3, "compute"] == pytest.approx(node3["compute_s"].mean())
    # more nodes than bars: contiguous rank groups
    one_node = ranks.assign(node=0)
    agg2, _, _ = aggregate_breakdown(one_node, max_bars=16)
    assert len(agg2) == 16 and agg2.loc[0, "label"] == "0-4"
    assert agg2.loc[0, "idle"] == pytest.approx(ranks["idle_s"].iloc[:5].mean())
    md = render_markdown(build_report(load_run(run))[0])
    assert "80 ranks: each bar is the mean over the ranks of one node" in md
    assert "the timeline shows 8 of them" in md


def test_top_links_order() -> None:
    links = pd.DataFrame(
        {
            "link": ["a", "b", "c", "d"],
            "peak_utilization": [1.0, 1.0, 1.0, 1.0],  # instantaneous: saturated by any flow, not a ranking
            "mean_utilization": [0.4, 0.2, 0.4, 0.1],
            "bytes": [10.0, 5.0, 20.0, 1.0],
            "busy_s": [1.0, 1.0, 4.0, 1.0],
            "capacity_Bps": [25.0, 25.0, 25.0, 25.0],
        }
    )
    top = top_links(links, 3)
    assert list(top["link"]) == ["c", "a", "b"]  # mean utilisation, then bytes
    assert list(top["busy_utilization"]) == pytest.approx([0.2, 0.4, 0.2])  # bytes / (capacity x busy)


def test_windowed_tier_peak_is_the_busiest_window() -> None:
    from netsim.report.utilisation import peak_window_s, tier_table

    # one tier of two 100 B/s links: 100 B over [0, 1) s, then 300 B over [2, 3) s; run of 100 s
    ts = pd.DataFrame(
        {
            "t0_s": [0.0, 2.0],
            "t1_s": [1.0, 3.0],
            "tier": ["leaf", "leaf"],
            "network": ["backend", "backend"],
            "bytes": [100.0, 300.0],
            "capacity_Bps": [200.0, 200.0],
        }
    )
    links = pd.DataFrame(
        {
            "link": ["x", "y"],
            "network": ["backend", "backend"],
            "tier": ["leaf", "leaf"],
            "capacity_Bps": [100.0, 100.0],
            "bytes": [200.0, 200.0],
            "mean_utilization": [0.02, 0.02],
        }
    )
    assert peak_window_s(100.0) == 1.0 and peak_window_s(1e-4) == 10e-6
    row = tier_table(links, ts, makespan_s=100.0).iloc[0]
    assert row["window_s"] == 1.0
    assert row["peak_utilization"] == pytest.approx(300.0 / (200.0 * 1.0))  # the [2, 3) s interval
    row = tier_table(links, ts, makespan_s=300.0).iloc[0]  # a 3 s window holds both intervals
    assert row["peak_utilization"] == pytest.approx(400.0 / (200.0 * 3.0))


def test_layers_per_block_row_is_run_length_encoded(tmp_path: Path) -> None:
    """A pipelined run's summary lists the layers of every block; the report shows them compactly."""
    run = make_run_dir(tmp_path / "blocks", layers=1, microbatches=1)
    summary = json.loads((run / "summary.json").read_text())
    summary["layers_per_block"] = [3, *[4] * 14, 2]
    (run / "summary.json").write_text(json.dumps(summary))
    write_report(run)
    assert "| layers per pipeline block | 3, 4 x 14, 2 |" in (run / "report.md").read_text()
