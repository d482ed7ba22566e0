"""Storage and checkpoint traffic of a training step: background I/O next to the training traffic.

* Storage reads: every step the hosts read the *next* step's batch from front-end storage
  (``micro_batch_size * seq_len * storage.bytes_per_token`` per micro-batch, one read per
  server for the micro-batches its first-stage ranks consume); step s+1's first forward of a
  rank waits for the read issued at the start of step s (prefetch).
* Checkpoint writes (every ``checkpoint.every_steps`` steps): each rank writes its ``1/dp``
  share of the weights (+ optimizer state), from the host to front-end storage or from the
  accelerator to back-end storage, in the background during the next step
  (``asynchronous``) or at the end of the step, before its barrier.

Both are asynchronous transfers (no stream order); they slow training only by contention.
"""

from __future__ import annotations

from typing import Any

import networkx as nx

from netsim.errors import WorkloadError
from netsim.workload.context import BuildContext
from netsim.workload.emit import OpEmitter
from netsim.workload.gradients import GradientReducer
from netsim.workload.plan import Collective, Deps

__all__ = ["StorageTraffic", "host_of", "storage_targets"]


def storage_targets(graph: nx.DiGraph, network: str) -> list[str]:
    """Storage devices of ``network`` (frontend / backend) in index order."""
    found = [
        (int(a.get("index", 0)), str(n))
        for n, a in graph.nodes(data=True)
        if a.get("kind") == "storage" and a.get("network") == network
    ]
    return [n for _, n in sorted(found)]


def host_of(graph: nx.DiGraph, device: str) -> str:
    """The host (CPU) device of ``device``'s server."""
    from netsim.topology.model import host_name

    node = int(graph.nodes[device].get("node", -1))
    host = host_name(node)
    if host not in graph:
        raise WorkloadError(f"server {node} has no host device {host!r} in the topology", field="storage")
    return host


class StorageTraffic:
    """Batch reads and checkpoint writes."""

    def __init__(self, ctx: BuildContext, emit: OpEmitter, grads: GradientReducer) -> None:
        self.ctx = ctx
        self.emit = emit
        self.grads = grads
        #: per (step, rank): the reads its first forward waits for
        self.data_ready: dict[tuple[int, int], Deps] = {}

    def _readers(self) -> dict[int, dict[int, int]]:
        """node -> reader rank -> micro-batches it reads for (the ranks of the first stage; under
        context parallelism each CP rank loads the whole micro-batch and keeps its share, as
        Megatron's ``get_batch`` does)."""
        L, S = self.ctx.layout, self.ctx.schedule
        readers: dict[int, dict[int, int]] = {}
        for d in range(L.dpc):
            for mb in range(S.m):
                stage, _ = S.locate(mb, 0)
                r = L.rank_of(stage, d, 0)
                node_readers = readers.setdefault(L.nodes[r], {})
                node_readers[r] = node_readers.get(r, 0) + 1
        return readers

    def reads(self, step: int, start: dict[int, Deps]) -> None:
        """The hosts read the batch of step ``step + 1`` from front-end storage (issued now)."""
        spec, L, graph = self.ctx.spec, self.ctx.layout, self.ctx.graph
        st = spec.storage
        if not st.enabled:
            return
        targets = storage_targets(graph, "frontend")
        if not targets:
            raise WorkloadError(
                "the topology has no front-end storage to read the batch from; set storage.enabled: false "
                "or give the topology frontend.storage",
                source=spec.source,
                field="storage.enabled",
            )
        per_mb = spec.micro_batch_size * spec.model.seq_len * st.bytes_per_token
        lanes = self.emit.lanes
        readers = self._readers()
        reads: dict[int, list[tuple[Collective, list[int]]]] = {}  # issuing rank -> (read, its readers)
        for node in sorted(readers):
            ranks = readers[node]
            owner = min(ranks)
            coll = Collective(
                ("storage", step, node),
                "transfer",
                (owner,),
                per_mb * sum(ranks.values()),
                "storage",
                "storage.read",
                src=targets[node % len(targets)],
                dst=host_of(graph, L.devices[owner]),
                step=step,
                network="frontend",
            )
            reads.setdefault(lanes.rep_of(owner), []).append((coll, list(ranks)))
        for issuer, items in sorted(reads.items()):
            for coll_list in lanes.batches(items):  # a lockstep plan: its unit's reads as one op
                first = coll_list[0][0]
                made = lanes.merge(first.key, [(c.key, c) for c, _ in coll_list])
                ids = self.emit.comm(
                    issuer,
                    step,
                    "storage",
                    list(start.get(issuer, [])),
                    first.key,
                    made,
                    ordered=False,
                    background=True,
                )
                ready = {lanes.rep_of(t) for _, rs in coll_list for r in rs for t in L.tp_group(r)}
                for t in sorted(ready):
                    self.data_ready.setdefault((step + 1, t), []).extend(ids)

    def checkpoint(self, step: int, deps_of: dict[int, Deps], background: bool) -> dict[int, Deps]:
        """Every rank writes its share of the model (+ optimizer) state."""
        spec, L, graph = self.ctx.spec, self.ctx.layout, self.ctx.graph
        ck = spec.checkpoint
        target = ck.target
        targets = storage_targets(graph, target)
        if not targets:
            hint = (
                "frontend.storage"
                if target == "frontend"
                else "backend.storage (e.g. --set topology.backend.storage.bandwidth=400Gbps)"
            )
            raise WorkloadError(
                f"the topology has no {target} storage to write the checkpoint to; give it {hint}",
                source=spec.source,
                field="checkpoint.target",
            )
        prec = self.grads.precision
        state = ck.optimizer_bytes_per_param if ck.optimizer_bytes_per_param is not None else prec.held_state
        per_elem = prec.param + (state if ck.include_optimizer else 0.0)
        out: dict[int, Deps] = {}

        def instance(rank: int) -> tuple[tuple[Any, ...], Collective]:
            dev = L.devices[rank]
            key = ("checkpoint", step, rank)
            return key, Collective(
                key,
                "transfer",
                (rank,),
                self.grads.shard(rank) * per_elem,
                "checkpoint",
                "checkpoint.write",
                src=host_of(graph, dev) if target == "frontend" else dev,
                dst=targets[rank % len(targets)],
                step=step,
                network=target,
            )

        for rank in self.emit.lanes.reps:
            key, coll = instance(rank)
            out[rank] = self.emit.comm(
                rank,
                step,
                "checkpoint",
                deps_of.get(rank, []),
                key,
                coll,
                ordered=False,
                background=background,
                lanes=("rank", instance),
            )
        return out
