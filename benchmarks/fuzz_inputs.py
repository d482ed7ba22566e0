"""Long fuzz run of every reader (the CI run of tests/fuzz uses 5 derandomized examples a test).

    python benchmarks/fuzz_inputs.py [--examples 200] [--workers 2] [-k nccl]

Runs ``tests/fuzz`` with ``NETSIM_FUZZ_EXAMPLES`` examples per test and random seeds
(``NETSIM_FUZZ_RANDOM=1``); a failure prints hypothesis's smallest failing input.  Each
example is one in-process ``netsim`` command, about 0.2 to 2 s on one core.  Not a test.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--examples", type=int, default=200, help="examples per fuzz test (default 200)")
    ap.add_argument("--workers", type=int, default=2, help="pytest-xdist workers (default 2)")
    ap.add_argument("-k", default=None, help="only the fuzz tests matching this pytest -k expression")
    args = ap.parse_args()
    env = {**os.environ, "NETSIM_FUZZ_EXAMPLES": str(args.examples), "NETSIM_FUZZ_RANDOM": "1", "PYTHONPATH": str(ROOT)}
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        str(ROOT / "tests" / "fuzz"),
        "-q",
        "-p",
        "no:cacheprovider",
        "-n",
        str(args.workers),
    ]
    if args.k:
        cmd += ["-k", args.k]
    return subprocess.call(cmd, env=env, cwd=ROOT)


if __name__ == "__main__":
    sys.exit(main())
