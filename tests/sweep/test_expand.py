"""Sweep files: grid / zip / exclude expansion, point ids, and one-line validation errors."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from netsim.errors import SpecError
from netsim.sweep import load_sweep, point_slug

from .conftest import MICRO_BASE, MICRO_GRID, write_sweep


def _values(sweep: Any) -> list[dict[str, Any]]:
    return [p.values for p in sweep.points]


def test_grid_is_the_product_in_file_order_first_axis_slowest(tmp_path: Path) -> None:
    path = write_sweep(tmp_path, grid={**MICRO_GRID, "seed": [0, 5]})
    sweep = load_sweep(path)
    assert sweep.name == "micro" and sweep.source == str(path)
    assert sweep.fields == ("topology.backend.fabric", "workload.parallelism.ep", "seed")
    got = [tuple(v.values()) for v in _values(sweep)]
    assert got == [(f, ep, s) for f in ("rail-optimized", "leaf-spine") for ep in (4, 8) for s in (0, 5)]
    assert [p.index for p in sweep.points] == list(range(8))
    # every point is a full scenario with its values applied
    p = sweep.points[5]  # leaf-spine, ep 4, seed 5
    spec = p.spec()
    assert spec.seed == 5 and spec.name == p.id
    assert "backend.fabric=leaf-spine" in spec.topology_overrides
    assert "parallelism.ep=4" in spec.workload_overrides
    assert spec.base_dir == tmp_path.resolve()


def test_zip_groups_vary_together_and_exclude_removes_matching_points(tmp_path: Path) -> None:
    path = write_sweep(
        tmp_path,
        grid={"topology.backend.fabric": ["rail-optimized", "leaf-spine", "multi-plane"]},
        zip=[{"workload.parallelism.ep": [2, 4, 8], "seed": [1, 2, 3]}],
        exclude=[
            {"topology.backend.fabric": "multi-plane", "workload.parallelism.ep": [2, 4]},
            {"topology.backend.fabric": "leaf-spine", "seed": 3},
        ],
    )
    sweep = load_sweep(path)
    assert sweep.fields == ("topology.backend.fabric", "workload.parallelism.ep", "seed")
    got = [tuple(v.values()) for v in _values(sweep)]
    assert got == [
        ("rail-optimized", 2, 1),
        ("rail-optimized", 4, 2),
        ("rail-optimized", 8, 3),
        ("leaf-spine", 2, 1),
        ("leaf-spine", 4, 2),
        ("multi-plane", 8, 3),
    ]
    assert sweep.excluded == 3
    assert [p.index for p in sweep.points] == list(range(6))


def test_point_ids_are_readable_stable_and_follow_the_resolved_spec(tmp_path: Path) -> None:
    a = load_sweep(write_sweep(tmp_path, "a", grid=MICRO_GRID))
    ids = [p.id for p in a.points]
    assert ids[0].startswith("fabric-rail-optimized_ep-4-")
    for pid in ids:
        assert re.fullmatch(r"[A-Za-z0-9.+_-]+-[0-9a-f]{8}", pid), pid
    assert len(set(ids)) == 4
    # same points in a grown, reordered grid: same ids (a resumed sweep reuses them)
    grown = {
        "topology.backend.fabric": ["multi-plane", "leaf-spine", "rail-optimized"],
        "workload.parallelism.ep": [8, 4],
    }
    b = load_sweep(write_sweep(tmp_path, "b", grid=grown))
    by_values = {tuple(p.values.values()): p.id for p in b.points}
    for p in a.points:
        assert by_values[tuple(p.values.values())] == p.id
    # a different base scenario (another seed) gives other ids with the same slugs
    c = load_sweep(write_sweep(tmp_path, "c", grid=MICRO_GRID, seed=7))
    for pa, pc in zip(a.points, c.points, strict=True):
        assert pa.id != pc.id and pa.id[:-8] == pc.id[:-8]
    # the hash covers the resolved spec, not how it is written: setting the preset's own
    # oversubscription (1) explicitly resolves to the same spec, hence the same id
    grid = {"topology.backend.fabric": ["rail-optimized"]}
    d = load_sweep(write_sweep(tmp_path, "d", grid=grid))
    e = load_sweep(write_sweep(tmp_path, "e", grid=grid, set=["topology.backend.oversubscription=1:1"]))
    assert d.points[0].id == e.points[0].id
    f = load_sweep(write_sweep(tmp_path, "f", grid=grid, set=["topology.backend.oversubscription=2"]))
    assert f.points[0].id != d.points[0].id


def test_slugs_use_short_names_and_stay_short() -> None:
    assert point_slug({}) == "base"
    assert point_slug({"workload.router.name": "locmoe", "options.routing": "ecmp"}) == "router-locmoe_routing-ecmp"
    assert point_slug({"topology.backend.oversubscription": "2:1"}) == "oversubscription-2-1"
    backend = {"fabric": "fat-tree", "nodes_per_leaf": 1, "leaves_per_pod": 2}
    assert point_slug({"topology.backend": backend}) == "backend-fat-tree-1-2"
    assert len(point_slug({f"workload.f{i}": "x" * 20 for i in range(5)})) <= 60


def test_base_scenario_from_a_file_or_the_builtin_default(tmp_path: Path) -> None:
    scen = tmp_path / "scen" / "micro.yaml"
    scen.parent.mkdir()
    scen.write_text(yaml.safe_dump({"name": "m", **MICRO_BASE}))
    sweep_file = tmp_path / "sw.yaml"
    sweep_file.write_text(yaml.safe_dump({"scenario": "scen/micro.yaml", "grid": {"seed": [0, 1]}}))
    sweep = load_sweep(sweep_file)
    assert sweep.base == "scen/micro.yaml" and len(sweep.points) == 2
    assert sweep.points[1].spec().base_dir == scen.parent.resolve()
    default = load_sweep({"scenario": "default", "grid": {"options.routing": ["ecmp", "spray"]}})
    assert default.base == "default"
    assert [p.spec().options.path_policy for p in default.points] == ["ecmp", "spray"]


def _error(tmp_path: Path, **keys: Any) -> str:
    path = write_sweep(tmp_path, "bad", **keys)
    with pytest.raises(SpecError) as exc:
        load_sweep(path)
    line = str(exc.value)
    assert "\n" not in line and line.startswith(f"{path}: "), line
    return line


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        (  # a bad value inside the topology: the field, the allowed values, the point
            {"grid": {"topology.backend.fabric": ["rail-optimized", "multi-plan"]}},
            [
                "grid.topology.backend.fabric: must be one of 'single-switch', 'leaf-spine', 'rail-optimized'",
                "(got 'multi-plan')",
                "(point 1: fabric=multi-plan)",
            ],
        ),
        (  # a value that makes another field required names both
            {"grid": {"topology.backend.fabric": ["leaf-spine", "fat-tree"]}},
            ["grid.topology.backend.fabric: topology.backend.leaves_per_pod: required key is missing"],
        ),
        (  # rank layout: EP must divide the ranks of a stage
            {"zip": [{"workload.parallelism.ep": [4, 3], "seed": [0, 1]}]},
            ["zip.0.workload.parallelism.ep: must divide the ranks", "allowed: 1, 2, 4, 8", "(point 1: ep=3, seed=1)"],
        ),
        (
            {"grid": {"options.routing": ["ecmp", "sprey"]}},
            [
                "grid.options.routing: options.path_policy: unknown routing policy 'sprey'; allowed: shortest, ecmp, "
                "ecmp-pair, spray, pxn, dmodk, dmodk-pxn"
            ],
        ),
        (
            {"grid": {"options.router": ["hash", "hashy"]}},
            ["grid.options.router: unknown router 'hashy'; allowed:", "locmoe"],
        ),
        (
            {"grid": {"workload.schedule.name": ["1f1b", "2f2b"]}},
            [
                "grid.workload.schedule.name: unknown schedule '2f2b'; allowed: gpipe, 1f1b, interleaved-1f1b, "
                "dualpipe, zb-h1"
            ],
        ),
        ({"grid": {"nodes": [2, 0]}}, ["grid.nodes: must be >= 1 (got 0)"]),
        (
            {"grid": {"topology": ["dgx-h100", "dgx-h1000"]}},
            ["grid.topology: unknown topology preset 'dgx-h1000'; available presets:", "dgx-a100"],
        ),
        ({"grid": {"seed": 3}}, ["grid.seed: Input should be a valid list"]),
        ({"grid": {"seed": [1, 1]}}, ["grid.seed: the value 1 is listed twice"]),
        ({"grid": {"sed": [1]}}, ["grid.sed: unknown scenario field 'sed'; allowed: topology, topology.<field>"]),
        (
            {"grid": {"options.routin": ["ecmp"]}},
            ["grid.options.routin: unknown option 'routin'; allowed: path_policy"],
        ),
        ({"grid": {"name": ["a"]}}, ["grid.name: name is set per point and cannot be swept"]),
        ({"gird": {"seed": [1]}}, ["gird: unknown key; allowed keys: name, description, scenario, set, grid, zip"]),
        (
            {"zip": [{"seed": [1, 2], "nodes": [2]}]},
            ["zip.0: the lists of a zip group must have the same length (got seed: 2, nodes: 1)"],
        ),
        ({"grid": {"seed": [1, 2]}, "zip": [{"seed": [3]}]}, ["zip.0.seed: varied twice (also in grid)"]),
        ({"grid": {"seed": [1, 2]}, "exclude": [{"nodes": 2}]}, ["exclude.0.nodes: not a varied field"]),
        ({"grid": {"seed": [1, 2]}, "exclude": [{"seed": 3}]}, ["exclude.0.seed: 3 is not one of the swept values"]),
        ({"grid": {"seed": [1, 2]}, "exclude": [{"seed": [1, 2]}]}, ["exclude: the exclude rules remove all 2 points"]),
        ({"scenario": "nope.yaml", "grid": {"seed": [1]}}, ["scenario: give the base scenario either as"]),
    ],
)
def test_bad_sweeps_are_one_line_errors(tmp_path: Path, keys: dict[str, Any], expected: list[str]) -> None:
    line = _error(tmp_path, **keys)
    for part in expected:
        assert part in line, line


def test_missing_scenario_file_names_the_field(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text("scenario: nope.yaml\ngrid: {seed: [1]}\n")
    with pytest.raises(SpecError, match=r"s\.yaml: scenario: no scenario file .*nope\.yaml"):
        load_sweep(path)


def test_every_point_is_validated_before_any_runs(tmp_path: Path) -> None:
    """A bad combination at the very end of the grid is found by load_sweep itself."""
    path = write_sweep(tmp_path, grid={"seed": list(range(6)), "nodes": [2, 1]}, set=["workload.parallelism.ep=8"])
    with pytest.raises(SpecError) as exc:
        load_sweep(path)
    line = str(exc.value)
    # nodes=1 leaves 4 ranks, too few for ep=8; the first bad point is (seed 0, nodes 1)
    assert "workload.parallelism.ep: must divide the ranks" in line and "(point 1: seed=0, nodes=1)" in line
