"""Shared spec helpers: YAML loading, --set overrides, pydantic errors as one-line SpecErrors."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import pytest
from pydantic import Field

from netsim.config.common import (
    Bandwidth,
    Duration,
    Ratio,
    SpecModel,
    apply_overrides,
    load_mapping,
    load_yaml,
    parse_override,
    validate_model,
)
from netsim.errors import SpecError

# ----------------------------------------------------------------------------- YAML


def test_load_yaml_reads_a_mapping(tmp_path: Path) -> None:
    p = tmp_path / "a.yaml"
    p.write_text("a: 1\nb: {c: 400Gbps}\n")
    assert load_mapping(p) == {"a": 1, "b": {"c": "400Gbps"}}


def test_malformed_yaml_names_file_and_line(tmp_path: Path) -> None:
    p = tmp_path / "bad.yaml"
    p.write_text("name: x\nnode: {kind: [\n")
    with pytest.raises(SpecError) as info:
        load_yaml(p)
    msg = str(info.value)
    assert msg.startswith(f"{p}: line 3, column 1: malformed YAML")
    assert "\n" not in msg


def test_duplicate_keys_are_rejected(tmp_path: Path) -> None:
    p = tmp_path / "dup.yaml"
    p.write_text("name: x\nbackend:\n  a: 1\n  a: 2\n")
    with pytest.raises(SpecError, match=r"line 4, column 3: malformed YAML: duplicate key 'a'"):
        load_yaml(p)


def test_missing_file_and_non_mapping(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"nope\.yaml: file not found"):
        load_yaml(tmp_path / "nope.yaml")
    p = tmp_path / "list.yaml"
    p.write_text("- 1\n- 2\n")
    with pytest.raises(SpecError, match=r"top level must be a mapping.*got a list"):
        load_mapping(p)
    p.write_text("")
    with pytest.raises(SpecError, match="got an empty file"):
        load_mapping(p)


def test_ratios_and_base60_stay_strings(tmp_path: Path) -> None:
    """YAML 1.1 would read 2:1 as 121 (base 60); our loader keeps it a string."""
    p = tmp_path / "r.yaml"
    p.write_text("a: 2:1\nb: 1:30\nc: 3\nd: 1.5\ne: 0x10\n")
    assert load_mapping(p) == {"a": "2:1", "b": "1:30", "c": 3, "d": 1.5, "e": 16}


# ----------------------------------------------------------------------------- overrides


def test_parse_override_reads_yaml_scalars() -> None:
    assert parse_override("backend.oversubscription=2") == (("backend", "oversubscription"), 2)
    assert parse_override("node.nvlink_bandwidth=300GB/s") == (("node", "nvlink_bandwidth"), "300GB/s")
    assert parse_override("frontend=null") == (("frontend",), None)
    assert parse_override("x=2:1") == (("x",), "2:1")


@pytest.mark.parametrize("item", ["novalue", "=3", "a..b=1", "a.=1"])
def test_malformed_overrides(item: str) -> None:
    with pytest.raises(SpecError) as info:
        parse_override(item)
    assert str(info.value).startswith(f"--set {item}: ")


def test_apply_overrides_sets_creates_and_indexes_without_mutating() -> None:
    data = {"a": {"b": 1}, "links": [{"bw": 1}, {"bw": 2}]}
    out = apply_overrides(data, ["a.b=3", "a.c.d=x", "links.1.bw=5", "new=1.5"])
    assert out == {"a": {"b": 3, "c": {"d": "x"}}, "links": [{"bw": 1}, {"bw": 5}], "new": 1.5}
    assert data == {"a": {"b": 1}, "links": [{"bw": 1}, {"bw": 2}]}


def test_apply_overrides_errors() -> None:
    with pytest.raises(SpecError, match=r"^--set name.x=1: name is a str \('dgx'\), not a mapping"):
        apply_overrides({"name": "dgx"}, ["name.x=1"])
    with pytest.raises(SpecError, match=r"^--set links.7.bw=1: links is a list of 1 items; '7' is not a valid index"):
        apply_overrides({"links": [{}]}, ["links.7.bw=1"])


# ----------------------------------------------------------------------------- validation


class _Leaf(SpecModel):
    kind: Literal["leaf"]
    bandwidth: Bandwidth
    ratio: Ratio = 1.0


class _Mesh(SpecModel):
    kind: Literal["mesh"]
    size: int = Field(2, ge=2)


class _Top(SpecModel):
    name: str
    part: Annotated[_Leaf | _Mesh, Field(discriminator="kind")]
    latency: Duration = 0.0
    items: list[_Leaf] = Field(default_factory=list)
    mode: Literal["ib", "roce"] = "ib"


def _err(data: object, overrides: tuple[str, ...] = ()) -> SpecError:
    with pytest.raises(SpecError) as info:
        validate_model(_Top, data, source="f.yaml", overrides=overrides)
    assert "\n" not in str(info.value)
    return info.value


def test_valid_model_parses_units() -> None:
    m = validate_model(
        _Top, {"name": "x", "part": {"kind": "leaf", "bandwidth": "400Gbps", "ratio": "2:1"}}, source="f"
    )
    assert isinstance(m.part, _Leaf)
    assert m.part.bandwidth == 5e10
    assert m.part.ratio == 2.0


def test_negative_and_zero_bandwidth() -> None:
    e = _err({"name": "x", "part": {"kind": "leaf", "bandwidth": "-5Gbps"}})
    assert (e.source, e.field) == ("f.yaml", "part.bandwidth")  # union tag 'leaf' is not in the path
    assert "must be a bandwidth > 0" in e.message and "'-5Gbps'" in e.message
    assert _err({"name": "x", "part": {"kind": "leaf", "bandwidth": 0}}).field == "part.bandwidth"


def test_unknown_key_lists_allowed_keys() -> None:
    e = _err({"name": "x", "part": {"kind": "mesh", "sise": 3}})
    assert e.field == "part.sise"
    assert e.message == "unknown key; allowed keys: kind, size"


def test_enum_and_tag_errors_list_allowed_values() -> None:
    e = _err({"name": "x", "part": {"kind": "star"}})
    assert e.field == "part.kind"
    assert "'leaf', 'mesh'" in e.message and "'star'" in e.message
    e = _err({"name": "x", "part": {}})
    assert e.field == "part.kind"
    assert "required key is missing" in e.message and "'leaf', 'mesh'" in e.message
    e = _err({"name": "x", "part": {"kind": "mesh"}, "mode": "tcp"})
    assert (e.field, e.message) == ("mode", "must be one of 'ib' or 'roce' (got 'tcp')")


def test_list_paths_bounds_and_missing() -> None:
    e = _err(
        {"name": "x", "part": {"kind": "mesh"}, "items": [{"kind": "leaf", "bandwidth": "1GB/s"}, {"kind": "leaf"}]}
    )
    assert (e.field, e.message) == ("items.1.bandwidth", "required key is missing")
    e = _err({"name": "x", "part": {"kind": "mesh", "size": 1}})
    assert (e.field, e.message) == ("part.size", "must be >= 2 (got 1)")
    e = _err({"name": "x", "part": {"kind": "mesh"}, "latency": "soon"})
    assert e.field == "latency" and "cannot read 'soon' as a duration" in e.message


def test_errors_from_overrides_name_the_override() -> None:
    data = apply_overrides({"name": "x", "part": {"kind": "mesh"}}, ["part.size=0"])
    e = _err(data, overrides=("part.size=0",))
    assert str(e) == "--set part.size=0: part.size: must be >= 2 (got 0)"
    # switching the union tag makes another key required: file and override are both named
    data = apply_overrides({"name": "x", "part": {"kind": "mesh"}}, ["part.kind=leaf"])
    e = _err(data, overrides=("part.kind=leaf",))
    assert str(e) == "f.yaml with --set part.kind=leaf: part.bandwidth: required key is missing"


def test_old_spec_import_path_still_works_and_warns() -> None:
    import importlib
    import sys
    import warnings

    sys.modules.pop("netsim.spec", None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        old = importlib.import_module("netsim.spec.topology")
    import netsim.config.topology as new

    assert old is new
    assert any(issubclass(w.category, DeprecationWarning) for w in caught)
