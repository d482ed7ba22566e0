"""docs/sections/topology.md stays true: its YAML examples build and its output is the real one."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from netsim.cli import main
from netsim.config.topology import parse_topology_spec
from netsim.topology import build_topology, load_topology
from netsim.topology.faults import degraded_links, device_speeds

DOC = Path(__file__).resolve().parents[2] / "docs" / "sections" / "topology.md"


def _blocks(lang: str) -> list[str]:
    """Contents of the fenced code blocks opened with ```<lang>."""
    blocks: list[str] = []
    inside: str | None = None
    lines: list[str] = []
    for line in DOC.read_text().splitlines():
        if line.startswith("```"):
            if inside is None:
                inside, lines = line[3:].strip(), []
            else:
                if inside == lang:
                    blocks.append("\n".join(lines) + "\n")
                inside = None
        elif inside is not None:
            lines.append(line)
    return blocks


def test_yaml_examples_build() -> None:
    blocks = _blocks("yaml")
    whole = [b for b in blocks if "degraded_links" not in b]
    assert len(whole) == 3
    for text in whole:
        g = build_topology(parse_topology_spec(yaml.safe_load(text), source="doc"), source="doc")
        assert g.number_of_nodes() > 0


def test_faults_example_applies_to_a_preset() -> None:
    (text,) = [b for b in _blocks("yaml") if "degraded_links" in b]
    data = yaml.safe_load(text)
    sets = [f"{k}={yaml.safe_dump(v, default_flow_style=True).strip()}" for k, v in data.items()]
    g = load_topology("dgx-h100", nodes=2, overrides=sets)
    assert degraded_links(g) and device_speeds(g) == {"n1.g5": 0.8}


def test_shown_output_is_the_real_output(capsys: pytest.CaptureFixture[str]) -> None:
    shown = next(b for b in _blocks("") if b.startswith("dgx-h100: 4 nodes"))
    with pytest.raises(SystemExit):
        main(["topology", "show", "dgx-h100", "--nodes", "4"])
    real = capsys.readouterr().out
    assert [ln.rstrip() for ln in real.splitlines()] == shown.rstrip("\n").splitlines()


@pytest.mark.parametrize(
    "line", [ln for b in _blocks("") for ln in b.splitlines() if ln.startswith("netsim topology show")]
)
def test_documented_commands_run(line: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = line.split()[1:]
    args = [str(tmp_path / a) if a.endswith((".png", ".graphml")) else a for a in args]
    with pytest.raises(SystemExit) as info:
        main(args)
    assert info.value.code == 0, capsys.readouterr().err


def test_flows_example_runs_as_shown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The `netsim flows` example: its graph (no accelerator block), CSV, command and output."""
    box = next(b for b in _blocks("yaml") if b.startswith("name: box"))
    examples = Path(__file__).resolve().parents[2] / "examples" / "flows"
    assert (examples / "box.yaml").read_text() == box  # the page shows the shipped files
    assert (examples / "flows.csv").read_text() == _blocks("csv")[0]
    (tmp_path / "examples" / "flows").mkdir(parents=True)
    (tmp_path / "examples" / "flows" / "box.yaml").write_text(box)
    (tmp_path / "examples" / "flows" / "flows.csv").write_text(_blocks("csv")[0])
    plain = _blocks("")
    cmd = next(b for b in plain if b.startswith("netsim flows"))
    shown = plain[plain.index(cmd) + 1]
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as info:
        main(cmd.split()[1:])
    assert info.value.code == 0, capsys.readouterr().err
    real = capsys.readouterr().out
    assert [ln.rstrip() for ln in real.splitlines()] == shown.rstrip("\n").splitlines()
