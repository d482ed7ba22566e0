"""Synthetic run directories that follow docs/CONTRACTS.md ("Run directory") exactly.

:func:`make_run_dir` builds a small but internally consistent run: a per-rank op schedule
(attention and expert compute on a ``compute`` stream, EP all-to-all dispatch/combine and a DP
all-reduce on a ``comm`` stream), the ``ranks`` breakdown computed from those ops by interval
arithmetic, links with utilisation, a tier time series, a node traffic matrix, all-to-all rows
per layer, expert load, and a summary whose totals are sums of those tables.  ``time_scale``
and ``byte_scale`` multiply every time and byte count, so two runs with known ratios can be
compared.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from netsim.io import MARKER, write_json, write_table


def _union(intervals: Iterable[tuple[float, float]]) -> list[tuple[float, float]]:
    out: list[tuple[float, float]] = []
    for a, b in sorted(intervals):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def _length(intervals: list[tuple[float, float]]) -> float:
    return sum(b - a for a, b in intervals)


def _intersection(x: list[tuple[float, float]], y: list[tuple[float, float]]) -> float:
    total = 0.0
    for a, b in x:
        for c, d in y:
            total += max(0.0, min(b, d) - max(a, c))
    return total


def breakdown_from_ops(ops: pd.DataFrame, step: float) -> dict[int, dict[str, float]]:
    """compute-only / comm-only / overlap / idle seconds per rank from an ops table."""
    out = {}
    for rank, grp in ops.groupby("rank"):
        c, k = grp[grp.kind == "compute"], grp[grp.kind == "comm"]
        comp = _union(zip(c["start_s"], c["end_s"], strict=True))
        comm = _union(zip(k["start_s"], k["end_s"], strict=True))
        both = _intersection(comp, comm)
        busy = _length(comp) + _length(comm) - both
        out[int(rank)] = {
            "compute_s": _length(comp) - both,
            "communication_s": _length(comm) - both,
            "overlap_s": both,
            "idle_s": step - busy,
        }
    return out


def make_run_dir(
    path: Path,
    *,
    nodes: int = 2,
    gpus: int = 4,
    layers: int = 2,
    microbatches: int = 2,
    experts: int = 8,
    moe: bool = True,
    time_scale: float = 1.0,
    byte_scale: float = 1.0,
    overlapping: bool = False,
    omit: Iterable[str] = (),
    csv_only: bool = False,
    seed: int = 0,
    topology: str = "synthetic-leafspine",
    workload: str = "synthetic-moe",
) -> Path:
    """Write a synthetic run directory at ``path`` and return it."""
    omit = set(omit)
    path.mkdir(parents=True, exist_ok=True)
    (path / MARKER).write_text('{"kind": "run"}\n')  # like a directory `netsim run` wrote
    n_ranks = nodes * gpus
    us = 1e-6 * time_scale
    ops_rows: list[dict[str, Any]] = []
    a2a_rows: list[dict[str, Any]] = []
    ep_bytes = 4.0e6 * byte_scale
    for rank in range(n_ranks):
        node, g = divmod(rank, gpus)
        device = f"n{node}.g{g}"
        t = 0.0
        jitter = (rank % 3) * 2.0  # ranks differ a little

        def add(
            stream: str,
            name: str,
            kind: str,
            tc: str,
            layer: int,
            mb: int,
            start: float,
            dur: float,
            where: tuple[int, str, int] = (rank, device, node),
        ) -> None:
            ops_rows.append(
                {
                    "rank": where[0],
                    "device": where[1],
                    "node": where[2],
                    "stream": stream,
                    "name": name,
                    "kind": kind,
                    "traffic_class": tc,
                    "layer": layer,
                    "microbatch": mb,
                    "start_s": start * us,
                    "end_s": (start + dur) * us,
                }
            )

        for mb in range(microbatches):
            for layer in range(layers):
                add("compute", "attn-fwd", "compute", "", layer, mb, t, 40.0 + jitter)
                t += 40.0 + jitter
                if moe:
                    add("comm", "ep-dispatch", "comm", "ep", layer, mb, t, 25.0)
                    t += 25.0
                    add("compute", "expert-fwd", "compute", "", layer, mb, t, 30.0)
                    t += 30.0
                    add("comm", "ep-combine", "comm", "ep", layer, mb, t, 20.0)
                    t += 20.0
                else:
                    add("compute", "mlp-fwd", "compute", "", layer, mb, t, 30.0)
                    t += 30.0
        # DP all-reduce overlapping the last backward compute
        add("compute", "backward", "compute", "", -1, -1, t, 60.0)
        add("comm", "dp-allreduce", "comm", "dp", -1, -1, t + 20.0, 70.0)
        if overlapping:  # a second collective in flight on the same stream, partially overlapping
            add("comm", "pp-send", "comm", "pp", -1, -1, t + 50.0, 60.0)
    ops = pd.DataFrame(ops_rows)
    step = float(ops["end_s"].max())
    bd = breakdown_from_ops(ops, step)
    ranks = pd.DataFrame(
        [
            {
                "rank": r,
                "device": f"n{r // gpus}.g{r % gpus}",
                "node": r // gpus,
                **bd[r],
                "dp": r // gpus,
                "pp": 0,
                "ep": r % gpus,
                "tp": 0,
            }
            for r in range(n_ranks)
        ]
    )
    if moe:
        for layer in range(layers):
            for mb in range(microbatches):
                for phase, name in (("fwd-dispatch", "ep-dispatch"), ("fwd-combine", "ep-combine")):
                    sel = ops[(ops["name"] == name) & (ops["layer"] == layer) & (ops["microbatch"] == mb)]
                    start, end = float(sel["start_s"].min()), float(sel["end_s"].max())
                    a2a_rows.append(
                        {
                            "layer": layer,
                            "microbatch": mb,
                            "phase": phase,
                            "start_s": start,
                            "end_s": end,
                            "duration_s": end - start,
                            "bytes": ep_bytes * n_ranks,
                        }
                    )
    alltoall = pd.DataFrame(
        a2a_rows, columns=["layer", "microbatch", "phase", "start_s", "end_s", "duration_s", "bytes"]
    )

    # traffic matrix: EP everywhere (more intra-node), DP ring between nodes
    tm_rows = []
    for s in range(nodes):
        for d in range(nodes):
            if moe:
                tm_rows.append(
                    {
                        "src_node": s,
                        "dst_node": d,
                        "traffic_class": "ep",
                        "bytes": (3.0 if s == d else 1.0) * 1e6 * byte_scale * layers * microbatches,
                    }
                )
            if d == (s + 1) % nodes and nodes > 1:
                tm_rows.append(
                    {"src_node": s, "dst_node": d, "traffic_class": "dp", "bytes": 8.0e6 * byte_scale}
                )
            if s == d:
                tm_rows.append(
                    {"src_node": s, "dst_node": d, "traffic_class": "dp", "bytes": 2.0e6 * byte_scale}
                )
    tm = pd.DataFrame(tm_rows)

    # links: one NVLink pair per GPU, one NIC uplink pair per GPU, leaf-spine pairs
    link_rows = []
    for r in range(n_ranks):
        node, g = divmod(r, gpus)
        dev = f"n{node}.g{g}"
        for src, dst, cls, tier, net, cap in (
            (dev, f"n{node}.nvsw", "nvlink", "intra-node", "node", 450e9),
            (f"n{node}.nvsw", dev, "nvlink", "intra-node", "node", 450e9),
            (dev, "leaf0", "ib", "leaf", "backend", 50e9),
            ("leaf0", dev, "ib", "leaf", "backend", 50e9),
        ):
            link_rows.append((src, dst, cls, tier, net, cap))
    for spine in range(2):
        link_rows.append(("leaf0", f"spine{spine}", "ib", "spine", "backend", 400e9))
        link_rows.append((f"spine{spine}", "leaf0", "ib", "spine", "backend", 400e9))
    link_rows.append(("host0", "storage0", "ethernet", "frontend", "frontend", 25e9))
    links = []
    for i, (src, dst, cls, tier, net, cap) in enumerate(link_rows):
        util = ((i * 37) % 91) / 100.0  # deterministic spread in [0, 0.9]
        mean = util * 0.4
        links.append(
            {
                "link": f"{src}->{dst}",
                "src": src,
                "dst": dst,
                "class": cls,
                "tier": tier,
                "network": net,
                "capacity_Bps": cap,
                "bytes": mean * cap * step,
                "busy_s": step * min(1.0, util + 0.05),
                "peak_utilization": util,
                "mean_utilization": mean,
            }
        )
    links_df = pd.DataFrame(links)

    # tier time series: 10 windows per tier
    ts_rows = []
    tiers = links_df.groupby(["network", "tier"])["capacity_Bps"].sum()
    for (net, tier), cap in tiers.items():
        for w in range(10):
            t0, t1 = step * w / 10, step * (w + 1) / 10
            util = 0.05 * ((w * 7 + len(tier)) % 10)
            ts_rows.append(
                {
                    "t0_s": t0,
                    "t1_s": t1,
                    "tier": tier,
                    "network": net,
                    "bytes": util * cap * (t1 - t0),
                    "capacity_Bps": cap,
                }
            )
    ts = pd.DataFrame(ts_rows)

    rng = np.random.default_rng(seed)
    load_rows = []
    if moe:
        for step_i in range(2):
            for layer in range(layers):
                tokens = rng.multinomial(1024, np.full(experts, 1.0 / experts))
                for e in range(experts):
                    load_rows.append({"step": step_i, "layer": layer, "expert": e, "tokens": int(tokens[e])})
    expert_load = pd.DataFrame(load_rows)

    bytes_by_class = {
        c: float(tm.loc[tm.traffic_class == c, "bytes"].sum()) for c in ("dp", "pp", "ep", "tp")
    }
    bytes_by_class.update({"storage": 1.0e6 * byte_scale, "checkpoint": 0.0})
    summary: dict[str, Any] = {
        "step_time_s": step,
        "breakdown_s": {
            "compute": float(ranks["compute_s"].mean()),
            "communication": float(ranks["communication_s"].mean()),
            "overlap": float(ranks["overlap_s"].mean()),
            "idle": float(ranks["idle_s"].mean()),
        },
        "bytes_by_class": bytes_by_class,
        "bytes_by_link_class": {
            c: float(links_df.loc[links_df["class"] == c, "bytes"].sum())
            for c in sorted(links_df["class"].unique())
        },
        "east_west_bytes": float(tm["bytes"].sum()),
        "north_south_bytes": 1.0e6 * byte_scale,
        "exposed_comm_s_by_class": {"dp": 10.0 * us, "ep": 45.0 * us * layers * microbatches if moe else 0.0},
        "checkpoint_time_s": None,
        "num_ranks": n_ranks,
        "topology": topology,
        "workload": workload,
        "seed": seed,
    }
    if moe:
        ep = float(tm.loc[tm.traffic_class == "ep", "bytes"].sum())
        inter = float(tm.loc[(tm.traffic_class == "ep") & (tm.src_node != tm.dst_node), "bytes"].sum())
        summary.update(
            {
                "ep_bytes_local_rank": 0.1 * (ep - inter),
                "ep_bytes_intra_node": 0.9 * (ep - inter),
                "ep_bytes_inter_node": inter,
                "expert_load_cv": float(
                    expert_load.groupby(["layer", "expert"])["tokens"]
                    .sum()
                    .groupby("layer")
                    .agg(lambda s: s.std(ddof=0) / s.mean())
                    .mean()
                ),
                "drop_rate": 0.0125,
                "alltoall_share": float(alltoall["duration_s"].sum()) / step,
            }
        )
    write_json(summary, path / "summary.json")
    (path / "scenario.yaml").write_text(f"topology: {topology}\nworkload: {workload}\nseed: {seed}\n")
    tables = {
        "ranks": ranks,
        "links": links_df,
        "ops": ops,
        "tier_timeseries": ts,
        "traffic_matrix": tm,
    }
    if moe:
        tables["alltoall_layers"] = alltoall
        tables["expert_load"] = expert_load
    for name, df in tables.items():
        if name not in omit:
            write_table(df, path, name, parquet=not csv_only)
    return path


#: Type of the ``make_run`` fixture: ``make_run("name", **make_run_dir options)`` -> run directory.
RunFactory = Callable[..., Path]
