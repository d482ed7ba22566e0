"""Benchmark: uniform all-to-all on dgx-h100 (every GPU sends SIZE bytes to every other GPU).

Each size runs in a fresh subprocess so that its peak memory is its own.  Reports wall time
(topology build, routing + simulation), peak resident memory, flows, engine events, and the
simulated completion time against the analytic lower bound, and how the cost grows: the CPU
time of build and simulation (the fair measure on a machine shared with other work) and, between
consecutive sizes, the exponent of CPU time against flows (1: linear).  The lower bound: every GPU must push
(GPUs - GPUs_per_node) x SIZE bytes through its server's NICs, so the most loaded NIC needs at
least that many bytes / its bandwidth (intra-node NVLink needs (GPUs_per_node - 1) x SIZE /
NVLink bandwidth; the bound is the larger).

    python benchmarks/alltoall.py --nodes 8 32 128 512 [--size 64MiB] [--routing ecmp] [--timeout 900]
        [--model exact|coflow]

``--model coflow`` moves the pairs as one coflow (the ``coflow`` collective model's direct
all-to-all, :meth:`netsim.network.Network.transfer_coflow`): the cost is routing every pair once.

Writes a Markdown table to stdout (and --out FILE.csv if given).  Not a test: timings depend on
the machine; compare rows of one run.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import resource
import sys
import time

from _child import run_child, write_csv


def one(nodes: int, size: float, routing: str, preset: str, model: str) -> dict[str, float | int | str]:
    import numpy as np

    from netsim.network import Network
    from netsim.topology import load_topology

    t0 = time.perf_counter()
    c0 = time.process_time()
    graph = load_topology(preset, nodes=nodes)
    t1 = time.perf_counter()
    net = Network(graph, routing=routing)
    idx = net.links.index
    gpn = int(graph.graph["accelerators_per_node"])
    gpus = np.array([idx[f"n{n}.g{i}"] for n in range(nodes) for i in range(gpn)], dtype=np.int64)
    # every ordered pair of distinct GPUs, built without an n^2 mask
    n = gpus.size
    src = np.repeat(gpus, n - 1)
    other = np.tile(np.arange(n - 1, dtype=np.int64), n)
    other += other >= np.repeat(np.arange(n, dtype=np.int64), n - 1)  # skip the diagonal
    dst = gpus[other]
    del other
    if model == "coflow":  # the coflow collective model's direct all-to-all: one aggregate flow
        net.transfer_coflow(src, dst, size)
    else:
        net.submit_many(src, dst, size)
    del src, dst
    net.run()
    t2 = time.perf_counter()
    cpu_s = time.process_time() - c0
    nic_bw = min(d["capacity_Bps"] for u, v, d in graph.edges(data=True) if d.get("tier") == "nic-leaf")
    nvl = [d["capacity_Bps"] for u, v, d in graph.edges(data=True) if d.get("link_class") in ("nvlink", "hccs")]
    bound = (gpus.size - gpn) * size / nic_bw
    if nvl:
        bound = max(bound, (gpn - 1) * size / min(nvl))
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "nodes": nodes,
        "gpus": int(gpus.size),
        "flows": int(n * (n - 1)),
        "events": net.num_events,
        "build_s": round(t1 - t0, 3),
        "simulate_s": round(t2 - t1, 3),
        "wall_s": round(t2 - t0, 3),
        "cpu_s": round(cpu_s, 3),
        "peak_GiB": round(peak_kib / 2**20, 3),
        "completion_s": net.makespan_s,
        "lower_bound_s": bound,
        "ratio_to_bound": net.makespan_s / bound,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nodes", type=int, nargs="+", default=[8, 32, 128, 512])
    ap.add_argument("--size", default="64MiB")
    ap.add_argument("--routing", default="ecmp")
    ap.add_argument(
        "--model",
        default="exact",
        choices=["exact", "coflow"],
        help="exact: one flow per pair; coflow: the pairs as one coflow (Network.transfer_coflow)",
    )
    ap.add_argument("--preset", default="dgx-h100")
    ap.add_argument("--timeout", type=float, default=1800.0, help="seconds per size before giving up")
    ap.add_argument("--out", default=None, help="also write the rows as CSV")
    ap.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    from netsim.units import parse_bytes

    size = parse_bytes(args.size, "--size")
    if args.child is not None:
        print(json.dumps(one(args.child, size, args.routing, args.preset, args.model)))
        return
    rows = []
    print(f"# all-to-all {args.size} per pair on {args.preset}, routing {args.routing}, model {args.model}")
    print(
        "| nodes | GPUs | flows | events | build s | simulate s | wall s | CPU s | peak GiB | completion s | "
        "lower bound s | ratio |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for n in args.nodes:
        cmd = [
            sys.executable,
            __file__,
            "--child",
            str(n),
            "--size",
            args.size,
            "--routing",
            args.routing,
            "--preset",
            args.preset,
            "--model",
            args.model,
        ]
        r = run_child(cmd, args.timeout)
        if isinstance(r, str):
            print(f"| {n} | {n * 8} | - | - | - | - | - | - | - | - | - | {r} |")
            continue
        rows.append(r)
        print(
            f"| {r['nodes']} | {r['gpus']} | {r['flows']:,} | {r['events']:,} | {r['build_s']:.2f} | "
            f"{r['simulate_s']:.2f} | {r['wall_s']:.2f} | {r['cpu_s']:.2f} | {r['peak_GiB']:.2f} | "
            f"{r['completion_s']:.4f} | "
            f"{r['lower_bound_s']:.4f} | {r['ratio_to_bound']:.3f} |",
            flush=True,
        )
    growth = [
        f"{b['flows']:,}: {math.log(b['cpu_s'] / a['cpu_s']) / math.log(b['flows'] / a['flows']):.2f}"
        for a, b in itertools.pairwise(rows)
        if b["flows"] > a["flows"]
    ]
    if growth:
        print("\nexponent of CPU time against flows, up to " + ", ".join(growth))
    write_csv(rows, args.out)


if __name__ == "__main__":
    main()
