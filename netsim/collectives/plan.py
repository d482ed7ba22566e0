"""Collective plans: point-to-point transfers with dependencies, as plain (columnar) data.

A collective algorithm (ring all-reduce, double binary tree, hierarchical all-to-all, ...) is a
pure function from a group of devices and a byte count to a :class:`Plan`: a list of
:class:`Transfer` ``(id, src, dst, nbytes, deps, step)``.  A transfer may start once every
transfer in ``deps`` has *arrived* (its last byte delivered at ``dst``); ``step`` is the
algorithm's round number, kept for reports and tests.  Transfers are numbered in a
topological order: every dependency has a smaller id than the transfer that waits for it.

``src``/``dst`` are device names of the topology (accelerators, and for in-network reduction
the switch that reduces, e.g. ``n0.nvsw`` or ``leaf3``).

Large collectives have millions of transfers (an all-to-all of 1024 GPUs has ~1M), so a plan
stores its transfers column-wise in numpy arrays (``src``/``dst`` as indices into
:attr:`Plan.nodes`, sizes, steps, and the dependencies in CSR form).  :class:`Transfer`
objects are materialised only on demand (iteration, indexing), which tests and small
inspections use; the executor reads the columns directly.  Algorithms build plans with a
:class:`PlanBuilder`, either one transfer at a time (:meth:`PlanBuilder.add`) or as whole
numpy batches (:meth:`PlanBuilder.add_batch`).

**Stream plans** (``collective_model: stream``, opt-in): at scale an exact plan has a transfer
per (step, chunk, link) (a ring all-reduce of 16384 GPUs: ~4 billion).  A stream plan collapses
every ring phase to one transfer per ring link carrying all the phase's steps (each GPU streams
its blocks to its neighbour as one flow), so the bandwidth term, the contention and the link
loads stay those of the exact plan; the ``rounds`` column keeps the latency term: a transfer
stands for a dependency chain of ``rounds`` transfers and pays ``rounds`` step latencies and
``rounds`` path latencies (the mean over its phase, as the chain walks round the ring).  Ring phases
chunk-pipelined with each other (the hierarchical all-reduce's three) become a head, a body
and a tail per ring link (the first chunk, the middle ones, the last), which keep the pipeline's
fill, its steady state with the phases sharing links, and its drain
(``phases.ring_stream_piped``; within 2% of the exact plan on a two-tier fabric, up to
13% shorter on dgx-h100's, whose exact plans re-hash every chunk's flows onto the spines).
Trees, chains and in-network reductions are already one transfer per edge and chunk, and stay
exact (as do ring phases chunk-pipelined with them).  Exact plans have ``rounds = 1``.
``benchmarks/collective_models.py`` measures the error against exact plans.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import networkx as nx
import numpy as np

from netsim.errors import SpecError


class CollectiveError(SpecError):
    """A collective cannot be planned: unknown op/algorithm, bad group, bad byte matrix."""


class Transfer(NamedTuple):
    """One point-to-point transfer of a plan.

    Attributes:
        id: position in the plan (dependencies always have smaller ids).
        src, dst: device names.
        nbytes: bytes moved.
        deps: ids of the transfers that must have arrived before this one starts.
        step: the algorithm's round (ring step, tree level, ...), for reports.
    """

    id: int
    src: str
    dst: str
    nbytes: float
    deps: tuple[int, ...]
    step: int


@dataclass(frozen=True, eq=False)
class Plan:
    """The transfers of one collective, column-wise.

    Attributes:
        op: the collective (``all_reduce``, ``all_to_all``, ...).
        algo: the algorithm name it was planned with.
        nbytes: the collective's size in bytes (nccl-tests convention, see
            :mod:`netsim.collectives.nccl_tests`).
        devices: the group, in rank order.
        nodes: name table that ``src``/``dst`` index: the devices first, then any extra device
            the plan sends to (reducing switches).
        src, dst: int arrays, indices into ``nodes``.
        size: float array, bytes per transfer.
        step: int array, round per transfer.
        rounds: int array, the dependency chain length each transfer stands for (1 in exact
            plans; see the module doc).
        dep_ptr, dep_idx: dependencies in CSR form: the deps of transfer ``i`` are
            ``dep_idx[dep_ptr[i]:dep_ptr[i+1]]``.
        meta: algorithm parameters (chunks, channels, ...).
    """

    op: str
    algo: str
    nbytes: float
    devices: tuple[str, ...]
    nodes: tuple[str, ...]
    src: np.ndarray
    dst: np.ndarray
    size: np.ndarray
    step: np.ndarray
    dep_ptr: np.ndarray
    dep_idx: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)
    rounds: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    def __post_init__(self) -> None:
        n = int(self.src.shape[0])
        if self.rounds.shape[0] != n:  # not given: an exact plan
            object.__setattr__(self, "rounds", np.ones(n, dtype=np.int64))

    @property
    def stream(self) -> bool:
        """True for a stream plan (some transfer stands for more than one)."""
        return bool((self.rounds > 1).any())

    def __len__(self) -> int:
        return int(self.src.shape[0])

    def __getitem__(self, i: int) -> Transfer:
        n = len(self)
        if not -n <= i < n:
            raise IndexError(i)
        i %= max(n, 1)
        a, b = int(self.dep_ptr[i]), int(self.dep_ptr[i + 1])
        return Transfer(
            i,
            self.nodes[int(self.src[i])],
            self.nodes[int(self.dst[i])],
            float(self.size[i]),
            tuple(int(x) for x in self.dep_idx[a:b]),
            int(self.step[i]),
        )

    def __iter__(self) -> Iterator[Transfer]:
        for i in range(len(self)):
            yield self[i]

    @property
    def transfers(self) -> list[Transfer]:
        """All transfers as objects (materialises the whole plan: use on small plans)."""
        return list(self)

    @property
    def num_deps(self) -> np.ndarray:
        """Number of dependencies of every transfer."""
        return np.diff(self.dep_ptr)

    @property
    def total_bytes(self) -> float:
        return float(self.size.sum())

    @property
    def num_steps(self) -> int:
        return int(self.step.max()) + 1 if len(self) else 0

    def deps_of(self, i: int) -> tuple[int, ...]:
        return tuple(int(x) for x in self.dep_idx[self.dep_ptr[i] : self.dep_ptr[i + 1]])

    def bytes_sent(self) -> dict[str, float]:
        """Bytes sent by every node of the plan (devices and switches), by name."""
        per = np.bincount(self.src, weights=self.size, minlength=len(self.nodes))
        return {name: float(per[k]) for k, name in enumerate(self.nodes)}

    def bytes_received(self) -> dict[str, float]:
        """Bytes received by every node of the plan, by name."""
        per = np.bincount(self.dst, weights=self.size, minlength=len(self.nodes))
        return {name: float(per[k]) for k, name in enumerate(self.nodes)}

    def dependents(self) -> tuple[np.ndarray, np.ndarray]:
        """Reverse dependencies in CSR form (``ptr``, ``idx``): who waits for transfer ``i``."""
        n = len(self)
        owner = np.repeat(np.arange(n, dtype=np.int64), self.num_deps)
        order = np.argsort(self.dep_idx, kind="stable")
        idx = owner[order]
        ptr = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(np.bincount(self.dep_idx, minlength=n), out=ptr[1:])
        return ptr, idx

    def depth(self) -> int:
        """Number of transfers on the longest dependency chain.

        Each transfer pays the per-step software latency once, so a collective with step
        latency ``L`` takes at least ``depth() * L`` longer than with none (exactly that much
        longer when the chain's timing does not change, as in symmetric algorithms).
        """
        n = len(self)
        if n == 0:
            return 0
        level = np.ones(n, dtype=np.int64)
        nd = self.num_deps
        has = np.flatnonzero(nd > 0)
        ptr, idx = self.dep_ptr, self.dep_idx
        lv = level  # local alias for speed
        for i in has.tolist():
            lv[i] = int(lv[idx[ptr[i] : ptr[i + 1]]].max()) + 1
        return int(lv.max())


class PlanBuilder:
    """Accumulates transfers for a :class:`Plan`, one by one or in numpy batches.

    Node indices: the group's devices are ``0..n-1`` in rank order; :meth:`node` adds (or looks
    up) an extra device such as a reducing switch.  ``stream=True`` asks the algorithms for a
    stream plan (module doc); they read :attr:`stream` and pass ``rounds``.
    """

    def __init__(self, devices: Sequence[str], *, stream: bool = False) -> None:
        self.stream = bool(stream)
        self.devices = tuple(devices)
        self.names: list[str] = list(self.devices)
        self._index = {n: i for i, n in enumerate(self.names)}
        self._batches: list[tuple[np.ndarray, ...]] = []
        # pending scalar transfers (flushed into a batch before the next batch / at build)
        self._s_src: list[int] = []
        self._s_dst: list[int] = []
        self._s_size: list[float] = []
        self._s_step: list[int] = []
        self._s_ndeps: list[int] = []
        self._s_deps: list[int] = []
        self._s_rounds: list[int] = []
        self._count = 0
        self.max_step = -1

    @property
    def next_step(self) -> int:
        """One past the largest step added so far (where a following phase starts)."""
        return self.max_step + 1

    @property
    def next_id(self) -> int:
        """The id the next added transfer gets."""
        return self._count

    def node(self, name: str) -> int:
        """Index of ``name`` in the plan's node table (added if new)."""
        k = self._index.get(name)
        if k is None:
            k = self._index[name] = len(self.names)
            self.names.append(name)
        return k

    def add(
        self, src: int, dst: int, nbytes: float, deps: Sequence[int] = (), step: int = 0, *, rounds: int = 1
    ) -> int:
        """Add one transfer between node indices; returns its id."""
        self._s_rounds.append(rounds)
        self._s_src.append(src)
        self._s_dst.append(dst)
        self._s_size.append(nbytes)
        self._s_step.append(step)
        self._s_ndeps.append(len(deps))
        self._s_deps.extend(deps)
        self._count += 1
        if step > self.max_step:
            self.max_step = step
        return self._count - 1

    def _flush(self) -> None:
        if not self._s_src:
            return
        self._batches.append(
            (
                np.array(self._s_src, dtype=np.int64),
                np.array(self._s_dst, dtype=np.int64),
                np.array(self._s_size, dtype=np.float64),
                np.array(self._s_step, dtype=np.int64),
                np.array(self._s_ndeps, dtype=np.int64),
                np.array(self._s_deps, dtype=np.int64),
                np.array(self._s_rounds, dtype=np.int64),
            )
        )
        self._s_src, self._s_dst, self._s_size, self._s_step, self._s_ndeps, self._s_deps = [], [], [], [], [], []
        self._s_rounds = []

    def add_batch(
        self,
        src: np.ndarray,
        dst: np.ndarray,
        nbytes: np.ndarray | float,
        step: np.ndarray | int = 0,
        deps: np.ndarray | None = None,
        *,
        rounds: int = 1,
    ) -> np.ndarray:
        """Add ``m`` transfers at once; returns their ids.

        Args:
            src, dst: node indices, shape ``(m,)``.
            nbytes: bytes per transfer (array or one value for all).
            step: round per transfer (array or one value).
            deps: ``(m, w)`` int array of dependency ids, ``-1`` for none.
            rounds: stream-plan chain length, one value for the whole batch.
        """
        self._flush()
        s = np.asarray(src, dtype=np.int64).ravel()
        m = s.shape[0]
        d = np.asarray(dst, dtype=np.int64).ravel()
        size = np.broadcast_to(np.asarray(nbytes, dtype=np.float64), (m,)).ravel().copy()
        st = np.broadcast_to(np.asarray(step, dtype=np.int64), (m,)).ravel().copy()
        if deps is None or deps.size == 0:
            nd = np.zeros(m, dtype=np.int64)
            flat = np.zeros(0, dtype=np.int64)
        else:
            dm = np.asarray(deps, dtype=np.int64).reshape(m, -1)
            valid = dm >= 0
            nd = valid.sum(axis=1).astype(np.int64)
            flat = dm[valid]
        self._batches.append((s, d, size, st, nd, flat, np.full(m, int(rounds), dtype=np.int64)))
        if m:
            self.max_step = max(self.max_step, int(st.max()))
        ids = np.arange(self._count, self._count + m, dtype=np.int64)
        self._count += m
        return ids

    def build(self, op: str, algo: str, nbytes: float, **meta: Any) -> Plan:
        """Freeze into a :class:`Plan`, checking ids, sizes and dependency order."""
        self._flush()
        if self._batches:
            src = np.concatenate([b[0] for b in self._batches])
            dst = np.concatenate([b[1] for b in self._batches])
            size = np.concatenate([b[2] for b in self._batches])
            step = np.concatenate([b[3] for b in self._batches])
            nd = np.concatenate([b[4] for b in self._batches])
            dep_idx = np.concatenate([b[5] for b in self._batches])
            rounds = np.concatenate([b[6] for b in self._batches])
        else:
            src = dst = step = nd = dep_idx = rounds = np.zeros(0, dtype=np.int64)
            size = np.zeros(0)
        m = src.shape[0]
        dep_ptr = np.zeros(m + 1, dtype=np.int64)
        np.cumsum(nd, out=dep_ptr[1:])
        if m:
            if (src == dst).any():
                i = int(np.flatnonzero(src == dst)[0])
                raise AssertionError(f"plan {op}/{algo}: transfer {i} sends to itself ({self.names[int(src[i])]})")
            if not np.isfinite(size).all() or (size < 0).any():
                raise AssertionError(f"plan {op}/{algo}: transfer sizes must be finite and >= 0")
            owner = np.repeat(np.arange(m, dtype=np.int64), nd)
            if dep_idx.size and ((dep_idx >= owner) | (dep_idx < 0)).any():
                raise AssertionError(f"plan {op}/{algo}: a dependency does not precede its transfer")
        return Plan(
            op=op,
            algo=algo,
            nbytes=float(nbytes),
            devices=self.devices,
            nodes=tuple(self.names),
            src=src,
            dst=dst,
            size=size,
            step=step,
            dep_ptr=dep_ptr,
            dep_idx=dep_idx,
            meta=dict(meta),
            rounds=rounds,
        )


_ACC_NAME = re.compile(r"^n(\d+)\.g(\d+)$")


@dataclass(frozen=True)
class TopologyView:
    """What plans may know about the topology: server and local index of every device, and
    (for in-network reduction) the graph itself.

    Attributes:
        node_of: device -> server index (``-1``: not in a server).
        index_of: device -> local index inside its server.
        graph: the topology graph, or ``None`` for topology-free planning.
    """

    node_of: Mapping[str, int]
    index_of: Mapping[str, int]
    graph: nx.DiGraph | None = None

    @classmethod
    def from_graph(cls, graph: nx.DiGraph, devices: Sequence[str]) -> TopologyView:
        """Read ``node``/``index`` of the devices from the graph (see ``topology/model.py``)."""
        node_of: dict[str, int] = {}
        index_of: dict[str, int] = {}
        for pos, d in enumerate(devices):
            if d not in graph:
                raise CollectiveError(
                    f"unknown device {d!r} (not in topology {graph.graph.get('name', '')!r})", field="devices"
                )
            attrs = graph.nodes[d]
            node = attrs.get("node")
            index = attrs.get("index")
            m = _ACC_NAME.match(d)
            node_of[d] = int(node) if node is not None else (int(m.group(1)) if m else -1)
            index_of[d] = int(index) if index is not None and int(index) >= 0 else (int(m.group(2)) if m else pos)
        return cls(node_of, index_of, graph)

    @classmethod
    def from_names(cls, devices: Sequence[str]) -> TopologyView:
        """Without a graph: servers and local indices from ``n<node>.g<index>`` names (else one
        server, local index = rank)."""
        node_of: dict[str, int] = {}
        index_of: dict[str, int] = {}
        for pos, d in enumerate(devices):
            m = _ACC_NAME.match(d)
            node_of[d] = int(m.group(1)) if m else 0
            index_of[d] = int(m.group(2)) if m else pos
        return cls(node_of, index_of, None)

    def node_groups(self, devices: Sequence[str]) -> list[list[int]]:
        """Ranks grouped by server: servers in order of first appearance, ranks inside a server
        by (local index, name)."""
        groups: dict[int, list[int]] = {}
        for r, d in enumerate(devices):
            groups.setdefault(self.node_of[d], []).append(r)
        return [sorted(g, key=lambda r: (self.index_of[devices[r]], devices[r])) for g in groups.values()]

    def grid(self, devices: Sequence[str], algo: str) -> np.ndarray | None:
        """Ranks as a ``(servers, per_server)`` array when every server holds the same number of
        the group's devices (and no device is outside a server); ``None`` otherwise."""
        groups = self.node_groups(devices)
        if any(self.node_of[d] < 0 for d in devices):
            return None
        sizes = {len(g) for g in groups}
        if len(sizes) != 1:
            return None
        return np.array(groups, dtype=np.int64)

    def require_grid(self, devices: Sequence[str], algo: str) -> np.ndarray:
        g = self.grid(devices, algo)
        if g is None:
            raise CollectiveError(
                f"algorithm {algo!r} needs the same number of devices on every server "
                f"(got {[len(x) for x in self.node_groups(devices)]} per server)",
                field="algo",
            )
        return g
