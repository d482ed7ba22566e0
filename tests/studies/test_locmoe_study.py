"""The LocMoE study end to end on a tiny configuration (real lab training, real replays)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

pytest.importorskip("torch")

from netsim.studies.locmoe import StudyConfig, conclude, run_study

pytestmark = pytest.mark.torch

TINY = StudyConfig(
    topologies=("ascend-910a",), nodes=(2,), routers=("switch", "locmoe"), placements=("contiguous", "eplb"),
    locality=(0.125, 0.875), lab_steps=4,
    workload_overrides=("model.layers=4", "model.moe.first_dense=2", "micro_batch_size=1"),
    lab_overrides={"batch": 1, "seq_len": 16, "layers": 1},
)


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    out = tmp_path_factory.mktemp("study")
    return run_study(TINY, out)


def test_every_configuration_has_a_complete_run(study) -> None:  # type: ignore[no-untyped-def]
    res = study.results
    assert len(res) == 2 * 2 + 2
    for name in ("switch", "locmoe"):
        assert (study.out / "lab" / name / "routing.parquet").is_file()
    for run in (study.out / "runs").iterdir():
        summary = json.loads((run / "summary.json").read_text())
        parts = summary["breakdown_s"]
        assert sum(parts.values()) == pytest.approx(summary["step_time_s"], rel=1e-6)
    assert (res["step_time_s"] > 0).all()


def test_locality_sweep_moves_bytes_onto_the_node(study) -> None:  # type: ignore[no-untyped-def]
    stat = study.results[study.results["routing"] == "statistical"].set_index("router")
    low, high = stat.loc["locality 0.125"], stat.loc["locality 0.875"]
    assert high["ep_bytes_inter_node"] < low["ep_bytes_inter_node"]
    assert high["ep_bytes_intra_node"] > low["ep_bytes_intra_node"]


def test_report_and_tables_are_written(study) -> None:  # type: ignore[no-untyped-def]
    html = (study.out / "report.html").read_text()
    assert "Conclusion" in html and "http://" not in html and "https://" not in html
    for fig in ("breakdown.png", "alltoall.png", "expert_load.png", "locality.png"):
        assert (study.out / "figures" / fig).stat().st_size > 1000
    table = pd.read_csv(study.out / "results.csv")
    assert set(table["router"]) >= {"switch", "locmoe"}


def test_conclusion_is_computed_from_the_numbers() -> None:
    rows = []
    for router, inter, step in (("switch", 8.0, 1.0), ("locmoe", 2.0, 0.8)):
        rows.append({"topology": "t", "nodes": 4, "router": router, "placement": "contiguous",
                     "routing": "lab trace", "step_time_s": step, "alltoall_share": 0.1, "alltoall_s": 0.1 * step,
                     "ep_bytes_inter_node": inter, "ep_inter_node_share": inter / 10, "expert_load_cv": 0.5,
                     "drop_rate": 0.0})
    lines = conclude(pd.DataFrame(rows), StudyConfig(routers=("switch", "locmoe")))
    assert any("LocMoE has the shortest step" in s and "25.0% faster than Switch" in s for s in lines)
    assert any("cross-node EP bytes by -75.0%" in s for s in lines)


def test_resume_reuses_finished_runs(study, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    before = {p.name: (p / "summary.json").stat().st_mtime_ns for p in (study.out / "runs").iterdir()}
    again = run_study(TINY, study.out)
    after = {p.name: (p / "summary.json").stat().st_mtime_ns for p in (study.out / "runs").iterdir()}
    assert before == after
    pd.testing.assert_frame_equal(again.results, study.results)


def test_switching_the_collective_model_reruns_and_keeps_the_traffic(  # type: ignore[no-untyped-def]
        study, tmp_path: Path) -> None:
    import dataclasses
    import shutil

    copy = tmp_path / "study"
    shutil.copytree(study.out, copy)  # reuses the lab traces; the runs must be redone
    stream = run_study(dataclasses.replace(TINY, collective_model="stream"), copy)
    assert set(stream.results["collective_model"]) == {"stream"}
    assert set(study.results["collective_model"]) == {"exact"}
    # same bytes on the wire, step times within the stream model's error
    pd.testing.assert_series_equal(stream.results["ep_bytes_inter_node"], study.results["ep_bytes_inter_node"])
    assert (abs(stream.results["step_time_s"] / study.results["step_time_s"] - 1) < 0.05).all()


def test_unknown_collective_model_is_rejected() -> None:
    import dataclasses

    from netsim.errors import NetsimError
    from netsim.studies.locmoe import check_config

    with pytest.raises(NetsimError, match="collective model"):
        check_config(dataclasses.replace(TINY, collective_model="fluid"))


def test_eplb_rows_use_replicas_and_differ_from_contiguous(study) -> None:  # type: ignore[no-untyped-def]
    # with one expert per rank and no replicas EPLB could only permute experts: the study gives
    # it redundant slots, so its traffic differs from the contiguous placement's
    lab = study.results[study.results["routing"] == "lab trace"]
    for router, g in lab.groupby("router"):
        by = g.set_index("placement")
        assert by.loc["eplb", "alltoall_s"] != by.loc["contiguous", "alltoall_s"], router
    scen = (study.out / "runs" / "ascend-910a-n2-switch-eplb" / "scenario.yaml").read_text()
    assert "placement.redundant_experts=16" in scen
