"""Shared by the scale benchmarks: run one measurement in a fresh process (so that its peak
memory is its own) and collect the rows.

``run_child(cmd, timeout_s)`` returns the JSON row the child printed last, or a short reason
(``"timed out"``, ``"failed: <last stderr line>"``); ``write_csv(rows, path)`` writes the rows.
"""

from __future__ import annotations

import json
import subprocess
from typing import Any


def run_child(cmd: list[str], timeout_s: float) -> dict[str, Any] | str:
    """The row the child command printed (its last stdout line, JSON), or why there is none."""
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        return f"timed out (> {timeout_s:.0f} s)"
    if res.returncode != 0:
        return "failed: " + (res.stderr.strip().splitlines() or ["?"])[-1]
    row: dict[str, Any] = json.loads(res.stdout.strip().splitlines()[-1])
    return row


def write_csv(rows: list[dict[str, Any]], path: str | None) -> None:
    """Write ``rows`` as CSV to ``path`` (nothing when there is no path or no row)."""
    if path and rows:
        import pandas as pd

        pd.DataFrame(rows).to_csv(path, index=False)
