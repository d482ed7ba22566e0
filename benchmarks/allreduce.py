"""Benchmark: one all-reduce of SIZE over every GPU of dgx-h100, ring and hierarchical.

Each (algorithm, size) runs in a fresh subprocess so that its peak memory is its own.  Reports
wall time (topology build, plan + simulation), peak resident memory, flows, engine events and
the simulated time against the alpha-beta bound of the algorithm (bandwidth term only: ring
``2 (n-1)/n S / B_nic`` per channel with one channel per NIC; hierarchical ``2 (per-1)/per S /
B_nvlink + 2 (nodes-1)/nodes S/per / B_nic``).

    python benchmarks/allreduce.py --nodes 8 128 2048 [--size 1GiB] [--algo ring hierarchical]
        [--model stream] [--timeout 900]

``--model exact`` runs the exact plans (one flow per step and link: a ring of 16384 GPUs has
~4 billion, which no flow simulator runs in a minute); ``--model stream`` the stream plans
(one flow per ring link and phase; error against exact in ``benchmarks/collective_models.py``).
Writes a Markdown table to stdout (and --out FILE.csv if given).  Not a test.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time

from _child import run_child, write_csv


def one(nodes: int, size: float, algo: str, model: str, preset: str) -> dict[str, float | int | str]:
    from netsim.collectives import accelerators, run_collective
    from netsim.collectives.executor import result_of
    from netsim.network import Network
    from netsim.topology import load_topology

    t0 = time.perf_counter()
    graph = load_topology(preset, nodes=nodes)
    devices = accelerators(graph)
    t1 = time.perf_counter()
    net = Network(graph)
    proc = run_collective(net, "all_reduce", devices, size, algo=algo, model=model)
    net.run()
    t2 = time.perf_counter()
    res = result_of(proc)
    gpn = int(graph.graph["accelerators_per_node"])
    nic_bw = min(d["capacity_Bps"] for u, v, d in graph.edges(data=True) if d.get("tier") == "nic-leaf")
    nvl = min(d["capacity_Bps"] for u, v, d in graph.edges(data=True) if d.get("link_class") in ("nvlink", "hccs"))
    n = len(devices)
    if algo == "ring":
        bound = 2 * (n - 1) / n * size / gpn / nic_bw
    else:
        bound = 2 * (gpn - 1) / gpn * size / nvl + 2 * (nodes - 1) / nodes * size / gpn / nic_bw
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "algo": algo,
        "model": model,
        "nodes": nodes,
        "gpus": n,
        "flows": net.num_flows,
        "events": net.num_events,
        "build_s": round(t1 - t0, 3),
        "simulate_s": round(t2 - t1, 3),
        "wall_s": round(t2 - t0, 3),
        "peak_GiB": round(peak_kib / 2**20, 3),
        "time_s": res.time_s,
        "bound_s": bound,
        "ratio_to_bound": res.time_s / bound,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nodes", type=int, nargs="+", default=[8, 32, 128, 512, 2048])
    ap.add_argument("--size", default="1GiB")
    ap.add_argument("--algo", nargs="+", default=["ring", "hierarchical"])
    ap.add_argument("--model", default="stream", choices=["exact", "stream"])
    ap.add_argument("--preset", default="dgx-h100")
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds per run before giving up")
    ap.add_argument("--out", default=None, help="also write the rows as CSV")
    ap.add_argument("--child", nargs=2, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    from netsim.units import parse_bytes

    size = parse_bytes(args.size, "--size")
    if args.child is not None:
        print(json.dumps(one(int(args.child[0]), size, args.child[1], args.model, args.preset)))
        return
    rows = []
    print(f"# all-reduce {args.size} on {args.preset}, collective model {args.model}")
    print("| algo | nodes | GPUs | flows | events | simulate s | wall s | peak GiB | time ms | bound ms | ratio |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for algo in args.algo:
        for n in args.nodes:
            cmd = [
                sys.executable,
                __file__,
                "--child",
                str(n),
                algo,
                "--size",
                args.size,
                "--model",
                args.model,
                "--preset",
                args.preset,
            ]
            r = run_child(cmd, args.timeout)
            if isinstance(r, str):
                print(f"| {algo} | {n} | {n * 8} | - | - | - | - | - | - | - | {r} |")
                continue
            rows.append(r)
            print(
                f"| {algo} | {r['nodes']} | {r['gpus']} | {r['flows']:,} | {r['events']:,} | {r['simulate_s']:.2f} "
                f"| {r['wall_s']:.2f} | {r['peak_GiB']:.2f} | {r['time_s'] * 1e3:.3f} | {r['bound_s'] * 1e3:.3f} "
                f"| {r['ratio_to_bound']:.3f} |",
                flush=True,
            )
    write_csv(rows, args.out)


if __name__ == "__main__":
    main()
