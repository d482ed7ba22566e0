"""Router-lab sweeps (lab-locality, lab-scaling) on tiny configurations."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

pytest.importorskip("torch")

from netsim.moe.lab import LabConfig
from netsim.studies.lab_sweep import locality_sweep, scaling_sweep

pytestmark = pytest.mark.torch

BASE = LabConfig(
    router="rre",
    experts=4,
    ep=4,
    ranks_per_node=2,
    layers=1,
    hidden=16,
    heads=2,
    ffn_hidden=16,
    seq_len=16,
    batch=2,
    steps=4,
    domains=["python", "c"],
    tokenizer="byte",
    max_corpus_bytes=200_000,
    eval_batches=1,
)


def test_locality_sweep_rre_is_local_exactly_when_the_data_is_sorted(tmp_path: Path) -> None:
    res = locality_sweep(BASE, ["rre"], [0.0, 1.0], tmp_path)
    by = res.set_index("domain_sort")
    assert by.loc[1.0, "share_cross_node"] == 0.0 and by.loc[0.0, "share_cross_node"] > 0.1
    assert (tmp_path / "figures" / "sweep.png").stat().st_size > 1000
    assert "share_cross_node" in (tmp_path / "report.md").read_text()
    mtime = (tmp_path / "lab" / "rre-sort100" / "lab.json").stat().st_mtime_ns
    again = locality_sweep(BASE, ["rre"], [0.0, 1.0], tmp_path)  # resumed: nothing retrained
    assert (tmp_path / "lab" / "rre-sort100" / "lab.json").stat().st_mtime_ns == mtime
    pd.testing.assert_frame_equal(again, res)


def test_scaling_sweep_follows_each_size_through_its_windows(tmp_path: Path) -> None:
    res = scaling_sweep(BASE, [16, 32], tmp_path, windows=2)
    assert res["hidden"].tolist() == [16, 16, 32, 32] and res["steps"].tolist() == ["0-2", "2-4"] * 2
    assert res["converged"].tolist()[1::2] == [False, False]  # 4 steps cannot pass the check
