"""Table helpers: run names, multi-step all-to-all, external nodes in the traffic matrix, real runs."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from report_checks import external_references, html_figures, parse_html

from netsim.report.figures import alltoall_per_layer, intra_inter_by_class, node_label, node_matrix
from netsim.report.perfetto import check_nesting
from netsim.report.run_report import write_report
from netsim.report.tables import RunData, run_name


def test_run_name_of_an_atomic_temporary_directory(tmp_path: Path) -> None:
    assert run_name(tmp_path / ".locmoe-64.tmp-a1b2_c3d4") == "locmoe-64"
    assert run_name(tmp_path / "locmoe-64") == "locmoe-64"
    assert run_name(tmp_path / ".hidden") == ".hidden"
    assert RunData(tmp_path / ".x.tmp-zz9", {}).name == "x"


def test_alltoall_per_layer_is_per_step() -> None:
    rows = []
    for step in (0, 1):
        for mb in (0, 1):
            for phase, dur in (("fwd-dispatch", 2.0), ("fwd-combine", 3.0)):
                rows.append(
                    {
                        "step": step,
                        "layer": 5,
                        "microbatch": mb,
                        "phase": phase,
                        "start_s": 0.0,
                        "end_s": dur * (1 + step),
                        "duration_s": dur * (1 + step),
                        "bytes": 100.0,
                    }
                )
    per = alltoall_per_layer(pd.DataFrame(rows)).set_index("phase")
    # dispatch: micro-batches 2 + 2 in step 0, 4 + 4 in step 1 -> (4 + 8) / 2 steps
    assert per.loc["fwd-dispatch", "duration_s"] == pytest.approx(6.0)
    assert per.loc["fwd-combine", "duration_s"] == pytest.approx(9.0)
    assert per.loc["fwd-dispatch", "bytes"] == pytest.approx(200.0)
    assert per.loc["fwd-dispatch", "count"] == pytest.approx(2.0)


def test_traffic_outside_nodes_is_inter_node() -> None:
    tm = pd.DataFrame(
        {
            "src_node": [-1, 0, 0, 1],
            "dst_node": [-1, 0, 1, 1],
            "traffic_class": ["storage", "ep", "ep", "dp"],
            "bytes": [5.0, 7.0, 11.0, 13.0],
        }
    )
    split = intra_inter_by_class(tm)
    assert split.loc["storage", "intra-node"] == 0 and split.loc["storage", "inter-node"] == 5
    assert split.loc["ep", "intra-node"] == 7 and split.loc["ep", "inter-node"] == 11
    assert list(split.index) == ["dp", "ep", "storage"]
    mat = node_matrix(tm)
    assert [node_label(n) for n in mat.index] == ["ext", "0", "1"]
    assert mat.loc[0, 1] == 11 and mat.loc[1, 0] == 0


def test_report_of_a_real_run(tmp_path: Path) -> None:
    """The default scenario through the real replay (netsim.run), whose run writes the report."""
    run_mod = pytest.importorskip("netsim.run")
    from netsim.config.scenario import load_scenario

    out = tmp_path / "default"
    run_mod.run_scenario(load_scenario(None), out, report=write_report)
    html = (out / "report.html").read_text()
    doc = parse_html(html)
    assert doc.errors == [] and external_references(doc) == []
    assert "<title>netsim report: default</title>" in html
    figs = html_figures(doc)
    assert {"figures/breakdown.png", "figures/timeline.png", "figures/bytes.png"} <= set(figs)
    for rel, data in figs.items():
        assert (out / rel).read_bytes() == data
    md = (out / "report.md").read_text()
    assert "## Notes" not in md  # the default scenario writes every table
    trace = json.loads((out / "trace.json").read_text())
    assert check_nesting(trace["traceEvents"]) == []
    summary = json.loads((out / "summary.json").read_text())
    assert len([e for e in trace["traceEvents"] if e["ph"] == "X"]) == trace["otherData"]["ops_total"]
    assert trace["otherData"]["topology"] == summary["topology"]
