"""The layout search (netsim.studies.layouts, `netsim study layouts`): enumeration, screening, ranking."""

from __future__ import annotations

from pathlib import Path

import pytest

from netsim.errors import NetsimError
from netsim.studies.layouts import Layout, LayoutSpace, search_layouts
from tests.cli_run import run_cli

#: the built-in scenario (mixtral-mini on 2 DGX H100) with 3 GB of HBM, so that some layouts do not fit
SMALL_HBM = ["topology.accelerator.memory=3GB"]
SPACE = {"tp": (1, 2), "pp": (1, 2), "ep": (8,), "mbs": (1,), "recompute": ("none", "full")}
SPACE_ARGS = ["--tp", "1,2", "--pp", "1,2", "--ep", "8", "--mbs", "1", "--recompute", "none,full"]


def _space(**kw: tuple) -> LayoutSpace:
    base = {"tp": (1,), "pp": (1,), "cp": (1,), "ep": (1,), "vp": (1,), "mbs": (1,), "recompute": ("none",)}
    return LayoutSpace(**{**base, **kw})


@pytest.mark.parametrize(
    ("kw", "field"),
    [({"tp": ()}, "--tp"), ({"pp": (0,)}, "--pp"), ({"mbs": (2, 2)}, "--mbs"), ({"recompute": ()}, "--recompute")],
)
def test_space_refuses_bad_lists(kw: dict, field: str) -> None:
    with pytest.raises(NetsimError) as exc:
        _space(**kw)
    assert exc.value.field == field


def test_unknown_dimension_is_refused(tmp_path: Path) -> None:
    with pytest.raises(NetsimError, match="unknown layout dimension 'dp'; allowed: tp, pp, cp, ep, vp, mbs"):
        search_layouts(None, [], tmp_path / "x", space={"dp": (1,)})
    assert not (tmp_path / "x").exists()


def test_space_pairs_virtual_chunks_only_with_a_pipeline() -> None:
    layouts = _space(pp=(1, 4), vp=(1, 2)).layouts()
    assert [(x.pp, x.vp) for x in layouts] == [(1, 1), (4, 1), (4, 2)]
    # a workload's VP8 still lets the search try PP1 (with VP1)
    assert [(x.pp, x.vp) for x in _space(pp=(1, 4), vp=(8,)).layouts()] == [(1, 1), (4, 8)]


def test_layout_sets_the_interleaved_schedule_for_virtual_chunks() -> None:
    assert Layout(1, 4, 1, 1, 2, 1, "none").values("1f1b")["workload.schedule.name"] == "interleaved-1f1b"
    assert Layout(1, 4, 1, 1, 1, 1, "none").values("interleaved-1f1b")["workload.schedule.name"] == "1f1b"
    assert Layout(1, 4, 1, 1, 1, 1, "none").values("gpipe")["workload.schedule.name"] == "gpipe"


@pytest.fixture(scope="module")
def search(tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("layouts") / "search"
    return search_layouts(None, SMALL_HBM, out, space=SPACE, workers=1)


def test_screening_keeps_what_fits_with_least_recomputation(search) -> None:
    by = {c.layout.label: c for c in search.candidates}
    # TP1 PP1 holds the whole stage's optimizer state and activations: out of 3 GB either way
    assert by["TP1 PP1 CP1 EP8 VP1 MBS1 none"].status == "oom"
    assert by["TP1 PP1 CP1 EP8 VP1 MBS1 full"].status == "oom"
    assert "does not fit" in by["TP1 PP1 CP1 EP8 VP1 MBS1 none"].reason
    # every other shape fits without recomputation, so its full-recompute variant is dominated
    for label in ("TP2 PP1", "TP1 PP2", "TP2 PP2"):
        assert by[f"{label} CP1 EP8 VP1 MBS1 none"].status == "ran"
        full = by[f"{label} CP1 EP8 VP1 MBS1 full"]
        assert full.status == "dominated"
        assert full.peak_memory_bytes < by[f"{label} CP1 EP8 VP1 MBS1 none"].peak_memory_bytes
    assert search.counts() == {"ran": 3, "oom": 2, "dominated": 3}


def test_ranking_is_by_step_and_holds_the_global_batch(search) -> None:
    ranked = search.ranked
    assert [c.rank for c in ranked] == [1, 2, 3]
    steps = [c.step_time_s for c in ranked]
    assert steps == sorted(steps)
    tokens = 16 * 2048  # the built-in scenario's global batch, whatever the layout
    for c in ranked:
        assert c.tokens_per_s_per_gpu == pytest.approx(tokens / c.step_time_s / 16)
        assert c.dp == 16 // (c.layout.tp * c.layout.pp)
        assert 0 < c.mfu < 1


def test_own_layout_matches_netsim_run(search) -> None:
    """The search changes nothing of the scenario's own layout: its step is `netsim run`'s."""
    from netsim.config.scenario import load_scenario
    from netsim.run import prepare, simulate, summarize_replay

    own = search.base()
    assert own is not None and own.layout.label == "TP2 PP2 CP1 EP8 VP1 MBS1 none"
    prep = prepare(load_scenario(None, SMALL_HBM))
    summary, _ = summarize_replay(prep, *simulate(prep))
    assert own.step_time_s == pytest.approx(float(summary["step_time_s"]), rel=1e-12)


def test_files_and_cli_are_byte_identical(search, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli"
    sets = [a for s in SMALL_HBM for a in ("--set", s)]
    code, stdout, err = run_cli(["study", "layouts", *sets, *SPACE_ARGS, "--workers", "1", "-o", str(out)], capsys)
    assert code == 0, err
    assert "8 layouts on 16 GPUs at a global batch of 16 sequences: 3 ran, 2 oom, 3 dominated" in stdout
    assert "The scenario's own layout (TP2 PP2 CP1 EP8 VP1 MBS1 none) ranks" in stdout
    for name in ("layouts.csv", "report.md", "report.html", "figures/ranking.png"):
        assert (out / name).read_bytes() == (search.out / name).read_bytes(), name
    report = (out / "report.md").read_text()
    assert "## Ranking" in report
    # the two out-of-memory layouts in one row, with what they need against the 3 GB (2.8 GiB)
    assert "| oom | does not fit: the worst rank needs 3.2-3.6 GiB, HBM 2.8 GiB | 2 |" in report


def test_allow_oom_simulates_what_does_not_fit_and_marks_it(tmp_path: Path) -> None:
    result = search_layouts(None, SMALL_HBM, tmp_path / "oom", space=SPACE, workers=1, allow_oom=True)
    by = {c.layout.label: c for c in result.candidates}
    over = by["TP1 PP1 CP1 EP8 VP1 MBS1 none"]
    assert over.status == "ran" and over.fits is False and over.rank is not None
    assert by["TP1 PP1 CP1 EP8 VP1 MBS1 full"].status == "dominated"  # none is run instead: it recomputes less
    assert result.counts() == {"ran": 4, "dominated": 4}
    report = (tmp_path / "oom" / "report.md").read_text()
    assert "3.6 (does not fit)" in report and "1 of these layouts do not fit" in report


def test_the_scenarios_allow_oom_does_not_skip_the_memory_screen(tmp_path: Path) -> None:
    """A scenario that allows itself to overflow HBM is still screened: only --allow-oom runs those."""
    with pytest.raises(NetsimError, match="3 layouts pass the screening, more than --max-runs 1"):
        search_layouts(None, [*SMALL_HBM, "options.allow_oom=true"], tmp_path / "s", space=SPACE, max_runs=1)


def test_bad_input_is_one_line_and_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "x"
    cases = [
        (["--tp", "two"], "--tp"),
        (["-t", "dgx-h100", "-n", "1", "-w", "gpt-dense", "--ep", "2"], "no experts"),
        ([*SPACE_ARGS, "--max-runs", "2"], "4 layouts pass the screening, more than --max-runs 2"),
        (["--set", "topology.accelerator.memory=0.5GB", *SPACE_ARGS], "no layout of the 8 fits"),
        (["--tp", "3", "--pp", "1", "--ep", "8", "--mbs", "1", "--recompute", "none"], "no layout of the 1 fits"),
        ([*SPACE_ARGS, "--workers", "0"], "--workers: must be >= 1 (got 0)"),
        (["--recompute", "none,bogus"], "--recompute: unknown recompute mode 'bogus'; allowed: none, selective"),
        (["--tp", "1,,2"], "--tp: '1,,2' has an empty item"),
    ]
    for args, text in cases:
        code, _stdout, err = run_cli(["study", "layouts", *args, "-o", str(out)], capsys)
        assert code == 2, (args, err)
        assert text in err and len(err.strip().splitlines()) == 1, err
        assert not out.exists()


def test_example_scenario_is_the_validation_case() -> None:
    """examples/scenarios/narayanan-gpt-3.6b.yaml (docs/sections/layouts.md) is the validated case."""
    from netsim.config.scenario import load_scenario
    from netsim.run import load_scenario_workload
    from netsim.validation.sources import load_source
    from netsim.validation.training import scenario_of

    root = Path(__file__).resolve().parents[2]
    src = load_source(root / "netsim/validation/data/training/narayanan-2021-table1.yaml")
    case = next(c for c in src.cases if c.id == "gpt-3-6b")
    validated = scenario_of(src, case)
    example = load_scenario(root / "examples/scenarios/narayanan-gpt-3.6b.yaml")
    assert load_scenario_workload(example).model_dump() == load_scenario_workload(validated).model_dump()
    for key in ("topology", "nodes", "seed", "steps", "options"):
        assert getattr(example, key) == getattr(validated, key), key


def test_documented_search_is_what_netsim_prints(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The first example of docs/sections/layouts.md: its command's console output, line for line."""
    doc = (Path(__file__).resolve().parents[2] / "docs" / "sections" / "layouts.md").read_text()
    command = doc.split("```bash\n", 1)[1].split("\n", 1)[0]
    shown = doc.split("```text\n", 1)[1].split("```", 1)[0]
    args = command.split()[1:]
    args[args.index("-o") + 1] = str(tmp_path / "layouts")
    code, stdout, err = run_cli(args, capsys)
    assert code == 0, err
    printed = [line for line in stdout.splitlines() if not line.startswith("layouts: ")]
    assert printed == shown.rstrip("\n").splitlines()


def test_trust_table_is_the_committed_validation() -> None:
    """docs/sections/layouts.md "How far to trust a ranking" shows the committed validation's errors."""
    import pandas as pd

    root = Path(__file__).resolve().parents[2]
    doc = (root / "docs" / "sections" / "layouts.md").read_text()
    table = doc.split("### How far to trust a ranking", 1)[1].split("What these rows show", 1)[0]
    shown = [line.rsplit("|", 2)[1].strip() for line in table.splitlines() if line.startswith("|") and "%" in line]
    results = pd.read_csv(root / "reports" / "validation" / "results.csv")
    cases = [
        ("megatron-bridge-h100-sft", "llama3-70b-sft-tp4-pp4"),
        ("megatron-bridge-h100-sft", "llama3-70b-sft-recompute-core-attn-layernorm"),
        ("megatron-bridge-h100-sft", "llama3-70b-sft-tp4-pp8"),
        ("megatron-bridge-h100-sft", "llama3-70b-sft-recompute-mlp"),
        ("megatron-bridge-h100-sft", "llama3-70b-sft-recompute-mlp-core-attn"),
        ("megatron-bridge-h100-sft", "llama3-70b-sft-tp8-pp4"),
        ("korthikanti-2022-abstract", "gpt-530b-2240-gpus"),
        ("korthikanti-2022-abstract", "gpt-530b-2240-gpus-full-recompute"),
        ("megatron-moe-modelzoo-h100", "ep32-pp8-deepep"),
        ("megatron-moe-modelzoo-h100", "ep32-pp8-deepep-1f1b-overlap"),
        ("megatron-moe-modelzoo-h100", "ep8-fsdp-deepep"),
        ("megatron-moe-modelzoo-h100", "ep8-pp32-alltoall"),
        ("megatron-moe-modelzoo-h100", "tp4-ep8-pp8-deepep"),
    ]
    errors = []
    for source, case in cases:
        row = results[(results["source"] == source) & (results["case"] == case) & (results["kind"] == "training")]
        row = row[row["metric"] != "peak_memory_gib"]
        errors.append(f"{100 * float(row['rel_error'].iloc[0]):+.1f}%")
    assert shown == errors
