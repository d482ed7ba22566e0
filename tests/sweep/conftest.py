"""Fixtures for sweep tests: a micro MoE scenario (2 servers x 4 GPUs, 8 ranks, ~0.5 s a point)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

#: The base scenario of the sweep tests, written inline in the sweep file.  With ``ep=8`` the
#: expert all-to-all crosses the two servers, so the back-end fabric changes the results (with
#: ECMP routing: NCCL's PXN, the preset's default, keeps cross-rail traffic off the spines).
MICRO_BASE: dict[str, Any] = {
    "topology": "dgx-h100",
    "options": {"routing": "ecmp"},
    "nodes": 2,
    "topology_overrides": ["node.accelerators=4"],
    "workload": {
        "name": "micro",
        "model": {
            "layers": 2,
            "hidden": 256,
            "ffn_hidden": 512,
            "heads": 4,
            "vocab": 1024,
            "seq_len": 256,
            "moe": {"experts": 8, "top_k": 2, "every_n": 2},
        },
        "parallelism": {"pp": 1, "tp": 1, "ep": 4},
        "grad_bucket_bytes": "4MB",
        "router": {"name": "hash"},
        "steps": 1,
    },
}

#: 2 fabrics x 2 EP sizes = 4 points.
MICRO_GRID: dict[str, list[Any]] = {
    "topology.backend.fabric": ["rail-optimized", "leaf-spine"],
    "workload.parallelism.ep": [4, 8],
}


def write_sweep(folder: Path, name: str = "micro", **keys: Any) -> Path:
    """Write ``<folder>/<name>.yaml``: the micro base scenario inline plus ``keys``."""
    data: dict[str, Any] = {**MICRO_BASE, **keys}
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture
def micro_sweep(tmp_path: Path) -> Path:
    """A sweep file over :data:`MICRO_GRID` (4 points)."""
    return write_sweep(tmp_path, grid=MICRO_GRID)
