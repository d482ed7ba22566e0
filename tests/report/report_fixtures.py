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
from dataclasses import dataclass
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


@dataclass(frozen=True)
class _Shape:
    """The cluster and model a synthetic run describes, and the factors its times and bytes carry."""

    nodes: int
    gpus: int
    layers: int
    microbatches: int
    experts: int
    moe: bool
    time_scale: float
    byte_scale: float

    @property
    def n_ranks(self) -> int:
        return self.nodes * self.gpus

    @property
    def us(self) -> float:
        """One synthetic microsecond, in seconds, after ``time_scale``."""
        return 1e-6 * self.time_scale


def _op_row(
    rank: int, gpus: int, stream: str, name: str, tc: str, layer: int, mb: int, span_us: tuple[float, float], us: float
) -> dict[str, Any]:
    """One ``ops`` row of ``rank``; ``span_us`` is (start, duration) in synthetic microseconds."""
    node, g = divmod(rank, gpus)
    start, dur = span_us
    return {
        "rank": rank,
        "device": f"n{node}.g{g}",
        "node": node,
        "stream": stream,
        "name": name,
        "kind": stream,  # the compute stream runs compute ops, the comm stream comm ops
        "traffic_class": tc,
        "layer": layer,
        "microbatch": mb,
        "start_s": start * us,
        "end_s": (start + dur) * us,
    }


def _rank_ops(shape: _Shape, rank: int, overlapping: bool) -> list[dict[str, Any]]:
    """The op schedule of one rank: per microbatch and layer attention, then expert (or MLP) compute
    between EP dispatch and combine, then a backward compute overlapped by the DP all-reduce."""
    rows: list[dict[str, Any]] = []

    def add(stream: str, name: str, tc: str, layer: int, mb: int, start: float, dur: float) -> None:
        rows.append(_op_row(rank, shape.gpus, stream, name, tc, layer, mb, (start, dur), shape.us))

    t = 0.0
    jitter = (rank % 3) * 2.0  # ranks differ a little
    for mb in range(shape.microbatches):
        for layer in range(shape.layers):
            add("compute", "attn-fwd", "", layer, mb, t, 40.0 + jitter)
            t += 40.0 + jitter
            if shape.moe:
                add("comm", "ep-dispatch", "ep", layer, mb, t, 25.0)
                t += 25.0
                add("compute", "expert-fwd", "", layer, mb, t, 30.0)
                t += 30.0
                add("comm", "ep-combine", "ep", layer, mb, t, 20.0)
                t += 20.0
            else:
                add("compute", "mlp-fwd", "", layer, mb, t, 30.0)
                t += 30.0
    # DP all-reduce overlapping the last backward compute
    add("compute", "backward", "", -1, -1, t, 60.0)
    add("comm", "dp-allreduce", "dp", -1, -1, t + 20.0, 70.0)
    if overlapping:  # a second collective in flight on the same stream, partially overlapping
        add("comm", "pp-send", "pp", -1, -1, t + 50.0, 60.0)
    return rows


def build_ops(shape: _Shape, overlapping: bool) -> pd.DataFrame:
    """The ``ops`` table: every rank's op schedule, rank by rank."""
    return pd.DataFrame([row for rank in range(shape.n_ranks) for row in _rank_ops(shape, rank, overlapping)])


def build_ranks(ops: pd.DataFrame, step: float, shape: _Shape) -> pd.DataFrame:
    """The ``ranks`` table: each rank's breakdown (from its ops) and its parallel coordinates."""
    bd = breakdown_from_ops(ops, step)
    gpus = shape.gpus
    return pd.DataFrame(
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
            for r in range(shape.n_ranks)
        ]
    )


def build_kernels(ops: pd.DataFrame) -> pd.DataFrame:
    """The ``kernels`` table: the busiest rank's compute ops (one stage), one GEMM row per op name."""
    comp = ops[ops["kind"] == "compute"].assign(dur=lambda d: d["end_s"] - d["start_s"])
    per_rank = comp.groupby("rank")["dur"].sum()
    rank = int(per_rank.idxmax())
    mine = comp[comp["rank"] == rank].groupby("name")["dur"].agg(["count", "sum"]).sort_values("sum", ascending=False)
    total = float(mine["sum"].sum())
    return pd.DataFrame(
        [
            {
                "stage": 0,
                "rank": rank,
                "op": name,
                "kernel": "gemm",
                "kernel_class": "gemm",
                "pass": "bwd" if str(name).startswith("B") else "fwd",
                "shape": "k=4096 m=4096 n=4096",
                "dtype": "bfloat16",
                "source": "table:surface",
                "calls": int(row["count"]),
                "time_s": float(row["sum"]),
                "share": float(row["sum"]) / total,
                "tflops": 600.0,
                "gbps": 300.0,
            }
            for name, row in mine.iterrows()
        ]
    )


def build_alltoall(ops: pd.DataFrame, shape: _Shape) -> pd.DataFrame:
    """The ``alltoall_layers`` table: per layer and microbatch, the span of each EP phase over all ranks."""
    ep_bytes = 4.0e6 * shape.byte_scale
    rows: list[dict[str, Any]] = []
    for layer in range(shape.layers if shape.moe else 0):
        for mb in range(shape.microbatches):
            for phase, name in (("fwd-dispatch", "ep-dispatch"), ("fwd-combine", "ep-combine")):
                sel = ops[(ops["name"] == name) & (ops["layer"] == layer) & (ops["microbatch"] == mb)]
                start, end = float(sel["start_s"].min()), float(sel["end_s"].max())
                rows.append(
                    {
                        "layer": layer,
                        "microbatch": mb,
                        "phase": phase,
                        "start_s": start,
                        "end_s": end,
                        "duration_s": end - start,
                        "bytes": ep_bytes * shape.n_ranks,
                    }
                )
    return pd.DataFrame(rows, columns=["layer", "microbatch", "phase", "start_s", "end_s", "duration_s", "bytes"])


def build_traffic_matrix(shape: _Shape) -> pd.DataFrame:
    """The ``traffic_matrix`` table: EP everywhere (more intra-node), DP ring between nodes, DP within each."""
    nodes, byte_scale = shape.nodes, shape.byte_scale
    rows: list[dict[str, Any]] = []
    for s in range(nodes):
        for d in range(nodes):
            if shape.moe:
                ep = (3.0 if s == d else 1.0) * 1e6 * byte_scale * shape.layers * shape.microbatches
                rows.append({"src_node": s, "dst_node": d, "traffic_class": "ep", "bytes": ep})
            if d == (s + 1) % nodes and nodes > 1:
                rows.append({"src_node": s, "dst_node": d, "traffic_class": "dp", "bytes": 8.0e6 * byte_scale})
            if s == d:
                rows.append({"src_node": s, "dst_node": d, "traffic_class": "dp", "bytes": 2.0e6 * byte_scale})
    return pd.DataFrame(rows)


def _link_specs(shape: _Shape) -> list[tuple[str, str, str, str, str, float]]:
    """(src, dst, class, tier, network, capacity B/s) of every link: an NVLink pair and a NIC uplink
    pair per GPU, leaf-spine pairs, and one frontend storage link."""
    specs: list[tuple[str, str, str, str, str, float]] = []
    for r in range(shape.n_ranks):
        node, g = divmod(r, shape.gpus)
        dev = f"n{node}.g{g}"
        specs += [
            (dev, f"n{node}.nvsw", "nvlink", "intra-node", "node", 450e9),
            (f"n{node}.nvsw", dev, "nvlink", "intra-node", "node", 450e9),
            (dev, "leaf0", "ib", "leaf", "backend", 50e9),
            ("leaf0", dev, "ib", "leaf", "backend", 50e9),
        ]
    for spine in range(2):
        specs.append(("leaf0", f"spine{spine}", "ib", "spine", "backend", 400e9))
        specs.append((f"spine{spine}", "leaf0", "ib", "spine", "backend", 400e9))
    specs.append(("host0", "storage0", "ethernet", "frontend", "frontend", 25e9))
    return specs


def build_links(shape: _Shape, step: float) -> pd.DataFrame:
    """The ``links`` table: every link with a deterministic spread of utilisations over one step."""
    links = []
    for i, (src, dst, cls, tier, net, cap) in enumerate(_link_specs(shape)):
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
    return pd.DataFrame(links)


def build_tier_timeseries(links: pd.DataFrame, step: float) -> pd.DataFrame:
    """The ``tier_timeseries`` table: 10 windows per (network, tier) of the links table."""
    rows = []
    tiers = links.groupby(["network", "tier"])["capacity_Bps"].sum()
    for (net, tier), cap in tiers.items():
        for w in range(10):
            t0, t1 = step * w / 10, step * (w + 1) / 10
            util = 0.05 * ((w * 7 + len(tier)) % 10)
            rows.append(
                {
                    "t0_s": t0,
                    "t1_s": t1,
                    "tier": tier,
                    "network": net,
                    "bytes": util * cap * (t1 - t0),
                    "capacity_Bps": cap,
                }
            )
    return pd.DataFrame(rows)


def build_expert_load(shape: _Shape, seed: int) -> pd.DataFrame:
    """The ``expert_load`` table: 1024 tokens per layer and step, spread over the experts at random (``seed``)."""
    rng = np.random.default_rng(seed)
    rows = []
    for step_i in range(2 if shape.moe else 0):
        for layer in range(shape.layers):
            tokens = rng.multinomial(1024, np.full(shape.experts, 1.0 / shape.experts))
            for e in range(shape.experts):
                rows.append({"step": step_i, "layer": layer, "expert": e, "tokens": int(tokens[e])})
    return pd.DataFrame(rows)


def _moe_summary(tm: pd.DataFrame, expert_load: pd.DataFrame, alltoall: pd.DataFrame, step: float) -> dict[str, Any]:
    """The summary fields only a MoE run has: EP bytes by locality, load imbalance, all-to-all share."""
    ep = float(tm.loc[tm.traffic_class == "ep", "bytes"].sum())
    inter = float(tm.loc[(tm.traffic_class == "ep") & (tm.src_node != tm.dst_node), "bytes"].sum())
    cv_by_layer = (
        expert_load.groupby(["layer", "expert"])["tokens"]
        .sum()
        .groupby("layer")
        .agg(lambda s: s.std(ddof=0) / s.mean())
    )
    return {
        "ep_bytes_local_rank": 0.1 * (ep - inter),
        "ep_bytes_intra_node": 0.9 * (ep - inter),
        "ep_bytes_inter_node": inter,
        "expert_load_cv": float(cv_by_layer.mean()),
        "drop_rate": 0.0125,
        "alltoall_share": float(alltoall["duration_s"].sum()) / step,
    }


def build_summary(
    shape: _Shape, step: float, tables: dict[str, pd.DataFrame], scenario: dict[str, Any]
) -> dict[str, Any]:
    """``summary.json``: step time, mean breakdown and byte totals, each a sum or mean of ``tables``;
    ``scenario`` holds topology, workload and seed."""
    ranks, links, tm = tables["ranks"], tables["links"], tables["traffic_matrix"]
    us, byte_scale = shape.us, shape.byte_scale
    bytes_by_class = {c: float(tm.loc[tm.traffic_class == c, "bytes"].sum()) for c in ("dp", "pp", "ep", "tp")}
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
            c: float(links.loc[links["class"] == c, "bytes"].sum()) for c in sorted(links["class"].unique())
        },
        "east_west_bytes": float(tm["bytes"].sum()),
        "north_south_bytes": 1.0e6 * byte_scale,
        "exposed_comm_s_by_class": {
            "dp": 10.0 * us,
            "ep": 45.0 * us * shape.layers * shape.microbatches if shape.moe else 0.0,
        },
        "checkpoint_time_s": None,
        "num_ranks": shape.n_ranks,
        **scenario,
    }
    kern = tables["kernels"]
    total = float(kern["time_s"].sum())
    summary["compute_kernels"] = {
        "rank": int(kern["rank"].iloc[0]),
        "stage": 0,
        "kernel_time_s": total,
        "by_class_s": {"gemm": total},
        "by_source_s": {"table:surface": total},
    }
    if shape.moe:
        summary.update(_moe_summary(tm, tables["expert_load"], tables["alltoall_layers"], step))
    return summary


def build_tables(shape: _Shape, overlapping: bool, seed: int) -> tuple[float, dict[str, pd.DataFrame]]:
    """The step time and every table of the run, in the order they are written; a dense run has no
    ``alltoall_layers`` or ``expert_load``."""
    ops = build_ops(shape, overlapping)
    step = float(ops["end_s"].max())
    links = build_links(shape, step)
    tables = {
        "ranks": build_ranks(ops, step, shape),
        "links": links,
        "ops": ops,
        "tier_timeseries": build_tier_timeseries(links, step),
        "traffic_matrix": build_traffic_matrix(shape),
        "kernels": build_kernels(ops),
    }
    if shape.moe:
        tables["alltoall_layers"] = build_alltoall(ops, shape)
        tables["expert_load"] = build_expert_load(shape, seed)
    return step, tables


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
    """Write a synthetic run directory at ``path`` and return it; tables named in ``omit`` are not written."""
    shape = _Shape(nodes, gpus, layers, microbatches, experts, moe, time_scale, byte_scale)
    step, tables = build_tables(shape, overlapping, seed)
    scenario = {"topology": topology, "workload": workload, "seed": seed}
    path.mkdir(parents=True, exist_ok=True)
    (path / MARKER).write_text('{"kind": "run"}\n')  # like a directory `netsim run` wrote
    write_json(build_summary(shape, step, tables, scenario), path / "summary.json")
    (path / "scenario.yaml").write_text("".join(f"{k}: {v}\n" for k, v in scenario.items()))
    skip = set(omit)
    for name, df in tables.items():
        if name not in skip:
            write_table(df, path, name, parquet=not csv_only)
    return path


#: Type of the ``make_run`` fixture: ``make_run("name", **make_run_dir options)`` -> run directory.
RunFactory = Callable[..., Path]
