"""Validation data: every shipped source loads; malformed files are one-line errors naming file and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from netsim.errors import SpecError
from netsim.validation.runner import load_known_gaps
from netsim.validation.sources import DATA_DIR, CollectiveCase, load_source, load_sources

GOOD = """\
source:
  id: {id}
  title: "t"
  url: https://example.org/x
  where: "table 1"
  kind: measurement
system:
  topology: dgx-h100
  nodes: 1
  gpus_per_node: 8
cases:
  - id: ar
    kind: collective
    op: all_reduce
    points:
      - {{bytes: 1073741824, time_us: {time}, busbw_GBps: {busbw}}}
"""


def write(tmp_path: Path, name: str = "src", time: str = "4000", busbw: str = "469.76", **repl: str) -> Path:
    text = GOOD.format(id=name, time=time, busbw=busbw)
    for a, b in repl.items():
        text = text.replace(a, b)
    p = tmp_path / f"{name}.yaml"
    p.write_text(text)
    return p


def test_every_shipped_source_loads_and_is_checked() -> None:
    sources = load_sources()
    assert len(sources) >= 30
    assert sum(len(c.points) for s in sources for c in s.cases if isinstance(c, CollectiveCase)) >= 500
    ids = [s.source.id for s in sources]
    assert len(set(ids)) == len(ids)
    assert all(s.source.url.startswith("https://") for s in sources)
    # the shipped data is installed with the package
    assert (DATA_DIR / "README.md").exists()


def test_known_gaps_name_existing_sources_and_say_why() -> None:
    gaps = load_known_gaps()
    ids = [s.source.id for s in load_sources()]
    import fnmatch

    for g in gaps:
        assert any(fnmatch.fnmatch(i, g.source) for i in ids), g.source
        assert len(g.reason) > 40


def test_a_good_file_loads(tmp_path: Path) -> None:
    src = load_source(write(tmp_path))
    assert src.cases[0].points[0].bytes == 2**30


@pytest.mark.parametrize(
    ("repl", "field", "words"),
    [
        ({"time_us: 4000": "time_us: -4"}, "cases.0.points.0.time_us", "must be > 0"),
        ({"bytes: 1073741824": "bytes: 0"}, "cases.0.points.0.bytes", "must be > 0"),
        ({"kind: measurement": "kind: rumour"}, "source.kind", "measurement"),
        ({"op: all_reduce": "op: all_reduce\n    colour: blue"}, "cases.0.colour", "unknown key"),
        ({"topology: dgx-h100": "topology: tpu-v9"}, "system.topology", "unknown topology preset"),
        ({"busbw_GBps: 469.76": "busbw_GBps: 300"}, "cases.ar.points[0]", "disagrees with bytes/time"),
        ({"op: all_reduce": "op: all_reduce\n    dtype: quad"}, "cases.0.dtype", "(got 'quad')"),
        (
            {"gpus_per_node: 8": "gpus_per_node: 8\n  set: {topology.node.nvlink_bandwidth: -200GB/s}"},
            "system.set 'node.nvlink_bandwidth=-200GB/s'",
            "must be a bandwidth > 0",
        ),
    ],
)
def test_malformed_files_are_one_line_errors(tmp_path: Path, repl: dict[str, str], field: str, words: str) -> None:
    p = write(tmp_path, **repl)
    with pytest.raises(SpecError) as info:
        load_source(p)
    msg = str(info.value)
    assert str(p) in msg and field in msg and words in msg and "\n" not in msg


def test_source_id_must_match_the_file_name(tmp_path: Path) -> None:
    p = write(tmp_path, name="abc")
    p2 = tmp_path / "other.yaml"
    p2.write_text(p.read_text())
    with pytest.raises(SpecError, match=r"source\.id: must equal the file name 'other'"):
        load_source(p2)
