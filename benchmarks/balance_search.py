"""CPU cost of the balanced pipeline split (``parallelism.pipeline_layers: balanced``).

Times :func:`netsim.workload.balance.balance_stages` on synthetic models (a few lighter dense
layers first, identical layers after, an output head worth three layers) under the schedules
that hold several blocks per stage, and prints the CPU seconds and the split found:

    python benchmarks/balance_search.py

The search grows with the square of the blocks (every move of one layer between two blocks is
scored); docs "Balanced pipeline split" quotes these numbers.
"""

from __future__ import annotations

import time

from netsim.report.fmt import fmt_runs
from netsim.workload.balance import balance_stages, stage_blocks
from netsim.workload.schedules import get_schedule

#: (layers, schedule, pp, virtual chunks)
CASES = [
    (61, "dualpipe", 16, 1),
    (94, "interleaved-1f1b", 8, 4),
    (126, "interleaved-1f1b", 16, 8),
    (200, "interleaved-1f1b", 16, 4),
]


def main() -> None:
    print(f"{'layers':>6} {'schedule':>16} {'pp':>3} {'v':>2} {'blocks':>6} {'CPU s':>7}  split")
    for layers, name, pp, v in CASES:
        sched = get_schedule(name, pp, 2 * pp * v, v)
        cost = [0.8] * 3 + [1.0] * (layers - 3)
        t0 = time.process_time()
        sizes = balance_stages(cost, stage_blocks(sched), sched.num_virtual_stages, 3.0)
        dt = time.process_time() - t0
        print(f"{layers:>6} {name:>16} {pp:>3} {v:>2} {sched.num_virtual_stages:>6} {dt:>7.2f}  {fmt_runs(sizes)}")


if __name__ == "__main__":
    main()
