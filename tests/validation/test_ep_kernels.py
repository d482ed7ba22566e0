"""Validation case kind ``ep-kernel`` (``netsim.validation.ep_kernels``): DeepEP's and HybridEP's
published dispatch and combine bandwidths, one case per number, in ``netsim validate``.

The same predictions as ``netsim validate-deepep`` / ``validate-hybridep`` (one copy of each
table: the YAML sources, which those commands read too); every kernel-only number within 10%
but the two 2-server combines; HybridEP's Torch API numbers are known gaps (a copy and a
synchronisation per call that netsim does not model)."""

from __future__ import annotations

from pathlib import Path

import pytest

from netsim.errors import SpecError
from netsim.validation.report import summarize, validation_document
from netsim.validation.runner import ValidationResult, run_validation
from netsim.validation.sources import DATA_DIR, load_source


@pytest.fixture(scope="module")
def result() -> ValidationResult:
    return run_validation(kinds=["ep-kernel"])


def test_every_published_number_is_a_case(result: ValidationResult) -> None:
    t = result.table
    assert len(t) == 26 and set(t["kind"]) == {"ep-kernel"}
    assert result.sources == 2
    assert (t["metric"].str.startswith("ep_GBps.")).all()


def test_kernel_numbers_within_10_percent_and_the_gaps_are_named(result: ValidationResult) -> None:
    t = result.table
    assert result.ok, result.failures[["case", "rel_error"]]
    gaps = t[t["known_gap"].astype(str) != ""]
    assert set(gaps["case"]) == {
        "internode-ep16-combine",
        "ep16-combine-kernel",
        *(f"ep{r}-{w}-torch-api" for r in (16, 32, 64) for w in ("dispatch-fp8", "dispatch-bf16", "combine")),
    }
    asserted = t[t["asserted"]]
    assert len(asserted) == 15 and (asserted["rel_error"].abs() < 0.10).all()
    # the Torch API numbers: netsim is faster than all of them (it times the kernel alone)
    torch = t[t["case"].str.endswith("torch-api")]
    assert (torch["rel_error"] > 0.09).all()


def test_same_predictions_as_the_library_commands(result: ValidationResult) -> None:
    from netsim.validation.deepep import compare as deepep_rows
    from netsim.validation.hybridep import compare as hybridep_rows

    t = result.table.set_index(["source", "case"])["predicted"]
    d = {r.ep: r for r in deepep_rows(eps=(8, 64))}
    assert t[("deepep-normal-h800", "intranode-ep8-dispatch")] == pytest.approx(d[8].dispatch_GBps)
    assert t[("deepep-normal-h800", "internode-ep64-combine")] == pytest.approx(d[64].combine_GBps)
    h = hybridep_rows(eps=(32,))[0]
    assert t[("hybridep-h100", "ep32-dispatch-fp8-kernel")] == pytest.approx(h.fp8_dispatch_GBps)
    assert t[("hybridep-h100", "ep32-combine-torch-api")] == pytest.approx(h.combine_GBps)


def test_summary_and_report_have_the_section(result: ValidationResult) -> None:
    from netsim.report.render import render_markdown

    s = summarize(result)
    assert len(s["ep_kernels"]) == 26 and "ep-kernel" in s["bands"]
    row = next(r for r in s["ep_kernels"] if r["case"] == "internode-ep64-dispatch")
    assert row["nodes"] == 8 and row["what"] == "dispatch.fp8.kernel" and row["measured_GBps"] == 51.0
    md = render_markdown(validation_document(result, s))
    assert "## Expert-parallel dispatch and combine kernels" in md
    assert "| deepep-normal-h800 | internode-ep64-dispatch | 8 | 51 |" in md


@pytest.mark.parametrize(
    ("edit", "field", "message"),
    [
        ({"experts": 100}, "cases.0", "experts \\(100\\) must be a multiple of ranks \\(8\\)"),
        ({"phase": "gather"}, "cases.0", "phase"),
        ({"measured_GBps": -1}, "cases.0", "measured_GBps"),
    ],
)
def test_bad_cases_name_the_field(tmp_path: Path, edit: dict[str, object], field: str, message: str) -> None:
    import yaml

    data = yaml.safe_load((DATA_DIR / "ep_kernels" / "deepep-normal-h800.yaml").read_text())
    data["cases"] = [{**data["cases"][0], **edit}]
    path = tmp_path / "deepep-normal-h800.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(SpecError, match=message) as exc:
        load_source(path)
    assert str(path) in str(exc.value) and field in str(exc.value)


def test_ranks_must_fill_whole_servers(tmp_path: Path) -> None:
    import yaml

    data = yaml.safe_load((DATA_DIR / "ep_kernels" / "deepep-normal-h800.yaml").read_text())
    data["cases"] = [{**data["cases"][0], "ranks": 12, "experts": 240, "routing": "uniform"}]
    path = tmp_path / "deepep-normal-h800.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(SpecError, match="ranks 12 must fill whole servers of 8 GPUs"):
        run_validation([load_source(path)])
