"""Shared helpers for replay tests: a hand-built topology and a compute model with fixed times."""

from __future__ import annotations

from typing import Any

import networkx as nx

from netsim.config.workload import WorkloadSpec, load_workload


def chain_topology(nodes: int, capacity_Bps: float, latency_s: float = 0.0) -> nx.DiGraph:
    """``nodes`` servers with one accelerator each, all on one switch ``sw``; every cable has
    ``capacity_Bps`` per direction and ``latency_s``."""
    g = nx.DiGraph(
        name="chain",
        num_nodes=nodes,
        accelerators_per_node=1,
        accelerator={"name": "fake", "peak_flops": {"bf16": 1e15}, "memory_Bps": 1e12, "memory_bytes": 8e10},
    )
    g.add_node(
        "sw",
        kind="switch",
        role="leaf",
        node=-1,
        index=0,
        network="backend",
        latency_s=0.0,
        rail=-1,
        plane=-1,
        nic="",
        tier=1,
    )
    for k in range(nodes):
        dev = f"n{k}.g0"
        g.add_node(
            dev,
            kind="accelerator",
            role="gpu",
            node=k,
            index=0,
            network="node",
            latency_s=0.0,
            rail=0,
            plane=-1,
            nic="",
            tier=0,
        )
        for u, v in ((dev, "sw"), ("sw", dev)):
            g.add_edge(
                u,
                v,
                capacity_Bps=capacity_Bps,
                latency_s=latency_s,
                link_class="ib",
                network="backend",
                tier="nic-leaf",
            )
    return g


class FixedCompute:
    """A compute model where only the attention kernel takes time: ``fwd_s`` forward and
    ``bwd_s`` backward per call (one call per layer); every other kernel takes 0 s."""

    name = "fixed"

    def __init__(self, fwd_s: float, bwd_s: float) -> None:
        self.fwd_s = fwd_s
        self.bwd_s = bwd_s

    def time(self, kernel: str, pass_: str = "fwd", *, dtype: str | None = None, **shape: float) -> float:
        if kernel != "attention":
            return 0.0
        return self.fwd_s if pass_ == "fwd" else self.bwd_s


def dense_pipeline(
    pp: int,
    microbatches: int,
    *,
    layers: int | None = None,
    schedule: str | dict[str, Any] = "1f1b",
    act_bytes: float = 1e6,
    **extra: Any,
) -> WorkloadSpec:
    """A dense model with one layer per stage whose pipeline message is ``act_bytes``
    (micro-batch 1 x seq_len 1000 x hidden ``act_bytes / 2000`` x 2 bytes)."""
    hidden = int(act_bytes / 2000)
    data: dict[str, Any] = {
        "name": "pipe",
        "model": {
            "layers": layers or pp,
            "hidden": hidden,
            "ffn_hidden": 4 * hidden,
            "heads": 1,
            "vocab": 1000,
            "seq_len": 1000,
            "dtype": "bf16",
        },
        "parallelism": {"pp": pp, "tp": 1, "dp": 1, "ep": 1, "zero_stage": 0},
        "micro_batch_size": 1,
        "num_microbatches": microbatches,
        "schedule": schedule if isinstance(schedule, dict) else {"name": schedule},
        "storage": {"enabled": False},
        **extra,
    }
    return load_workload(data, source="test")
