"""The LocMoE study end to end on a tiny configuration (real lab training, real replays)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

pytest.importorskip("torch")

from netsim.studies.locmoe import StudyConfig, conclude, run_study

pytestmark = pytest.mark.torch

# mechanics only: a 4-step lab has not converged, so the check is switched off here (and tested below)
TINY = StudyConfig(
    topologies=("ascend-910a",),
    nodes=(2,),
    routers=("switch", "locmoe"),
    placements=("contiguous", "eplb"),
    locality=(0.125, 0.875),
    lab_steps=4,
    workload_overrides=("model.layers=4", "model.moe.first_dense=2", "micro_batch_size=1"),
    lab_overrides={
        "batch": 1,
        "seq_len": 16,
        "layers": 1,
        "hidden": 32,
        "ffn_hidden": 32,
        "tokenizer": "byte",
        "max_corpus_bytes": 400_000,
    },
    require_converged=False,
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
    # EP16 over TP8 servers: one EP group spans both servers
    assert set(res.loc[res["routing"] == "lab trace", "ep_nodes"]) == {2}


def test_locality_sweep_moves_bytes_onto_the_node(study) -> None:  # type: ignore[no-untyped-def]
    stat = study.results[study.results["routing"] == "statistical"].set_index("router")
    low, high = stat.loc["locality 0.125"], stat.loc["locality 0.875"]
    assert high["ep_bytes_inter_node"] < low["ep_bytes_inter_node"]
    assert high["ep_bytes_intra_node"] > low["ep_bytes_intra_node"]


def test_report_and_tables_are_written(study) -> None:  # type: ignore[no-untyped-def]
    html = (study.out / "report.html").read_text()
    assert "Conclusion" in html and "http://" not in html and "https://" not in html
    assert "Router convergence" in html and "Expert capacity" in html
    caps = pd.read_csv(study.out / "capacity.csv")
    assert set(caps["capacity"]) == {"none", "1.25", "1.0", "theorem1"}
    for fig in ("breakdown.png", "alltoall.png", "expert_load.png", "locality.png"):
        assert (study.out / "figures" / fig).stat().st_size > 1000
    table = pd.read_csv(study.out / "results.csv")
    assert set(table["router"]) >= {"switch", "locmoe"}


def test_conclusion_is_computed_from_the_numbers() -> None:
    rows = []
    for router, inter, step in (("switch", 8.0, 1.0), ("locmoe", 2.0, 0.8)):
        rows.append(
            {
                "topology": "t",
                "nodes": 4,
                "router": router,
                "placement": "contiguous",
                "routing": "lab trace",
                "step_time_s": step,
                "alltoall_share": 0.1,
                "alltoall_s": 0.1 * step,
                "ep_bytes_inter_node": inter,
                "ep_inter_node_share": inter / 10,
                "expert_load_cv": 0.5,
                "drop_rate": 0.0,
            }
        )
    lines = conclude(pd.DataFrame(rows), StudyConfig(routers=("switch", "locmoe")))
    assert any("LocMoE has the shortest step" in s and "25.0% faster than Switch" in s for s in lines)
    assert any("cross-node EP bytes by -75.0%" in s for s in lines)


def test_resume_reuses_finished_runs(study, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    before = {p.name: (p / "summary.json").stat().st_mtime_ns for p in (study.out / "runs").iterdir()}
    again = run_study(TINY, study.out)
    after = {p.name: (p / "summary.json").stat().st_mtime_ns for p in (study.out / "runs").iterdir()}
    assert before == after
    pd.testing.assert_frame_equal(again.results, study.results)


def test_a_moved_study_resumes_without_rerunning(study, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import shutil

    import yaml

    moved = tmp_path / "elsewhere" / "study"
    shutil.copytree(study.out, moved)
    before = {p.name: (p / "summary.json").stat().st_mtime_ns for p in (moved / "runs").iterdir()}
    again = run_study(TINY, moved)
    after = {p.name: (p / "summary.json").stat().st_mtime_ns for p in (moved / "runs").iterdir()}
    assert before == after and len(before) == 6
    pd.testing.assert_frame_equal(again.results, study.results)
    scen = yaml.safe_load((moved / "runs" / "ascend-910a-n2-switch-contiguous" / "scenario.yaml").read_text())
    trace = scen["scenario"]["options"]["routing_trace"]
    assert trace == "lab/switch/replay_1p25_128.parquet" and (moved / trace).is_file()


def test_the_study_states_its_collective_model(study) -> None:  # type: ignore[no-untyped-def]
    # auto by default, as netsim run; the tiny runs are small enough for exact, which it says why
    assert TINY.collective_model == "auto"
    assert set(study.results["collective_model"]) == {"exact"}
    assert study.results["model_choice"].str.startswith("auto: exact").all()
    report = (study.out / "report.md").read_text()
    assert "Collective model (`--collective-model auto`): auto: exact" in report


def test_switching_the_collective_model_reruns_and_keeps_the_traffic(  # type: ignore[no-untyped-def]
    study, tmp_path: Path
) -> None:
    import dataclasses
    import shutil

    copy = tmp_path / "study"
    shutil.copytree(study.out, copy)  # reuses the lab traces; the runs must be redone
    stream = run_study(dataclasses.replace(TINY, collective_model="stream", exact_check=(2,)), copy)
    assert set(stream.results["collective_model"]) == {"stream"}
    assert set(study.results["collective_model"]) == {"exact"}
    # the exact check replays the contiguous lab-trace rows with exact: the study's own runs here
    check = pd.read_csv(copy / "model_check.csv").set_index("router")
    assert sorted(check.index) == ["locmoe", "switch"] and set(check["collective_model"]) == {"stream"}
    exact = study.results[
        (study.results["placement"] == "contiguous") & (study.results["routing"] == "lab trace")
    ].set_index("router")
    for router in ("switch", "locmoe"):
        assert check.loc[router, "exact_step_time_s"] == pytest.approx(exact.loc[router, "step_time_s"], rel=1e-12)
        assert check.loc[router, "step_error"] == pytest.approx(
            check.loc[router, "step_time_s"] / check.loc[router, "exact_step_time_s"] - 1
        )
    assert (copy / "runs" / "ascend-910a-n2-switch-contiguous-exact" / "summary.json").is_file()
    assert "Collective model against exact" in (copy / "report.md").read_text()
    assert any(line.startswith("The stream model against exact") for line in stream.conclusion)
    # same bytes on the wire, step times within the stream model's error; EPLB's redundant experts
    # add gradient all-reduces among the 2-3 ranks holding a replica (issue 18 item 16), rings that
    # mix HCCS, PCIe and RoCE, where the stream model is off by up to ~20% on one collective
    pd.testing.assert_series_equal(stream.results["ep_bytes_inter_node"], study.results["ep_bytes_inter_node"])
    err = abs(stream.results["step_time_s"] / study.results["step_time_s"] - 1)
    eplb = study.results["placement"] == "eplb"
    assert (err[~eplb] < 0.05).all() and (err[eplb] < 0.10).all()


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


def test_windowed_capped_trace_is_what_the_runs_replay(study) -> None:  # type: ignore[no-untyped-def]
    import yaml

    from netsim.moe import read_routing_trace

    scen = yaml.safe_load((study.out / "runs" / "ascend-910a-n2-locmoe-contiguous" / "scenario.yaml").read_text())
    path = study.out / scen["scenario"]["options"]["routing_trace"]  # relative to the study directory
    tr = read_routing_trace(path)
    assert tr.meta.extra["window"] == [3, 4] and tr.steps == [0]  # final quarter of 4 steps
    # LocMoE's replay capacity: factor 1.25 of 128 tokens per rank over 16 experts = 10 tokens
    assert tr.meta.extra["replay_capacity_tokens"] == 10
    tok, drp = tr.counts(0, 0)
    assert tok.max() <= 10 and (tok + drp).sum(axis=1).tolist() == [tr.meta.tokens_per_rank] * 16
    assert "overlap.ep_overlap_slices=2" in scen["scenario"]["workload_overrides"]
    conv = pd.read_csv(study.out / "convergence.csv")
    assert set(conv["router"]) == {"switch", "locmoe"} and not conv["converged"].any()


def test_study_refuses_a_router_that_has_not_converged(tmp_path: Path) -> None:
    import dataclasses

    from netsim.errors import NetsimError

    with pytest.raises(NetsimError, match=r"--lab-steps: router lab for switch: 4 steps are too few") as exc:
        run_study(dataclasses.replace(TINY, require_converged=True), tmp_path / "a")
    assert "\n" not in str(exc.value)


def test_study_refuses_a_finished_lab_run_that_did_not_converge(study, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import dataclasses
    import shutil

    from netsim.errors import NetsimError

    copy = tmp_path / "s"
    shutil.copytree(study.out, copy)  # the study folder (netsim's marker) with its lab runs
    for f in copy.glob("results.*"):
        f.unlink()
    with pytest.raises(NetsimError, match="router lab for switch did not converge") as exc:
        run_study(dataclasses.replace(TINY, require_converged=True), copy)
    assert "no conclusion is drawn" in str(exc.value) and "\n" not in str(exc.value)
    assert not (copy / "results.csv").exists()


def test_cli_refuses_an_unconvergeable_lab_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from netsim.cli import main

    with pytest.raises(SystemExit) as exc:
        main(
            [
                "study",
                "locmoe",
                "--topologies",
                "ascend-910a",
                "--nodes",
                "2",
                "--lab-steps",
                "20",
                "--out",
                str(tmp_path / "s"),
            ]
        )
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]  # after the progress line of a piped run
    assert err.startswith("error: --lab-steps:") and "too few" in err
    with pytest.raises(SystemExit) as exc:
        main(["study", "locmoe", "--capacity", "locmoe=lots", "--out", str(tmp_path / "s")])
    assert exc.value.code == 2
    assert "capacity must be none, theorem1 or a factor" in capsys.readouterr().err


def test_capped_trace_rescales_then_caps_by_hand() -> None:
    import numpy as np

    from netsim.moe import RoutingTrace, TraceMeta
    from netsim.studies.lab_traces import capacity_effect, capacity_tokens, capped_trace, parse_capacity

    meta = TraceMeta(experts=2, ep=2, ranks_per_node=1, hidden=8, top_k=1, router="switch", tokens_per_rank=8)
    tok = np.array([[5, 1], [2, 2]])
    drp = np.array([[2, 0], [0, 4]])
    tr = RoutingTrace.from_counts([(0, 0, 0, tok, drp)], meta)
    # requested [[7, 1], [2, 6]] rescaled to 4 tokens per rank: [[3.5, .5] -> [4, 0]? largest remainder:
    # floor [3, 0], one left to the larger remainder (0.5 vs 0.5: lowest column) -> [4, 0]; [1, 3]
    out = capped_trace(tr, tokens_per_rank=4, capacity=3)
    kept, dropped = out.counts(0, 0)
    assert kept.tolist() == [[3, 0], [1, 3]] and dropped.tolist() == [[1, 0], [0, 0]]
    assert out.meta.tokens_per_rank == 4 and out.meta.extra["replay_capacity_tokens"] == 3
    assert capacity_tokens(parse_capacity("1.25", field="x"), tokens=4, experts=2, top_k=1, hidden=8) == 3
    assert capacity_tokens("none", tokens=4, experts=2, top_k=1, hidden=8) is None
    assert capacity_tokens("theorem1", tokens=4096, experts=16, top_k=1, hidden=5120) == 2
    eff = capacity_effect(out, hidden=10, bytes_per_element=2.0, capacity=3)
    assert eff["busiest_expert_tokens"] == 4 and eff["dispatch_bytes_dropless"] == 7 * 10 * 2
    assert eff["dispatch_bytes_padded"] == 4 * 3 * 10 * 2 and eff["drop_rate"] == pytest.approx(1 / 8)


def test_the_study_trains_the_lab_default_model_and_quick_a_small_one() -> None:
    """Issue 16: the study's routers come from a d >= 256 lab that can converge; --quick stays small."""
    from netsim.moe.lab import LabConfig

    full, quick = StudyConfig(), StudyConfig.quick()
    for cfg in (full, quick):
        for router in full.routers:
            lab = LabConfig(router=router, steps=cfg.lab_steps, **cfg.lab_overrides)
            assert lab.convergence_problem() is None
    assert full.lab_overrides["hidden"] == LabConfig().hidden >= 256
    assert full.lab_overrides["ffn_hidden"] == LabConfig().ffn_hidden
    assert quick.lab_overrides["hidden"] < 256 and quick.lab_steps < full.lab_steps
    assert full.run_reports and not quick.run_reports  # --quick: no per-run reports (issue 20: under 60 s)


def test_a_reused_lab_run_is_judged_by_the_current_criterion(study, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A lab.json written under another criterion gets today's verdict, recomputed from the run."""
    import shutil

    from netsim.moe.lab import LabConfig, lab_convergence
    from netsim.studies.lab_traces import converged_trace

    copy = tmp_path / "s"
    shutil.copytree(study.out, copy)
    path = copy / "lab" / "switch" / "lab.json"
    summary = json.loads(path.read_text())
    summary["convergence"] = {"converged": True, "reasons": [], "window": [0, 4]}  # a stale verdict
    path.write_text(json.dumps(summary))
    cfg = LabConfig(router="switch", steps=TINY.lab_steps, **TINY.lab_overrides)
    t = converged_trace(cfg, copy, tokens_per_rank=8, capacity="none", hidden=64, require_converged=False)
    fresh = lab_convergence(copy / "lab" / "switch")
    assert t.convergence == fresh and not fresh["converged"]  # 4 steps: too few
    assert json.loads(path.read_text())["convergence"] == json.loads(json.dumps(fresh))


def test_labs_trained_side_by_side_equal_labs_trained_alone(study, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The study trains its routers' lab runs in parallel processes: same tables as one by one
    (the module's study ran with as many workers as this machine has cores)."""
    from netsim.moe.lab import LabConfig, run_lab
    from netsim.studies.lab_traces import train_labs

    cfgs = [LabConfig(router=r, steps=TINY.lab_steps, **TINY.lab_overrides) for r in TINY.routers]
    assert train_labs(cfgs, tmp_path / "par", workers=2, require_converged=False) == 2
    assert train_labs(cfgs, tmp_path / "par", workers=2, require_converged=False) == 0  # reused
    for cfg in cfgs:
        run_lab(cfg, tmp_path / "alone" / cfg.router)
        for name in ("routing.parquet", "losses.parquet"):
            alone = pd.read_parquet(tmp_path / "alone" / cfg.router / name)
            pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "par" / "lab" / cfg.router / name), alone)
            if name == "routing.parquet":
                pd.testing.assert_frame_equal(pd.read_parquet(study.out / "lab" / cfg.router / name), alone)


def test_runs_replayed_side_by_side_equal_a_run_replayed_alone(study, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The study replays its configurations in parallel processes: the same summary as alone."""
    import shutil

    from netsim.studies.locmoe import _run_one

    copy = tmp_path / "s"
    shutil.copytree(study.out, copy)
    name = "ascend-910a-n2-switch-contiguous"
    shutil.rmtree(copy / "runs" / name)
    saved = (study.out / "runs" / name / "scenario.yaml").read_text()
    import yaml

    scen = yaml.safe_load(saved)["scenario"]
    opts = {k: v for k, v in scen["options"].items() if k != "collective_model"}
    extra = scen["workload_overrides"][len(TINY.workload_overrides) :]
    _run_one(TINY, "ascend-910a", 2, extra, opts, copy / "runs" / name, copy)
    for f in ("summary.json", "scenario.yaml"):
        assert (copy / "runs" / name / f).read_bytes() == (study.out / "runs" / name / f).read_bytes()
