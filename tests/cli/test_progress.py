"""Progress display: a bar with an ETA on a terminal, a line per phase when piped (issue 20)."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from netsim.cli import main
from netsim.cli.progress import PhaseProgress, format_wall


class FakeClock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def _plain(**kw: object) -> tuple[PhaseProgress, io.StringIO, FakeClock]:
    buf = io.StringIO()
    clock = FakeClock()
    console = Console(file=buf, width=200, force_terminal=False)
    return PhaseProgress(console, "netsim run", {"plan": "planning"}, clock=clock, **kw), buf, clock  # type: ignore[arg-type]


def test_plain_mode_prints_a_line_per_phase_with_its_duration() -> None:
    prog, buf, clock = _plain()
    with prog:
        prog("plan", 0.0)
        clock.t += 2.5
        prog("replay", 0.0)
        clock.t += 70.0
        prog("replay", 1.0)
    assert buf.getvalue().splitlines() == [
        "netsim run [2.5 s] planning: done in 2.5 s",
        "netsim run [1m12s] replay: done in 1m10s",
    ]


def test_plain_mode_heartbeat_estimates_the_time_left() -> None:
    prog, buf, clock = _plain(heartbeat_s=30.0)
    with prog:
        prog("replay", 0.0)
        clock.t += 10.0
        prog("replay", 0.1)  # too early for a line
        clock.t += 30.0
        prog("replay", 0.4)  # 40 s for 40%: about 60 s left
        clock.t += 5.0
        prog("replay", 0.5)
    lines = buf.getvalue().splitlines()
    assert lines[0] == "netsim run [40.0 s] replay: 40% after 40.0 s, about 1m00s left"
    assert lines[1] == "netsim run [45.0 s] replay: done in 45.0 s"
    assert len(lines) == 2


def test_plain_mode_prints_each_new_detail_and_nothing_when_disabled() -> None:
    prog, buf, _clock = _plain()
    with prog:
        prog("points", 0.5, "1/2 points, a: ok")
        prog("points", 0.5, "1/2 points, a: ok")
        prog("points", 1.0, "2/2 points, b: ok")
    assert buf.getvalue().splitlines()[:2] == [
        "netsim run [0.0 s] points: 1/2 points, a: ok",
        "netsim run [0.0 s] points: 2/2 points, b: ok",
    ]
    quiet, qbuf, _ = _plain(enabled=False)
    with quiet:
        quiet("plan", 0.5)
    assert qbuf.getvalue() == ""


def test_no_phase_line_after_an_error() -> None:
    prog, buf, _ = _plain()
    with pytest.raises(RuntimeError), prog:
        prog("plan", 0.0)
        raise RuntimeError("boom")
    assert buf.getvalue() == ""


def test_terminal_mode_draws_a_bar_with_an_eta() -> None:
    buf = io.StringIO()
    console = Console(file=buf, width=120, force_terminal=True)
    with PhaseProgress(console, "netsim run", {"replay": "replaying"}) as prog:
        prog("replay", 0.25)
        prog._bar.refresh()
    text = buf.getvalue()
    assert "replaying" in text and "25%" in text and "ETA" in text


def test_format_wall() -> None:
    assert [format_wall(x) for x in (0.04, 59.94, 61, 3599, 3661)] == ["0.0 s", "59.9 s", "1m01s", "59m59s", "1h01m"]


def test_netsim_alone_prints_the_help_and_no_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main([])
    out, err = capsys.readouterr()
    assert info.value.code == 0
    assert "Usage" in out and "run" in out
    assert "error" not in err
