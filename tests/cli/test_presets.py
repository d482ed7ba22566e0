"""`netsim presets`: the topology and workload presets and the compute profiles a user can name."""

from __future__ import annotations

import pytest

from netsim.calibration.profiles import COMPUTE_PROFILES
from netsim.cli import main


def test_presets_list_the_compute_profiles_and_their_attention_kernels(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from netsim.cli import common

    monkeypatch.setattr(common.console, "width", 200)  # the table unwrapped, whatever the terminal
    try:
        main(["presets"])
    except SystemExit as e:  # typer exits 0 after a command
        assert e.code in (0, None)
    out = capsys.readouterr().out
    assert "dgx-h100" in out and "mixtral-8x7b" in out
    for name in COMPUTE_PROFILES.names():
        assert name in out
    # every attention kernel a profile knows is listed, its default first
    assert "flash-attention-3, flash-attention-2" in out
    assert COMPUTE_PROFILES.get("h100-sxm").attention_kernel(None).label == "FlashAttention-3"


def test_presets_list_the_validated_regimes_with_their_topology_presets(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from netsim.accuracy import load_accuracy
    from netsim.cli import common

    monkeypatch.setattr(common.console, "width", 200)
    try:
        main(["presets"])
    except SystemExit as e:
        assert e.code in (0, None)
    out = capsys.readouterr().out
    assert "Validated regimes" in out
    records = load_accuracy()
    assert records
    rows = [line for line in out.splitlines() if "(dgx-h100)" in line]
    h100 = [a for a in records if a.accelerator == "H100-SXM5-80GB"]
    assert len(rows) == len(h100) > 0  # one row per regime, named with the presets of its accelerator
    a = h100[0]
    assert any(a.dtype in r and f"{100 * a.mean_step_error:+.1f}%" in r for r in rows)
    assert any("(dgx-a100)" in line for line in out.splitlines())
