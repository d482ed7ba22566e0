"""The registry of collective algorithms, keyed by (op, name).

An algorithm is a small function ``fn(request, builder)`` that adds the transfers of one
collective to a :class:`~netsim.collectives.plan.PlanBuilder` and may return extra metadata.
Registering one (``@register_algorithm("all_reduce", "ring")``) makes it available to
:func:`build_plan`, the executor, the CLI (``--algo``) and YAML workloads, without touching any
executor code.

Ops and their size convention (``nbytes``, the nccl-tests "size" column):

==============  ======================================================================
op              ``nbytes`` is
==============  ======================================================================
all_reduce      the buffer every rank holds (and gets back reduced)
reduce_scatter  the full input buffer of a rank (each rank keeps ``nbytes / n``)
all_gather      the full output buffer of a rank (each rank contributes ``nbytes / n``)
broadcast       the buffer the root sends (root = first device)
reduce          the buffer every rank contributes (root = first device)
all_to_all      the send buffer of a rank, ``nbytes / n`` to every rank (itself included)
all_to_allv     ignored if a matrix is given: ``matrix[i][j]`` bytes from rank i to rank j
sendrecv        the bytes every rank sends to its peer
==============  ======================================================================
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import networkx as nx
import numpy as np

from netsim.collectives.plan import CollectiveError, Plan, PlanBuilder, TopologyView

OPS: tuple[str, ...] = (
    "all_reduce",
    "reduce_scatter",
    "all_gather",
    "broadcast",
    "reduce",
    "all_to_all",
    "all_to_allv",
    "sendrecv",
)

#: Default chunk size of pipelined algorithms (trees, chains, in-network reduction), bytes.
#: Larger than NCCL's 512 KiB protocol slots on purpose: here every chunk pays its whole hop
#: latency (NCCL overlaps it by keeping several slots in flight), and at 4 MiB that latency
#: stays under ~10% of a chunk's time on a 450 GB/s NVLink port.
DEFAULT_PIPELINE_CHUNK_BYTES = 4 * 1024 * 1024
#: Upper bound on the chunks one step's data is split into (simulation cost).  The pipeline
#: fill overhead of a depth-``d`` pipeline with ``k`` chunks is ``(d - 1) / k`` of the transfer.
MAX_CHUNKS = 64


@dataclass(frozen=True)
class PlanRequest:
    """Everything an algorithm may use.

    Attributes:
        op, devices, nbytes: the collective (see the table above).
        matrix: ``(n, n)`` bytes from rank i to rank j (all-to-all(v) only), diagonal ignored.
        view: servers and local indices of the devices, and the graph if known.
        chunk_bytes: pipeline chunk size (``None``: the algorithm's default).
        channels: parallel rings (``None``: the algorithm's default).
        fluid: build the pipelined form (every edge's bytes as one transfer, all at once;
            :mod:`netsim.collectives.pipelined`) where the algorithm has one.
    """

    op: str
    devices: tuple[str, ...]
    nbytes: float
    matrix: np.ndarray | None
    view: TopologyView
    chunk_bytes: float | None = None
    channels: int | None = None
    fluid: bool = False

    @property
    def n(self) -> int:
        return len(self.devices)

    def chunks(self, piece_bytes: float, *, pipelined: bool) -> int:
        """Chunks to split ``piece_bytes`` into: ``ceil(piece / chunk_bytes)``, 1 when no chunk
        size applies (non-pipelined algorithms without ``chunk_bytes``), at most MAX_CHUNKS."""
        cb = self.chunk_bytes if self.chunk_bytes is not None else (DEFAULT_PIPELINE_CHUNK_BYTES if pipelined else None)
        if cb is None or piece_bytes <= 0:
            return 1
        return int(min(MAX_CHUNKS, max(1, math.ceil(piece_bytes / cb - 1e-9))))


AlgorithmFn = Callable[[PlanRequest, PlanBuilder], "dict[str, Any] | None"]


@dataclass(frozen=True)
class Algorithm:
    """A registered algorithm: the op it implements, its name, the plan function, a summary."""

    op: str
    name: str
    fn: AlgorithmFn
    description: str


_REGISTRY: dict[str, dict[str, Algorithm]] = {op: {} for op in OPS}
_DEFAULTS: dict[str, str] = {}


def register_algorithm(
    ops: str | Sequence[str], name: str, *, description: str = "", default: bool = False
) -> Callable[[AlgorithmFn], AlgorithmFn]:
    """Decorator: register ``fn`` as algorithm ``name`` of ``ops`` (one op or several)."""
    op_list = [ops] if isinstance(ops, str) else list(ops)

    def deco(fn: AlgorithmFn) -> AlgorithmFn:
        for op in op_list:
            if op not in _REGISTRY:
                raise ValueError(f"unknown collective op {op!r}")
            _REGISTRY[op][name] = Algorithm(op, name, fn, description or (fn.__doc__ or "").strip().split("\n")[0])
            if default:
                _DEFAULTS[op] = name
        return fn

    return deco


def check_op(op: str) -> str:
    if op not in _REGISTRY:
        raise CollectiveError(f"unknown collective {op!r}; allowed: {', '.join(OPS)}", field="op")
    return op


def algorithm_names(op: str) -> list[str]:
    """Names of the algorithms registered for ``op``."""
    return sorted(_REGISTRY[check_op(op)])


def get_algorithm(op: str, name: str | None = None) -> Algorithm:
    """The algorithm ``name`` of ``op`` (its default if ``None``)."""
    table = _REGISTRY[check_op(op)]
    key = name if name is not None else _DEFAULTS[op]
    if key not in table:
        raise CollectiveError(f"unknown algorithm {key!r} for {op}; allowed: {', '.join(sorted(table))}", field="algo")
    return table[key]


def default_algorithm(op: str) -> str:
    return _DEFAULTS[check_op(op)]


def _check_matrix(matrix: Any, n: int) -> np.ndarray:
    try:
        m = np.array(matrix, dtype=np.float64)
    except (TypeError, ValueError):
        raise CollectiveError("the byte matrix must be numeric", field="matrix") from None
    if m.shape != (n, n):
        raise CollectiveError(
            f"the byte matrix must be {n}x{n} (one row and column per device), got shape {m.shape}", field="matrix"
        )
    if not np.isfinite(m).all() or (m < 0).any():
        raise CollectiveError("the byte matrix must hold finite values >= 0", field="matrix")
    return m


def build_plan(
    op: str,
    devices: Sequence[str],
    nbytes: float,
    *,
    algo: str | None = None,
    matrix: Any = None,
    graph: nx.DiGraph | None = None,
    view: TopologyView | None = None,
    chunk_bytes: float | None = None,
    channels: int | None = None,
    stream: bool = False,
    fluid: bool = False,
) -> Plan:
    """Plan a collective.

    Args:
        op: one of :data:`OPS`.
        devices: the group in rank order (device names).
        nbytes: size in bytes (see the module table); ignored by all-to-allv with a matrix.
        algo: algorithm name (``None``: the op's default).
        matrix: per-pair bytes for all-to-all(v).
        graph: the topology (for node membership and in-network reduction); ``view`` overrides.
        chunk_bytes: pipeline chunk size in bytes (``None``: the algorithm's default).
        channels: number of parallel rings for ring algorithms (``None``: one per GPU of a
            server when the group spans several servers, else 1).
        stream: build a stream plan (one transfer per link and phase; see
            :mod:`netsim.collectives.plan`) instead of the exact one.
        fluid: build the pipelined (fluid) form where the algorithm has one.
    """
    devs, mat, nb = check_request(op, devices, nbytes, matrix, chunk_bytes, channels)
    alg = get_algorithm(op, algo)
    if view is None:
        view = TopologyView.from_graph(graph, devs) if graph is not None else TopologyView.from_names(devs)
    req = PlanRequest(
        op=op,
        devices=devs,
        nbytes=nb,
        matrix=mat,
        view=view,
        chunk_bytes=chunk_bytes,
        channels=int(channels) if channels is not None else None,
        fluid=fluid,
    )
    b = PlanBuilder(devs, stream=stream)
    meta = alg.fn(req, b) if (len(devs) > 1 and (nb > 0 or mat is not None)) else None
    return b.build(op, alg.name, nb, **(meta or {}))


def check_request(
    op: str,
    devices: Sequence[str],
    nbytes: float,
    matrix: Any = None,
    chunk_bytes: float | None = None,
    channels: int | None = None,
) -> tuple[tuple[str, ...], np.ndarray | None, float]:
    """Validate a collective request (one :class:`CollectiveError` line per problem); returns the
    devices, the byte matrix (or ``None``) and the size in bytes."""
    check_op(op)
    devs = tuple(str(d) for d in devices)
    if not devs:
        raise CollectiveError("a collective needs at least one device", field="devices")
    if len(set(devs)) != len(devs):
        dup = next(d for d in devs if devs.count(d) > 1)
        raise CollectiveError(f"device {dup!r} appears twice in the group", field="devices")
    if op == "all_to_allv" and matrix is None:
        raise CollectiveError("all_to_allv needs a byte matrix", field="matrix")
    if matrix is not None and op not in ("all_to_all", "all_to_allv"):
        raise CollectiveError(f"a byte matrix applies to all_to_all(v) only, not {op}", field="matrix")
    mat = _check_matrix(matrix, len(devs)) if matrix is not None else None
    nb = float(mat.sum() / len(devs)) if mat is not None else float(nbytes)
    if not math.isfinite(nb) or nb < 0:
        raise CollectiveError(f"collective size must be finite and >= 0 bytes, got {nbytes!r}", field="nbytes")
    if chunk_bytes is not None and not (math.isfinite(chunk_bytes) and chunk_bytes > 0):
        raise CollectiveError(f"chunk_bytes must be > 0, got {chunk_bytes!r}", field="chunk_bytes")
    if channels is not None and (int(channels) != channels or channels < 1):
        raise CollectiveError(f"channels must be an integer >= 1, got {channels!r}", field="channels")
    return devs, mat, nb
