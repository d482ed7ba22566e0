"""Benchmark: the error of the stream and coflow collective models against the exact one, and
what they save.

Part ``collectives``: collectives alone on dgx-h100 (ring all-reduce / reduce-scatter /
all-gather and hierarchical all-reduce, 1 and 4 servers, three sizes, 2 us step latency):
simulated time with exact and stream plans and the relative error.

Part ``alltoall``: all-to-all alone on dgx-h100 (uniform 64 MiB per pair, and all-to-allv with
skewed sizes: gamma(0.5)-distributed, mean 64 MiB, seed 0), 1 to 32 servers, ECMP: simulated
time and wall time with exact plans and with coflows.

Part ``replays``: training-step replays (built-in scenarios and presets): step time, flows and
wall time with ``options.collective_model`` exact, stream and coflow.

    python benchmarks/collective_models.py [--part collectives alltoall replays] [--large]

Writes Markdown tables to stdout.  Not a test (wall times depend on the machine); the errors are
deterministic.
"""

from __future__ import annotations

import argparse
import time

COLLECTIVES = [
    ("all_reduce", "ring"),
    ("reduce_scatter", "ring"),
    ("all_gather", "ring"),
    ("all_reduce", "hierarchical"),
]
SIZES = [64 * 2**10, 4 * 2**20, 256 * 2**20]
REPLAYS = [
    ("built-in default (Mixtral-style, 2 x dgx-h100)", []),
    ("mixtral-8x7b, 4 x dgx-h100", ["topology=dgx-h100", "nodes=4", "workload=mixtral-8x7b"]),
    (
        "locmoe-pangu, 2 x ascend-910a, 4 sequences per replica",
        [
            "topology=ascend-910a",
            "nodes=2",
            "workload=locmoe-pangu",
            "workload.micro_batch_size=4",
            "workload.global_batch_size=8",
            "options.allow_oom=true",  # the preset's model state needs 8 servers' optimizer sharding
        ],
    ),
    ("gpt-dense, 2 x dgx-h100", ["topology=dgx-h100", "nodes=2", "workload=gpt-dense"]),
]
#: ``--large``: the LocMoE step at 8 nodes, with packet spraying and with ECMP, and a reduced
#: DeepSeek-V3 step (expert all-to-all across 2 servers) (minutes each)
LARGE_REPLAYS = [
    (
        "locmoe-pangu, 8 x ascend-910a, spray",
        ["topology=ascend-910a", "nodes=8", "workload=locmoe-pangu", "options.path_policy=spray"],
    ),
    ("locmoe-pangu, 8 x ascend-910a, ECMP", ["topology=ascend-910a", "nodes=8", "workload=locmoe-pangu"]),
    (
        "deepseek-v3 reduced: 8 x h800, PP 4, 13 layers, EP 16, 8 micro-batches",
        [
            "topology=h800",
            "nodes=8",
            "workload=deepseek-v3",
            "workload.parallelism.pp=4",
            "workload.parallelism.pipeline_layers=null",
            "workload.parallelism.ep=16",
            "workload.model.layers=13",
            "workload.num_microbatches=8",
            "options.routing_samples=1",
            "options.allow_oom=true",
        ],
    ),
]


def collectives() -> None:
    from netsim.collectives import accelerators, simulate_collective
    from netsim.topology import load_topology

    print("| op | algo | servers | size | exact us | stream us | error |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for nodes in (1, 4):
        g = load_topology("dgx-h100", nodes=nodes)
        devs = accelerators(g)
        for op, algo in COLLECTIVES:
            if algo == "hierarchical" and nodes == 1:
                continue
            for size in SIZES:
                e = simulate_collective(g, op, devs, size, algo=algo, step_latency_s=2e-6)
                s = simulate_collective(g, op, devs, size, algo=algo, step_latency_s=2e-6, model="stream")
                print(
                    f"| {op} | {algo} | {nodes} | {size / 2**20:g} MiB | {e * 1e6:.1f} | {s * 1e6:.1f} "
                    f"| {100 * (s - e) / e:+.1f}% |",
                    flush=True,
                )


def alltoall(servers: list[int]) -> None:
    import numpy as np

    from netsim.collectives import accelerators, simulate_collective
    from netsim.topology import load_topology

    print("| op | servers | GPUs | exact ms | coflow ms | error | exact wall s | coflow wall s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for op in ("all_to_all", "all_to_allv"):
        for nodes in servers:
            g = load_topology("dgx-h100", nodes=nodes)
            devs = accelerators(g)
            n = len(devs)
            matrix = None
            if op == "all_to_allv":
                matrix = np.random.default_rng(0).gamma(0.5, 2.0, size=(n, n)) * 64 * 2**20
                np.fill_diagonal(matrix, 0.0)
            out = {}
            for model in ("exact", "coflow"):
                t0 = time.perf_counter()
                sim = simulate_collective(g, op, devs, 64 * 2**20 * n, matrix=matrix, model=model)
                out[model] = (sim, time.perf_counter() - t0)
            (e, we), (c, wc) = out["exact"], out["coflow"]
            print(
                f"| {op} | {nodes} | {n} | {e * 1e3:.2f} | {c * 1e3:.2f} | {100 * (c - e) / e:+.2f}% | {we:.1f} "
                f"| {wc:.2f} |",
                flush=True,
            )


def replays(runs: list[tuple[str, list[str]]]) -> None:
    """Exact, stream and coflow replays of ``runs``: step time, errors, flows, wall times."""
    from netsim.config.scenario import load_scenario
    from netsim.run import prepare, simulate

    models = ("exact", "stream", "coflow")
    print(
        "| run | exact step s | stream error | coflow error | exact flows | stream flows | exact wall s | "
        "stream wall s | coflow wall s |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, overrides in runs:
        out = {}
        for model in models:
            spec = load_scenario(None, [*overrides, f"options.collective_model={model}"])
            t0 = time.perf_counter()
            prep = prepare(spec)
            res, net = simulate(prep)
            out[model] = (res.step_times_s[0], net.num_flows, time.perf_counter() - t0)
        (te, fe, we), (ts, fs, ws), (tc, _, wc) = (out[m] for m in models)
        print(
            f"| {name} | {te:.4f} | {100 * (ts - te) / te:+.2f}% | {100 * (tc - te) / te:+.2f}% | {fe:,} | {fs:,} "
            f"| {we:.1f} | {ws:.1f} | {wc:.1f} |",
            flush=True,
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parts = ["collectives", "alltoall", "replays"]
    ap.add_argument("--part", nargs="+", default=parts, choices=parts)
    ap.add_argument(
        "--large",
        action="store_true",
        help="also replay the LocMoE step at 8 nodes and the all-to-all(v) at 32 servers (minutes)",
    )
    args = ap.parse_args()
    if "collectives" in args.part:
        collectives()
    if "alltoall" in args.part:
        alltoall([1, 4, 16, 32] if args.large else [1, 4, 16])
    if "replays" in args.part:
        replays(REPLAYS + (LARGE_REPLAYS if args.large else []))


if __name__ == "__main__":
    main()
