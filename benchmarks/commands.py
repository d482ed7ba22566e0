"""Benchmark: wall and CPU time of the commands a new user runs first (issue 20's targets).

Part ``startup``: ``netsim --help`` and ``netsim --version`` (target: under 0.5 s), each run
``--repeat`` times in a fresh process; the median.

Part ``targets``: the commands with a time target on 2 cores: the built-in scenario
(``netsim run``, under 5 s), the LocMoE paper's smallest and largest clusters
(``netsim run --topology ascend-910a --nodes 8|32 --workload locmoe-pangu``: under 10 s and
30 s), with the collective model ``auto`` chose for each.

Part ``docs``: every ``netsim`` command the documentation shows (``tests/docs/test_commands.py``
finds them), in page order, in one scratch directory per page; target: each under 60 s.  The
commands that are long by design (:data:`LONG`: a study that trains routers at the paper's size,
the full kernel grid, a benchmark's own measurement) are not run: they are listed after the
table with the reason and the time the docs state next to them.

    python benchmarks/commands.py [--part startup targets docs] [--repeat 5] [--timeout 3600] [--pages study]

Prints Markdown tables with wall time, CPU time (user + system of the child) and the 1-minute
load average when the command started: the machine may be shared, so compare the CPU column
(what the command costs) with the wall column (what a user waited) and quote quiet moments.
Not a test: times depend on the machine.
"""

from __future__ import annotations

import argparse
import math
import os
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: ``-P``: the scratch directory (cwd) is not put on ``sys.path``, so the ``netsim`` link made there
#: for the docs' relative paths is not imported: imported through it, numba would find no
#: cache for that path and compile its kernels again on every page (~4 s; PYTHONPATH is ROOT)
NETSIM = [sys.executable, "-P", "-m", "netsim"]
TARGETS = [
    ("built-in default scenario", "netsim run", 5.0),
    ("LocMoE, 8 x ascend-910a (64 NPUs)", "netsim run --topology ascend-910a --nodes 8 --workload locmoe-pangu", 10.0),
    (
        "LocMoE, 32 x ascend-910a (256 NPUs)",
        "netsim run --topology ascend-910a --nodes 32 --workload locmoe-pangu",
        30.0,
    ),
]


#: commands the docs show that are long by design: (pattern over the command, why, the measured
#: time the docs state next to it).  Each page's first runnable form is a fast one.
LONG = [
    (
        r"^netsim study locmoe(?!.*--quick)",
        "the LocMoE study at the paper's design: three routers trained at d = 256 (600 steps), "
        "15-60 replays of 64-256 NPU clusters",
        "about 29 CPU-minutes for ascend-910a from scratch (study page); more with dgx-h100",
    ),
    (
        r"^netsim study lab-locality\b",
        "nine router-lab runs (3 routers x 3 domain_sort values, 300 steps each)",
        "4-10 minutes per run, two at a time (MoE page)",
    ),
    (
        r"^netsim study lab-scaling\b",
        "router-lab runs of 600 steps up to d = 256",
        "8.5 CPU-minutes for the d = 256 run (MoE page)",
    ),
    (
        r"^netsim profile .*--full\b",
        "the full CPU kernel grid (every shape, the shipped tables' recipe)",
        "7-8 minutes: 251 + 231 s at one thread, 155 + 246 s at two (kernels page)",
    ),
    (
        r"--nodes 256 --workload deepseek-v3\b",
        "the benchmarks page's own measurement: a 2,048-GPU DeepSeek-V3 step",
        "54.7-56.6 s on the idle machine (benchmarks page)",
    ),
]


def long_reason(cmd: str) -> tuple[str, str] | None:
    """(why, documented time) when ``cmd`` is long by design (:data:`LONG`), else None."""
    import re

    for pattern, why, when in LONG:
        if re.search(pattern, cmd):
            return why, when
    return None


def timed(cmd: str, cwd: Path, timeout_s: float = 1800) -> tuple[float, float, int, str]:
    """(wall s, CPU s of the child, exit code, last stdout line) of one shell-free command."""
    args = shlex.split(cmd)
    if args[0] == "netsim":
        args = [*NETSIM, *args[1:]]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    try:
        res = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout_s, check=False)
        code, out = res.returncode, res.stdout
    except subprocess.TimeoutExpired:
        code, out = -1, "timed out"
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    lines = out.strip().splitlines()
    return wall, cpu, code, lines[-1] if lines else ""


def _load() -> str:
    return f"{os.getloadavg()[0]:.1f}"


def startup(repeat: int) -> None:
    print("| command | median wall s | median CPU s | load | target |")
    print("|---|---:|---:|---:|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for cmd in ("netsim --help", "netsim --version"):
            load = _load()
            runs = [timed(cmd, Path(tmp)) for _ in range(repeat)]
            wall = statistics.median(r[0] for r in runs)
            cpu = statistics.median(r[1] for r in runs)
            print(
                f"| `{cmd}` | {wall:.2f} | {cpu:.2f} | {load} | 0.5 s: {'met' if wall < 0.5 else 'missed'} |",
                flush=True,
            )


def _choice(run_dir: Path) -> str:
    import json

    try:
        return str(json.loads((run_dir / "summary.json").read_text()).get("model_choice", ""))
    except (OSError, ValueError):
        return "?"


def targets() -> None:
    print("| run | wall s | CPU s | load | target | simulated with |")
    print("|---|---:|---:|---:|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for name, cmd, limit in TARGETS:
            load = _load()
            wall, cpu, code, _ = timed(cmd + " --out runs/t --force", Path(tmp))
            verdict = "failed" if code else ("met" if wall < limit else "missed")
            print(
                f"| {name} | {wall:.1f} | {cpu:.1f} | {load} | {limit:.0f} s: {verdict} | "
                f"{_choice(Path(tmp) / 'runs' / 't')} |",
                flush=True,
            )


def docs(timeout_s: float, pages: list[str] | None = None) -> None:
    sys.path.insert(0, str(ROOT))
    from tests.docs.test_commands import PAGES, _skip_reason, page_commands

    print("| page | command | wall s | CPU s | load | exit |")
    print("|---|---|---:|---:|---:|---:|")
    walls: list[float] = []
    long: list[tuple[str, str, str, str]] = []
    for page in PAGES:
        if pages and page.stem not in pages:
            continue
        with tempfile.TemporaryDirectory() as tmp:
            cwd = Path(tmp)
            for name in ("examples", "topologies", "workloads", "tests", "benchmarks", "docs", "netsim"):
                (cwd / name).symlink_to(ROOT / name)
            for cmd in page_commands(page):
                if _skip_reason(cmd) is not None or not cmd.text.startswith("netsim "):
                    continue
                if (why := long_reason(cmd.text)) is not None:
                    long.append((page.name, _short(cmd.text), *why))
                    continue
                needs_default = cmd.text.startswith("netsim compare") or "runs/default" in cmd.text
                if needs_default and not (cwd / "runs" / "default").exists():
                    timed("netsim run --quiet", cwd)
                load = _load()
                wall, cpu, code, _ = timed(cmd.text, cwd, timeout_s=timeout_s)
                walls.append(wall if code == 0 else math.inf)
                print(f"| {page.name} | `{_short(cmd.text)}` | {wall:.1f} | {cpu:.1f} | {load} | {code} |", flush=True)
            shutil.rmtree(cwd / "runs", ignore_errors=True)
    print()
    print("Long by design, not run (the docs state each one's time next to it):")
    print()
    print("| page | command | why | measured |")
    print("|---|---|---|---|")
    for row in long:
        print("| " + " | ".join((row[0], f"`{row[1]}`", row[2], row[3])) + " |")
    print()
    print(
        f"{sum(w < 60 for w in walls)} of {len(walls)} under 60 s; "
        f"{len(long)} long-by-design commands, each labelled with its time in the docs"
    )


def _short(cmd: str) -> str:
    return cmd if len(cmd) < 90 else cmd[:87] + "..."


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parts = ["startup", "targets", "docs"]
    ap.add_argument("--part", nargs="+", default=["startup", "targets"], choices=parts)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument(
        "--timeout",
        type=float,
        default=3600,
        help="docs: stop a command after this many seconds (exit -1 in the table)",
    )
    ap.add_argument("--pages", nargs="+", help="docs: only these pages (file names without .md)")
    args = ap.parse_args()
    if "startup" in args.part:
        startup(args.repeat)
    if "targets" in args.part:
        targets()
    if "docs" in args.part:
        docs(args.timeout, args.pages)


if __name__ == "__main__":
    main()
