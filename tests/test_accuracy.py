"""netsim's record on published runs, by regime (netsim.accuracy): the errors, the shipped
record and what every run reports."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest

from netsim.accuracy import (
    ACCURACY_COLUMNS,
    ATTENTION_BOUND,
    accuracy_for,
    accuracy_line,
    load_accuracy,
    main,
    model_kind,
    regime_accuracy,
    step_error,
    write_accuracy,
)
from netsim.config.workload import load_workload
from netsim.errors import SpecError
from netsim.run import validation_accuracy
from netsim.topology import load_topology
from netsim.validation.report import format_summary
from tests.cli_run import run_cli

RESULTS = Path(__file__).resolve().parent.parent / "reports" / "validation" / "results.csv"


def _row(case: str, metric: str, err: float, *, acc: str = "H100", dtype: str = "bf16", kind: str = "dense", **kw):
    return {
        "source": "src",
        "case": case,
        "kind": "training",
        "metric": metric,
        "rel_error": err,
        "known_gap": "",
        "accelerator": acc,
        "dtype": dtype,
        "model_kind": kind,
        **kw,
    }


def test_step_error_reads_a_throughput_as_the_inverse_of_the_step() -> None:
    assert step_error("step_time_s", -0.2) == pytest.approx(-0.2)
    # 25% more tokens/s than measured is a step 20% shorter
    for metric in ("tokens_per_s_per_gpu", "tflops_per_gpu", "mfu"):
        assert step_error(metric, 0.25) == pytest.approx(-0.2)
    assert step_error("tokens_per_s_per_gpu", -0.2) == pytest.approx(0.25)
    assert step_error("peak_memory_gib", 0.1) is None
    assert step_error("step_time_s", math.nan) is None


def test_regime_statistics_by_hand() -> None:
    rows = [
        _row("a", "step_time_s", -0.20),
        _row("b", "tokens_per_s_per_gpu", 0.25),  # step -0.2
        _row("c", "mfu", -0.05 / 1.05),  # step +0.05
        _row("d", "step_time_s", 0.5, dtype="fp8"),
        _row("e", "peak_memory_gib", 0.3),  # not a step
        _row("f", "step_time_s", -0.9, known_gap="not modelled"),  # a known gap
        {**_row("g", "step_time_s", -0.9), "kind": "layer"},  # not a training row
        _row("h", "step_time_s", -0.9, acc=""),  # no regime
    ]
    recs = regime_accuracy(rows)
    assert [(a.accelerator, a.dtype, a.model_kind, a.runs) for a in recs] == [
        ("H100", "bf16", "dense", 3),
        ("H100", "fp8", "dense", 1),
    ]
    bf16 = recs[0]
    assert bf16.mean_step_error == pytest.approx((-0.2 - 0.2 + 0.05) / 3)
    assert bf16.rms_step_error == pytest.approx(math.sqrt((0.04 + 0.04 + 0.0025) / 3))
    assert (bf16.min_step_error, bf16.max_step_error) == pytest.approx((-0.2, 0.05))
    assert bf16.within_10pct == 1
    assert bf16.cases == ("src/a", "src/b", "src/c")


def test_write_and_load_round_trip(tmp_path: Path) -> None:
    recs = regime_accuracy([_row("a", "step_time_s", -0.1), _row("b", "step_time_s", 0.3, kind="moe")])
    path = tmp_path / "acc.csv"
    write_accuracy(recs, path)
    with path.open() as f:
        assert next(csv.reader(f)) == list(ACCURACY_COLUMNS)
    back = load_accuracy(path)
    assert [a.as_dict() for a in back] == [a.as_dict() for a in recs]
    assert accuracy_for("H100", "bf16", "moe", back) is back[1]
    assert accuracy_for("A100", "bf16", "moe", back) is None


def test_the_shipped_record_is_the_one_the_committed_validation_results_give() -> None:
    """After a validation run: python -m netsim.accuracy reports/validation/results.csv."""
    with RESULTS.open(newline="") as f:
        derived = regime_accuracy(list(csv.DictReader(f)))
    shipped = load_accuracy()
    assert [(a.accelerator, a.dtype, a.model_kind, a.runs, a.within_10pct, a.cases) for a in shipped] == [
        (a.accelerator, a.dtype, a.model_kind, a.runs, a.within_10pct, a.cases) for a in derived
    ]
    for s, d in zip(shipped, derived, strict=True):
        assert (s.mean_step_error, s.rms_step_error, s.min_step_error, s.max_step_error) == pytest.approx(
            (d.mean_step_error, d.rms_step_error, d.min_step_error, d.max_step_error), abs=1e-6
        )
    # the validation report's summary carries the same record, and netsim validate prints it
    summary = json.loads((RESULTS.parent / "summary.json").read_text())
    assert [(r["accelerator"], r["dtype"], r["model_kind"], r["runs"]) for r in summary["accuracy_by_regime"]] == [
        (a.accelerator, a.dtype, a.model_kind, a.runs) for a in derived
    ]
    printed = [line for line in format_summary(summary) if line.startswith("regime ")]
    assert len(printed) == len(derived)
    a = derived[0]
    assert printed[0].startswith(f"regime {a.accelerator} {a.dtype} {a.model_kind}: {a.runs} runs, step error mean ")


def test_the_line_says_how_far_and_which_way_or_that_nothing_validates_it() -> None:
    rec = regime_accuracy([_row("a", "step_time_s", -0.2), _row("b", "step_time_s", 0.1)])[0]
    line = accuracy_line("H100", "bf16", "dense", rec)
    assert "2 published H100 bf16 dense runs" in line
    assert "5.0% shorter than measured on average" in line
    assert "from -20.0% to +10.0%; 1 of 2 within 10%" in line
    assert "no published Ascend-910A fp16 moe run" in accuracy_line("Ascend-910A", "fp16", "moe", None)


def test_a_run_reports_its_regime() -> None:
    h100 = validation_accuracy(load_topology("dgx-h100", nodes=1), load_workload("gpt-dense"))
    assert (h100["accelerator"], h100["dtype"], h100["model_kind"]) == ("H100-SXM5-80GB", "bf16", "dense")
    shipped = accuracy_for("H100-SXM5-80GB", "bf16", "dense")
    assert shipped is not None and h100["runs"] == shipped.runs > 0
    assert h100["line"].startswith(f"validated: {shipped.runs} published H100-SXM5-80GB bf16 dense runs")
    ascend = validation_accuracy(load_topology("ascend-910a", nodes=1), load_workload("locmoe-pangu"))
    assert ascend["runs"] == 0 and "mean_step_error" not in ascend
    assert ascend["line"].startswith("validated: no published Ascend-910A")


def test_a_step_the_attention_core_dominates_is_its_own_regime() -> None:
    """Attention the busiest rank's largest kernel class: ``dense attention-bound``; a tie counts,
    GEMMs ahead do not, and no kernel tally leaves the plain kind."""
    assert model_kind(False, {"attention": 0.41, "gemm": 0.40, "other": 0.11}) == f"dense {ATTENTION_BOUND}"
    assert model_kind(True, {"attention": 2.0, "gemm": 2.0}) == f"moe {ATTENTION_BOUND}"
    assert model_kind(False, {"attention": 0.25, "gemm": 0.52}) == "dense"
    assert model_kind(False, {"gemm": 1.0}) == model_kind(False, None) == model_kind(False, {}) == "dense"
    # a long-context run of the shipped record: NeMo 24.03's Llama 2 7B at 128K tokens
    spec = load_workload(
        {
            "name": "llama2-7b-128k",
            "model": {
                "layers": 4,
                "hidden": 4096,
                "ffn_hidden": 11008,
                "heads": 32,
                "vocab": 32000,
                "seq_len": 131072,
                "dtype": "fp8",
                "activation": "swiglu",
            },
            "parallelism": {"tp": 8, "cp": 1, "sequence_parallel": True},
            "storage": {"enabled": False},
        }
    )
    graph = load_topology("dgx-h100", nodes=1)
    kern = {"by_class_s": {"attention": 3.0, "gemm": 1.0}}
    acc = validation_accuracy(graph, spec, kern)
    assert acc["model_kind"] == f"dense {ATTENTION_BOUND}" and acc["runs"] >= 7
    assert acc["line"].startswith(f"validated: {acc['runs']} published H100-SXM5-80GB fp8 dense attention-bound runs")
    assert "nemo-2403-long-sequence-h100/llama2-7b-128k-128gpus-cp4" in acc["cases"]
    assert acc["line"].endswith("--set topology.accelerator.compute.attention=NAME (netsim presets lists them)")
    assert "attention kernel" not in validation_accuracy(graph, spec)["line"]
    assert validation_accuracy(graph, spec, {"by_class_s": {"attention": 1.0, "gemm": 3.0}})["model_kind"] == "dense"


def test_eager_pytorch_training_is_its_own_regime() -> None:
    """``training.framework: pytorch`` (FSDP with eager modules) reports llm-foundry's published runs,
    not Megatron's; the step itself is timed the same."""
    assert model_kind(False, None, "pytorch") == "dense pytorch"
    assert model_kind(False, {"attention": 2.0, "gemm": 1.0}, "pytorch") == f"dense pytorch {ATTENTION_BOUND}"
    assert model_kind(True, None, "megatron") == "moe"
    graph = load_topology("dgx-h100", nodes=1)
    megatron = load_workload("gpt-dense")
    pytorch = megatron.model_copy(update={"training": megatron.training.model_copy(update={"framework": "pytorch"})})
    acc = validation_accuracy(graph, pytorch)
    assert acc["model_kind"] == "dense pytorch" and acc["runs"] >= 12
    assert all(c.startswith(("llm-foundry-mpt-h100/", "ibm-fms-fsdp-h100/")) for c in acc["cases"])
    assert acc["line"].startswith(f"validated: {acc['runs']} published H100-SXM5-80GB bf16 dense pytorch runs")
    assert acc["mean_step_error"] < -0.15  # netsim's step is much shorter than these stacks measured
    # on A100 the same kind of stack (IBM's fms-fsdp, the same scripts as its H100 rows) is close
    a100 = validation_accuracy(load_topology("dgx-a100", nodes=1), pytorch)
    assert a100["runs"] >= 7 and all(c.startswith("ibm-fms-fsdp-a100/") for c in a100["cases"])
    assert abs(a100["mean_step_error"]) < 0.06
    assert validation_accuracy(graph, megatron)["cases"] != acc["cases"]
    with pytest.raises(SpecError, match=r"training\.framework: must be one of 'megatron' or 'pytorch'"):
        load_workload({**megatron.to_dict(), "training": {"framework": "jax"}})


def test_netsim_run_prints_and_records_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_dir = tmp_path / "run"
    code, out, err = run_cli(["run", "-o", str(out_dir), "-q"], capsys)
    assert code == 0, err
    summary = json.loads((out_dir / "summary.json").read_text())
    acc = summary["validation_accuracy"]
    assert acc["runs"] > 0 and acc["line"].split(";")[0] in " ".join(out.split())
    assert acc["line"].split(";")[0] in (out_dir / "report.md").read_text()


def test_the_generator_refuses_what_is_not_a_results_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert main([str(tmp_path / "missing.csv")]) == 2
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    assert main([str(bad)]) == 2
    assert "not a validation results table" in capsys.readouterr().err
    out = tmp_path / "acc.csv"
    assert main([str(RESULTS), str(out)]) == 0
    assert [a.as_dict() for a in load_accuracy(out)] == [a.as_dict() for a in load_accuracy()]
