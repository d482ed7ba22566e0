"""docs/sections/sweep.md stays true: its example sweeps load and its error lines are real."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from netsim.errors import SpecError
from netsim.sweep import load_sweep

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "sections" / "sweep.md"
EXAMPLES = ROOT / "examples" / "sweeps"

#: The sweep behind each error line of the "Validation" block (base: the built-in scenario).
BAD = {
    "grid.topology.backend.fabric: must be": "grid: {topology.backend.fabric: [rail-optimized, multi-plan]}",
    "grid.topology.backend.fabric: topology.backend.leaves_per_pod": (
        "grid: {topology.backend.fabric: [rail-optimized, leaf-spine, fat-tree]}"
    ),
    "grid.workload.parallelism.ep": "grid: {nodes: [2, 4], workload.parallelism.ep: [8, 16]}",
    "grid.options.path_policy": "grid: {options.path_policy: [ecmp, sprey]}",
    "zip.0": "zip: [{seed: [1, 2], nodes: [2]}]",
    "exclude.0.seed": "grid: {seed: [1, 2]}\nexclude: [{seed: 3}]",
}


def test_examples_load_with_the_documented_points() -> None:
    counts = {}
    for path in sorted(EXAMPLES.glob("*.yaml")):
        sweep = load_sweep(path)
        assert sweep.name == path.stem and sweep.description
        counts[path.stem] = (len(sweep.points), sweep.excluded)
        assert f"examples/sweeps/{path.name}" in DOC.read_text(), path.name
    assert counts == {"fabrics": (8, 0), "faults": (4, 0), "oversubscription": (6, 0), "routers": (5, 1)}


def test_documented_point_ids_have_the_real_slugs() -> None:
    sweep = load_sweep(EXAMPLES / "oversubscription.yaml")
    real = {p.id[:-9]: p.id[-8:] for p in sweep.points}
    shown = set(re.findall(r"(oversubscription-\d-1_path-policy-(?:ecmp|spray))-([0-9a-f]{8})", DOC.read_text()))
    assert len(shown) == 2
    for slug, digest in shown:
        assert slug in real and re.fullmatch(r"[0-9a-f]{8}", digest)


def test_documented_error_lines_are_what_netsim_says(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    block = DOC.read_text().split("### Validation", 1)[1].split("```console", 1)[1].split("```", 1)[0]
    lines = [line for line in block.splitlines() if line.startswith("error: ")]
    assert len(lines) == len(BAD)
    monkeypatch.chdir(tmp_path)
    for line in lines:
        key = next(k for k in BAD if line.startswith(f"error: bad.yaml: {k}"))
        Path("bad.yaml").write_text("scenario: default\n" + BAD[key] + "\n")
        with pytest.raises(SpecError) as exc:
            load_sweep("bad.yaml")
        assert f"error: {exc.value}" == line
