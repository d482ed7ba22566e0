"""Chakra execution traces (JSON form): parse, validate, and replay on the network.

A Chakra execution trace (ET) has one file per rank; each is a DAG of nodes.  netsim reads the
JSON form (what ``chakra_jsonizer`` or a hand-written file gives)::

    {"rank": 0,                                   # optional (else taken from the file name)
     "process_groups": {"dp0": [0, 2]},           # optional (else inferred, see below)
     "nodes": [
       {"id": 1, "name": "fwd", "type": "COMP_NODE", "duration_micros": 120,
        "data_deps": [], "ctrl_deps": []},
       {"id": 2, "name": "grad_ar", "type": "COMM_COLL_NODE", "data_deps": [1],
        "attrs": {"comm_type": "ALL_REDUCE", "comm_size": 4194304, "pg_name": "dp0"}},
       {"id": 3, "name": "send_act", "type": "COMM_SEND_NODE", "data_deps": [1],
        "attrs": [{"name": "comm_dst", "int64_val": 1}, {"name": "comm_size", "int64_val": 65536}]}
     ]}

Files: ``DIR/rank<N>.json``, ``DIR/<prefix>.<N>.json`` or ``DIR/<prefix>_<N>.json`` (or any
``*.json`` with a top-level ``"rank"``), ranks 0..N-1 without gaps; an optional
``DIR/process_groups.json`` maps group names to rank lists.  A file may also be a bare list of
nodes.

Nodes: ``id`` (int, unique), ``name``, ``type`` (``COMP_NODE``, ``COMM_SEND_NODE``,
``COMM_RECV_NODE``, ``COMM_COLL_NODE``, ``MEM_LOAD_NODE``, ``MEM_STORE_NODE``,
``METADATA_NODE``; the short names ``COMP``, ``COMM_SEND`` ... and the protobuf enum numbers
4, 5, 6, 7, 2, 3, 1 are accepted), ``data_deps`` / ``ctrl_deps`` (ids; both are dependencies),
``duration_micros``, and attributes either as an object or as the protobuf list
``[{"name": ..., "<type>_val": ...}]`` (``int64Val`` etc. too): ``comm_type`` (``ALL_REDUCE``,
``REDUCE``, ``ALL_GATHER``, ``GATHER``, ``SCATTER``, ``BROADCAST``, ``ALL_TO_ALL``,
``REDUCE_SCATTER``, ``REDUCE_SCATTER_BLOCK``, ``BARRIER`` or their enum numbers 0-9),
``comm_size`` (bytes; for collectives the nccl-tests "size" convention of
:mod:`netsim.collectives`), ``pg_name``, ``comm_src`` / ``comm_dst`` (ranks), ``comm_tag``.
These may also sit at the top level of the node.

Replay (:func:`replay_chakra`), every rank concurrently on one simpy network:

* a node starts when all its dependencies have finished;
* ``COMP`` / ``MEM_LOAD`` / ``MEM_STORE`` nodes hold the rank's single compute stream for
  ``duration_micros`` (ready nodes queue in the order they became ready); ``METADATA`` nodes
  take no time;
* ``COMM_COLL`` nodes with the same ``pg_name`` are matched across ranks by their order in
  each rank's trace (the k-th collective of a group on one rank meets the k-th on every other
  member); the collective runs on the network (``run_collective``) once every member has
  reached it, and every member's node ends when it is done.  Collectives of one group run in
  trace order on each rank (one communicator stream per group, as NCCL does).  A group's
  members are ``process_groups`` when given, otherwise the ranks whose traces use that
  ``pg_name``; no ``pg_name`` means all ranks.  ``BARRIER`` is a 4-byte all-reduce (NCCL's
  barrier); ``GATHER`` and ``SCATTER`` are rejected (no root in the trace format);
* ``COMM_SEND`` on rank a with ``comm_dst`` b and ``COMM_RECV`` on b with ``comm_src`` a are
  paired in order per (a, b, ``comm_tag``); the transfer starts when both are reached
  (rendezvous, as NCCL point-to-point does) and both nodes end when its last byte arrives.

Rank r runs on the r-th accelerator of the topology (sorted by server, then index) unless
``devices`` says otherwise.  The traffic class of a collective is its ``pg_name`` prefix when
that is one of ``dp``, ``pp``, ``ep``, ``tp`` (e.g. ``dp0``), else ``other``; point-to-point
transfers are ``pp``.

Results: per rank the end time and the split of the replay's makespan into compute only,
communication only, overlap and idle (they add up to the makespan); per node its start and
end; the network's link and flow records.  Malformed traces raise
:class:`~netsim.errors.TraceError` naming the file, node and field.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np
import pandas as pd

from netsim.errors import NetsimError, TopologyError, TraceError
from netsim.limits import INT64_MAX, MAX_ACCELERATORS, MAX_TRACE_BYTES, check_count, check_file_size
from netsim.traces.kineto import read_json


def check_chakra_inputs(files: Sequence[Path], src: str) -> None:
    """Input limits of a Chakra trace directory, before any file is parsed (:mod:`netsim.limits`):
    at most one rank per accelerator netsim models, and every file within the JSON trace size."""
    check_count(len(files), MAX_ACCELERATORS, "rank traces", source=src, what="rank files")
    for f in files:
        check_file_size(f, MAX_TRACE_BYTES, "a Chakra rank trace")

NODE_TYPES = (
    "METADATA_NODE",
    "MEM_LOAD_NODE",
    "MEM_STORE_NODE",
    "COMP_NODE",
    "COMM_SEND_NODE",
    "COMM_RECV_NODE",
    "COMM_COLL_NODE",
)
_TYPE_BY_INT = {
    1: "METADATA_NODE",
    2: "MEM_LOAD_NODE",
    3: "MEM_STORE_NODE",
    4: "COMP_NODE",
    5: "COMM_SEND_NODE",
    6: "COMM_RECV_NODE",
    7: "COMM_COLL_NODE",
}
COMM_TYPES = (
    "ALL_REDUCE",
    "REDUCE",
    "ALL_GATHER",
    "GATHER",
    "SCATTER",
    "BROADCAST",
    "ALL_TO_ALL",
    "REDUCE_SCATTER",
    "REDUCE_SCATTER_BLOCK",
    "BARRIER",
)
#: Chakra comm_type -> netsim collective op.
COLLECTIVE_OPS = {
    "ALL_REDUCE": "all_reduce",
    "REDUCE": "reduce",
    "ALL_GATHER": "all_gather",
    "BROADCAST": "broadcast",
    "ALL_TO_ALL": "all_to_all",
    "REDUCE_SCATTER": "reduce_scatter",
    "REDUCE_SCATTER_BLOCK": "reduce_scatter",
    "BARRIER": "all_reduce",
}
BARRIER_BYTES = 4.0
_COMPUTE_TYPES = ("COMP_NODE", "MEM_LOAD_NODE", "MEM_STORE_NODE")
_COMM_TYPES = ("COMM_SEND_NODE", "COMM_RECV_NODE", "COMM_COLL_NODE")
_TRAFFIC_CLASSES = ("dp", "pp", "ep", "tp")
_WORLD = "<world>"


@dataclass(frozen=True)
class ChakraNode:
    """One node of a rank's trace (times in seconds, sizes in bytes)."""

    id: int
    name: str
    type: str
    deps: tuple[int, ...]
    duration_s: float = 0.0
    comm_type: str | None = None
    comm_size: float | None = None
    pg_name: str | None = None
    comm_src: int | None = None
    comm_dst: int | None = None
    comm_tag: int = 0


@dataclass
class RankTrace:
    """The validated DAG of one rank: nodes by id, and a topological order."""

    rank: int
    nodes: dict[int, ChakraNode]
    order: list[int]
    source: str
    process_groups: dict[str, tuple[int, ...]] = field(default_factory=dict)


@dataclass
class ChakraTrace:
    """All ranks of a trace, with the process groups (name -> member ranks, sorted)."""

    ranks: list[RankTrace]
    process_groups: dict[str, tuple[int, ...]]
    source: str

    @property
    def num_ranks(self) -> int:
        return len(self.ranks)


# --------------------------------------------------------------------------- parsing


def _norm_key(s: str) -> str:
    return re.sub(r"[^A-Z0-9]", "", s.upper())


_TYPE_BY_KEY = {_norm_key(t): t for t in NODE_TYPES} | {_norm_key(t[: -len("_NODE")]): t for t in NODE_TYPES}
_COMM_BY_KEY = {_norm_key(t): t for t in COMM_TYPES}


def _attr_value(entry: Mapping[str, Any]) -> Any:
    """The value of a protobuf-JSON attribute entry ``{"name": ..., "<type>_val": ...}``."""
    for key, v in entry.items():
        if key in ("name", "doc_string", "docString"):
            continue
        if isinstance(v, Mapping) and "values" in v:
            return list(v["values"])
        if isinstance(v, str) and ("int" in key.lower()) and re.fullmatch(r"-?\d+", v):
            return int(v)  # proto3 JSON writes int64 as a string
        return v
    return None


def _attrs(raw: Any, src: str, where: str) -> dict[str, Any]:
    if raw is None:
        return {}
    if isinstance(raw, Mapping):
        return dict(raw)
    if isinstance(raw, list):
        out: dict[str, Any] = {}
        for j, e in enumerate(raw):
            if not isinstance(e, Mapping) or not isinstance(e.get("name"), str):
                raise TraceError("attribute must be an object with a name", source=src, field=f"{where}.attrs[{j}]")
            out[e["name"]] = _attr_value(e)
        return out
    raise TraceError("attrs must be an object or a list of {name, value}", source=src, field=f"{where}.attrs")


def _int(v: Any, src: str, where: str, *, minimum: int | None = None) -> int:
    if isinstance(v, bool):
        raise TraceError(f"must be an integer (got {v!r})", source=src, field=where)
    if isinstance(v, int):
        x = v
    elif (isinstance(v, float) and v.is_integer()) or (isinstance(v, str) and re.fullmatch(r"\s*-?\d+\s*", v)):
        x = int(v)
    else:
        raise TraceError(f"must be an integer (got {v!r})", source=src, field=where)
    if abs(x) > INT64_MAX:
        raise TraceError(f"must be within int64 (got {str(x)[:30]}...)", source=src, field=where)
    if minimum is not None and x < minimum:
        raise TraceError(f"must be >= {minimum} (got {x})", source=src, field=where)
    return x


def _float(v: Any, src: str, where: str) -> float:
    if isinstance(v, bool):
        raise TraceError(f"must be a number (got {v!r})", source=src, field=where)
    try:
        x = float(v)
    except (TypeError, ValueError, OverflowError):
        raise TraceError(f"must be a number (got {str(v)[:40]!r})", source=src, field=where) from None
    if not np.isfinite(x) or x < 0:
        raise TraceError(f"must be finite and >= 0 (got {v!r})", source=src, field=where)
    return x


def _parse_node(raw: Any, src: str, i: int) -> ChakraNode:
    where = f"nodes[{i}]"
    if not isinstance(raw, Mapping):
        raise TraceError("node must be an object", source=src, field=where)
    if "id" not in raw:
        raise TraceError("node has no id", source=src, field=f"{where}.id")
    nid = _int(raw["id"], src, f"{where}.id", minimum=0)
    where = f"node {nid}"
    name = str(raw.get("name", f"node{nid}"))
    t = raw.get("type")
    if isinstance(t, int) and not isinstance(t, bool):
        ntype = _TYPE_BY_INT.get(t)
    elif isinstance(t, str):
        ntype = _TYPE_BY_KEY.get(_norm_key(t))
    else:
        ntype = None
    if ntype is None:
        raise TraceError(
            f"unknown node type {t!r}; allowed: {', '.join(NODE_TYPES)} (or COMP, COMM_SEND, ...)",
            source=src,
            field=f"{where}.type",
        )
    deps: list[int] = []
    for key in ("data_deps", "ctrl_deps", "dataDeps", "ctrlDeps"):
        val = raw.get(key, [])
        if val is None:
            continue
        if not isinstance(val, list):
            raise TraceError("must be a list of node ids", source=src, field=f"{where}.{key}")
        deps += [_int(d, src, f"{where}.{key}", minimum=0) for d in val]
    attrs = _attrs(raw.get("attrs", raw.get("attr")), src, where)

    def get(key: str) -> Any:
        return raw[key] if key in raw else attrs.get(key)

    dur_raw = raw.get("duration_micros", raw.get("durationMicros", attrs.get("duration_micros")))
    if dur_raw is None and ntype in _COMPUTE_TYPES:
        raise TraceError(f"{ntype} {name!r} has no duration_micros", source=src, field=f"{where}.duration_micros")
    duration_s = _float(dur_raw, src, f"{where}.duration_micros") * 1e-6 if dur_raw is not None else 0.0
    node = ChakraNode(nid, name, ntype, tuple(dict.fromkeys(deps)), duration_s)
    if ntype not in _COMM_TYPES:
        return node
    size_raw = get("comm_size")
    comm_type = None
    if ntype == "COMM_COLL_NODE":
        ct = get("comm_type")
        if isinstance(ct, int) and not isinstance(ct, bool) and 0 <= ct < len(COMM_TYPES):
            comm_type = COMM_TYPES[ct]
        elif isinstance(ct, str):
            comm_type = _COMM_BY_KEY.get(_norm_key(ct))
        if comm_type is None:
            raise TraceError(
                f"unknown comm_type {ct!r}; allowed: {', '.join(COMM_TYPES)}",
                source=src,
                field=f"{where}.comm_type",
            )
        if comm_type not in COLLECTIVE_OPS:
            raise TraceError(
                f"comm_type {comm_type} is not supported by the replay (the trace gives no root); "
                f"supported: {', '.join(COLLECTIVE_OPS)}",
                source=src,
                field=f"{where}.comm_type",
            )
        if size_raw is None and comm_type != "BARRIER":
            raise TraceError(f"collective {name!r} has no comm_size", source=src, field=f"{where}.comm_size")
    elif size_raw is None:
        raise TraceError(f"{ntype} {name!r} has no comm_size", source=src, field=f"{where}.comm_size")
    size = _float(size_raw, src, f"{where}.comm_size") if size_raw is not None else BARRIER_BYTES
    if comm_type == "BARRIER":
        size = max(size, BARRIER_BYTES)
    pg = get("pg_name")
    comm_src = comm_dst = None
    if ntype == "COMM_SEND_NODE":
        if get("comm_dst") is None:
            raise TraceError(f"send {name!r} has no comm_dst", source=src, field=f"{where}.comm_dst")
        comm_dst = _int(get("comm_dst"), src, f"{where}.comm_dst", minimum=0)
    if ntype == "COMM_RECV_NODE":
        if get("comm_src") is None:
            raise TraceError(f"recv {name!r} has no comm_src", source=src, field=f"{where}.comm_src")
        comm_src = _int(get("comm_src"), src, f"{where}.comm_src", minimum=0)
    tag = _int(get("comm_tag"), src, f"{where}.comm_tag") if get("comm_tag") is not None else 0
    return ChakraNode(
        nid,
        name,
        ntype,
        node.deps,
        duration_s,
        comm_type,
        size,
        str(pg) if pg not in (None, "") else None,
        comm_src,
        comm_dst,
        tag,
    )


def _topo_order(nodes: Mapping[int, ChakraNode], src: str) -> list[int]:
    indeg = {nid: 0 for nid in nodes}
    children: dict[int, list[int]] = defaultdict(list)
    for n in nodes.values():
        for d in n.deps:
            if d not in nodes:
                raise TraceError(f"node {n.id} ({n.name!r}) depends on unknown node {d}", source=src)
            if d == n.id:
                raise TraceError(f"node {n.id} ({n.name!r}) depends on itself", source=src)
            indeg[n.id] += 1
            children[d].append(n.id)
    import heapq

    ready = [nid for nid, k in indeg.items() if k == 0]
    heapq.heapify(ready)
    order: list[int] = []
    while ready:
        nid = heapq.heappop(ready)
        order.append(nid)
        for c in children[nid]:
            indeg[c] -= 1
            if indeg[c] == 0:
                heapq.heappush(ready, c)
    if len(order) != len(nodes):
        stuck = min(nid for nid, k in indeg.items() if k > 0)
        raise TraceError(f"dependency cycle: node {stuck} ({nodes[stuck].name!r}) can never start", source=src)
    return order


def _parse_groups(raw: Any, src: str, where: str) -> dict[str, tuple[int, ...]]:
    if not isinstance(raw, Mapping):
        raise TraceError("must be an object {name: [ranks]}", source=src, field=where)
    out: dict[str, tuple[int, ...]] = {}
    for name, ranks in raw.items():
        if not isinstance(ranks, list) or not ranks:
            raise TraceError("must be a non-empty list of ranks", source=src, field=f"{where}.{name}")
        members = tuple(sorted({_int(r, src, f"{where}.{name}", minimum=0) for r in ranks}))
        out[str(name)] = members
    return out


def load_chakra_rank(path: str | Path, rank: int | None = None) -> RankTrace:
    """Parse and validate one rank's JSON trace (``rank`` from the file if not given)."""
    p = Path(path)
    src = str(path)
    doc = read_json(p)
    groups: dict[str, tuple[int, ...]] = {}
    if isinstance(doc, list):
        raw_nodes = doc
    elif isinstance(doc, Mapping):
        if "nodes" not in doc:
            raise TraceError("not a Chakra trace: the JSON object has no nodes", source=src)
        raw_nodes = doc["nodes"]
        if "rank" in doc:
            file_rank = _int(doc["rank"], src, "rank", minimum=0)
            if rank is not None and file_rank != rank:
                raise TraceError(f"file says rank {file_rank}, its name says {rank}", source=src, field="rank")
            rank = file_rank
        if "process_groups" in doc:
            groups = _parse_groups(doc["process_groups"], src, "process_groups")
    else:
        raise TraceError("not a Chakra trace: expected an object with nodes or a list of nodes", source=src)
    if not isinstance(raw_nodes, list):
        raise TraceError("must be a list of nodes", source=src, field="nodes")
    if rank is None:
        raise TraceError('cannot tell the rank: name the file rank<N>.json or add "rank": N', source=src)
    nodes: dict[int, ChakraNode] = {}
    for i, raw in enumerate(raw_nodes):
        n = _parse_node(raw, src, i)
        if n.id in nodes:
            raise TraceError(f"duplicate node id {n.id}", source=src, field=f"nodes[{i}].id")
        nodes[n.id] = n
    if not nodes:
        raise TraceError("trace has no nodes", source=src)
    return RankTrace(rank, nodes, _topo_order(nodes, src), src, groups)


_RANK_PATTERNS = (re.compile(r"rank[_\-.]?(\d+)$", re.I), re.compile(r"[._\-](\d+)$"), re.compile(r"^(\d+)$"))


def _rank_from_name(p: Path) -> int | None:
    for pat in _RANK_PATTERNS:
        m = pat.search(p.stem)
        if m:
            return int(m.group(1))
    return None


def load_chakra(directory: str | Path) -> ChakraTrace:
    """Parse and validate a directory of per-rank JSON traces (see the module docstring)."""
    d = Path(directory)
    src = str(directory)
    if not d.is_dir():
        raise TraceError("not a directory of per-rank Chakra JSON traces", source=src)
    files = sorted(f for f in d.glob("*.json") if f.name != "process_groups.json")
    if not files:
        raise TraceError("no *.json rank traces in the directory", source=src)
    check_chakra_inputs(files, src)
    ranks: dict[int, RankTrace] = {}
    for f in files:
        rt = load_chakra_rank(f, _rank_from_name(f))
        if rt.rank in ranks:
            raise TraceError(f"rank {rt.rank} appears twice (also in {ranks[rt.rank].source})", source=str(f))
        ranks[rt.rank] = rt
    n = len(ranks)
    missing = sorted(set(range(n)) - set(ranks))
    if missing:
        raise TraceError(f"ranks must be 0..{n - 1}; missing rank {missing[0]} (have {sorted(ranks)})", source=src)
    ordered = [ranks[r] for r in range(n)]
    groups: dict[str, tuple[int, ...]] = {}
    pg_file = d / "process_groups.json"
    sources: dict[str, str] = {}
    if pg_file.is_file():
        groups = _parse_groups(read_json(pg_file), str(pg_file), "process_groups")
        sources = dict.fromkeys(groups, str(pg_file))
    for rt in ordered:
        for name, members in rt.process_groups.items():
            if name in groups and groups[name] != members:
                raise TraceError(
                    f"process group {name!r} is {list(members)} here but {list(groups[name])} in {sources[name]}",
                    source=rt.source,
                    field=f"process_groups.{name}",
                )
            groups.setdefault(name, members)
            sources.setdefault(name, rt.source)
    trace = ChakraTrace(ordered, groups, src)
    trace.process_groups = _resolve_groups(trace)
    _check_matching(trace)
    return trace


def _resolve_groups(trace: ChakraTrace) -> dict[str, tuple[int, ...]]:
    groups = dict(trace.process_groups)
    used: dict[str, set[int]] = defaultdict(set)
    for rt in trace.ranks:
        for n in rt.nodes.values():
            if n.type == "COMM_COLL_NODE":
                used[n.pg_name or _WORLD].add(rt.rank)
            for peer in (n.comm_src, n.comm_dst):
                if peer is not None and peer >= trace.num_ranks:
                    raise TraceError(
                        f"node {n.id} ({n.name!r}) names rank {peer}, but the trace has ranks 0..{trace.num_ranks - 1}",
                        source=rt.source,
                    )
    for name in sorted(used):
        if name == _WORLD:
            groups[_WORLD] = tuple(range(trace.num_ranks))
        elif name not in groups:
            groups[name] = tuple(sorted(used[name]))
        for r in groups[name]:
            if r >= trace.num_ranks:
                raise TraceError(
                    f"process group {name!r} names rank {r}, but the trace has ranks 0..{trace.num_ranks - 1}",
                    source=trace.source,
                )
        outside = sorted(used[name] - set(groups[name]))
        if outside:
            raise TraceError(
                f"rank {outside[0]} runs a collective of process group {name!r}, which does not contain it",
                source=trace.ranks[outside[0]].source,
            )
    return groups


def _collectives(rt: RankTrace) -> dict[str, list[ChakraNode]]:
    out: dict[str, list[ChakraNode]] = defaultdict(list)
    for nid in sorted(rt.nodes):
        n = rt.nodes[nid]
        if n.type == "COMM_COLL_NODE":
            out[n.pg_name or _WORLD].append(n)
    return out


def _p2p(
    rt: RankTrace,
) -> tuple[dict[tuple[int, int, int], list[ChakraNode]], dict[tuple[int, int, int], list[ChakraNode]]]:
    """(sends keyed (rank, dst, tag), receives keyed (src, rank, tag)), each in id order."""
    sends: dict[tuple[int, int, int], list[ChakraNode]] = defaultdict(list)
    recvs: dict[tuple[int, int, int], list[ChakraNode]] = defaultdict(list)
    for nid in sorted(rt.nodes):
        n = rt.nodes[nid]
        if n.type == "COMM_SEND_NODE" and n.comm_dst is not None:
            sends[(rt.rank, n.comm_dst, n.comm_tag)].append(n)
        elif n.type == "COMM_RECV_NODE" and n.comm_src is not None:
            recvs[(n.comm_src, rt.rank, n.comm_tag)].append(n)
    return sends, recvs


def _all_p2p(trace: ChakraTrace) -> tuple[dict[tuple[int, int, int], list[ChakraNode]], ...]:
    sends: dict[tuple[int, int, int], list[ChakraNode]] = {}
    recvs: dict[tuple[int, int, int], list[ChakraNode]] = {}
    for rt in trace.ranks:
        s, r = _p2p(rt)
        sends.update(s)
        recvs.update(r)
    return sends, recvs


def _check_matching(trace: ChakraTrace) -> None:
    """Every member has the same collectives per group; every send has its receive."""
    colls = [_collectives(rt) for rt in trace.ranks]
    for name, members in sorted(trace.process_groups.items()):
        first = members[0]
        ref = colls[first].get(name, [])
        for r in members[1:]:
            mine = colls[r].get(name, [])
            label = "all ranks" if name == _WORLD else f"process group {name!r}"
            if len(mine) != len(ref):
                raise TraceError(
                    f"{label}: rank {r} has {len(mine)} collectives, rank {first} has {len(ref)}",
                    source=trace.ranks[r].source,
                )
            for k, (want, got) in enumerate(zip(ref, mine, strict=True)):
                if want.comm_type != got.comm_type or want.comm_size != got.comm_size:
                    raise TraceError(
                        f"{label}: collective #{k} is {got.comm_type} of {got.comm_size:g} B "
                        f"(node {got.id}) on rank {r} but {want.comm_type} of {want.comm_size:g} B "
                        f"(node {want.id}) on rank {first}",
                        source=trace.ranks[r].source,
                    )
    sends, recvs = _all_p2p(trace)
    for key in sorted(set(sends) | set(recvs)):
        sent, received = sends.get(key, []), recvs.get(key, [])
        src, dst, tag = key
        if len(sent) != len(received):
            raise TraceError(
                f"rank {src} sends {len(sent)} message(s) to rank {dst} (tag {tag}) "
                f"but rank {dst} receives {len(received)}",
                source=trace.ranks[dst if len(sent) > len(received) else src].source,
            )
        for x, y in zip(sent, received, strict=True):
            if x.comm_size != y.comm_size:
                raise TraceError(
                    f"send node {x.id} on rank {src} has {x.comm_size:g} B, "
                    f"its receive node {y.id} on rank {dst} {y.comm_size:g} B",
                    source=trace.ranks[dst].source,
                )


# --------------------------------------------------------------------------- replay


@dataclass
class ChakraReplayResult:
    """Tables of a replay (seconds, bytes); see the module docstring."""

    ranks: pd.DataFrame  # rank, device, node, end_s, compute_s, communication_s, overlap_s, idle_s, ...
    ops: pd.DataFrame  # rank, node_id, name, type, comm_type, pg_name, bytes, ready_s, start_s, end_s
    links: pd.DataFrame
    flows: pd.DataFrame
    summary: dict[str, Any]


def default_devices(graph: nx.DiGraph, ranks_per_node: int | None = None) -> list[str]:
    """Accelerators of a topology for ranks 0, 1, ...: ordered by (server, index, name), or,
    with ``ranks_per_node`` k, the first k accelerators of every server in turn (rank r on
    server r // k)."""
    acc = sorted(
        (d.get("node", -1), d.get("index", -1), str(n))
        for n, d in graph.nodes(data=True)
        if d.get("kind") == "accelerator"
    )
    if ranks_per_node is None:
        return [name for _, _, name in acc]
    if ranks_per_node < 1:
        raise TopologyError(f"ranks per node must be >= 1 (got {ranks_per_node})", field="ranks_per_node")
    by_node: dict[int, list[str]] = defaultdict(list)
    for node, _, name in acc:
        by_node[node].append(name)
    out: list[str] = []
    for node in sorted(by_node):
        if len(by_node[node]) < ranks_per_node:
            raise TopologyError(
                f"server {node} has {len(by_node[node])} accelerators, fewer than {ranks_per_node} ranks per node",
                field="ranks_per_node",
            )
        out += by_node[node][:ranks_per_node]
    return out


def _traffic_class(pg: str | None) -> str:
    if pg:
        low = pg.lower()
        for c in _TRAFFIC_CLASSES:
            if low.startswith(c):
                return c
    return "other"


def _union(iv: list[tuple[float, float]]) -> list[tuple[float, float]]:
    out: list[tuple[float, float]] = []
    for a, b in sorted(iv):
        if b <= a:
            continue
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def _length(iv: list[tuple[float, float]]) -> float:
    return float(sum(b - a for a, b in iv))


def _intersection(x: list[tuple[float, float]], y: list[tuple[float, float]]) -> float:
    i = j = 0
    total = 0.0
    while i < len(x) and j < len(y):
        lo, hi = max(x[i][0], y[j][0]), min(x[i][1], y[j][1])
        if hi > lo:
            total += hi - lo
        if x[i][1] < y[j][1]:
            i += 1
        else:
            j += 1
    return total


class _Meeting:
    """Members of one collective (or one send/recv pair) meet; the last to arrive starts it."""

    def __init__(self, env: Any, expected: int, launch: Callable[[], Any]) -> None:
        self.env = env
        self.expected = expected
        self.arrived = 0
        self.launch = launch
        self.done = env.event()
        self.start_s: float | None = None

    def arrive(self) -> Any:
        self.arrived += 1
        if self.arrived == self.expected:
            self.start_s = float(self.env.now)
            self.env.process(self._run())
        return self.done

    def _run(self) -> Generator[Any, Any, None]:
        yield self.launch()
        self.done.succeed()


def replay_chakra(
    trace: ChakraTrace | str | Path,
    graph: nx.DiGraph,
    out_dir: str | Path | None = None,
    *,
    devices: Sequence[str] | None = None,
    ranks_per_node: int | None = None,
    routing: str = "ecmp",
    seed: int = 0,
    efficiency: Mapping[str, float] | None = None,
    algo: Mapping[str, str] | None = None,
    compute_scale: float = 1.0,
) -> ChakraReplayResult:
    """Replay a Chakra trace (or a directory of them) on ``graph``; see the module docstring.

    Args:
        trace: a :class:`ChakraTrace` or a directory for :func:`load_chakra`.
        graph: the topology.
        out_dir: if given, write ``ranks``, ``ops``, ``links``, ``flows`` (CSV + Parquet) and
            ``summary.json`` there, atomically.
        devices: device of each rank (default: :func:`default_devices` with ``ranks_per_node``).
        ranks_per_node: place ranks k per server (default: fill servers one after another).
        routing, seed, efficiency: passed to the network engine.
        algo: collective algorithm per op (e.g. ``{"all_reduce": "ring"}``); default per op.
        compute_scale: multiplies every compute duration (what-if: faster / slower GPUs).
    """
    import simpy

    from netsim.collectives import run_collective
    from netsim.network.engine import Network

    tr = trace if isinstance(trace, ChakraTrace) else load_chakra(trace)
    if compute_scale < 0:
        raise NetsimError(f"compute_scale must be >= 0 (got {compute_scale})", field="compute_scale")
    devs = list(devices) if devices is not None else default_devices(graph, ranks_per_node)
    if len(devs) < tr.num_ranks:
        raise TopologyError(
            f"the trace has {tr.num_ranks} ranks but the topology places only {len(devs)} "
            "(use more --nodes or more ranks per node)"
        )
    devs = devs[: tr.num_ranks]
    for d in devs:
        if d not in graph:
            raise TopologyError(f"unknown device {d!r}", field="devices")
    net = Network(graph, routing=routing, seed=seed, efficiency=efficiency)
    env = net.env
    algo = dict(algo or {})

    done: list[dict[int, Any]] = [{nid: env.event() for nid in rt.order} for rt in tr.ranks]
    compute = [simpy.Resource(env, capacity=1) for _ in tr.ranks]  # one compute stream per rank
    records: list[dict[str, Any]] = []

    # collective meetings per (group, k); chains per (rank, group) keep trace order
    meetings: dict[tuple[str, int], _Meeting] = {}
    seq_of: dict[tuple[int, int], tuple[str, int]] = {}
    prev_in_chain: dict[tuple[int, int], int | None] = {}
    for rt in tr.ranks:
        for gname, nodes in _collectives(rt).items():
            prev = None
            for k, n in enumerate(nodes):
                seq_of[(rt.rank, n.id)] = (gname, k)
                prev_in_chain[(rt.rank, n.id)] = prev
                prev = n.id
    for gname, members in tr.process_groups.items():
        ref = _collectives(tr.ranks[members[0]]).get(gname, [])
        group_devs = [devs[r] for r in members]
        for k, n in enumerate(ref):
            op = COLLECTIVE_OPS[n.comm_type or "BARRIER"]
            size = float(n.comm_size or BARRIER_BYTES)
            label = f"{gname}#{k}:{n.name}"

            def launch(
                op: str = op,
                size: float = size,
                label: str = label,
                gdevs: list[str] = group_devs,
                tc: str = _traffic_class(None if gname == _WORLD else gname),
            ) -> Any:
                if len(gdevs) == 1:
                    return env.timeout(0)
                return run_collective(net, op, gdevs, size, algo=algo.get(op), traffic_class=tc, label=label)

            meetings[(gname, k)] = _Meeting(env, len(members), launch)
    # point-to-point pairs per (src, dst, tag, k); chains per channel keep trace order
    p2p_meet: dict[tuple[int, int], _Meeting] = {}
    sends, recvs = _all_p2p(tr)
    for (a, b, tag), snodes in sorted(sends.items()):
        prev_s: int | None = None
        prev_r: int | None = None
        for k, (sn, rn) in enumerate(zip(snodes, recvs[(a, b, tag)], strict=True)):

            def launch_p2p(
                src: str = devs[a],
                dst: str = devs[b],
                size: float = float(sn.comm_size or 0.0),
                label: str = f"p2p {a}->{b} tag {tag} #{k}:{sn.name}",
            ) -> Any:
                return net.transfer(src, dst, size, traffic_class="pp", label=label)

            m = _Meeting(env, 2, launch_p2p)
            p2p_meet[(a, sn.id)] = m
            p2p_meet[(b, rn.id)] = m
            prev_in_chain[(a, sn.id)], prev_in_chain[(b, rn.id)] = prev_s, prev_r
            prev_s, prev_r = sn.id, rn.id

    def run_node(rank: int, n: ChakraNode) -> Generator[Any, Any, None]:
        deps = [done[rank][d] for d in n.deps]
        chain_prev = prev_in_chain.get((rank, n.id))
        if chain_prev is not None:
            deps.append(done[rank][chain_prev])
        if deps:
            yield env.all_of(deps)
        ready = float(env.now)
        start = ready
        if n.type in _COMPUTE_TYPES:
            with compute[rank].request() as req:
                yield req
                start = float(env.now)
                if n.duration_s * compute_scale > 0:
                    yield env.timeout(n.duration_s * compute_scale)
        elif n.type == "COMM_COLL_NODE":
            meeting = meetings[seq_of[(rank, n.id)]]
            yield meeting.arrive()
        elif n.type in ("COMM_SEND_NODE", "COMM_RECV_NODE"):
            meeting = p2p_meet[(rank, n.id)]
            yield meeting.arrive()
        records.append(
            {
                "rank": rank,
                "node_id": n.id,
                "name": n.name,
                "type": n.type,
                "comm_type": n.comm_type,
                "pg_name": n.pg_name,
                "bytes": n.comm_size if n.comm_size is not None else 0.0,
                "ready_s": ready,
                "start_s": start,
                "end_s": float(env.now),
            }
        )
        done[rank][n.id].succeed()

    for rt in tr.ranks:
        for nid in rt.order:
            env.process(run_node(rt.rank, rt.nodes[nid]))
    net.run()

    for rt in tr.ranks:
        waiting = [nid for nid in rt.order if not done[rt.rank][nid].triggered]
        if waiting:
            n = rt.nodes[waiting[0]]
            raise TraceError(
                f"replay deadlocked: rank {rt.rank} never finished node {n.id} ({n.name!r}, {n.type}"
                + (f", group {n.pg_name}" if n.pg_name else "")
                + "); check the order of collectives and send/recv pairs across ranks",
                source=rt.source,
            )
    ops = pd.DataFrame.from_records(records).sort_values(["rank", "start_s", "node_id"], kind="stable")
    ops = ops.reset_index(drop=True)
    makespan = float(ops["end_s"].max()) if len(ops) else 0.0
    rank_rows = []
    for rt in tr.ranks:
        mine = ops[ops["rank"] == rt.rank]
        comp = _union(
            list(
                zip(
                    mine.loc[mine["type"].isin(_COMPUTE_TYPES), "start_s"],
                    mine.loc[mine["type"].isin(_COMPUTE_TYPES), "end_s"],
                    strict=True,
                )
            )
        )
        comm_sel = mine["type"].isin(_COMM_TYPES)
        comm = _union(list(zip(mine.loc[comm_sel, "start_s"], mine.loc[comm_sel, "end_s"], strict=True)))
        both = _intersection(comp, comm)
        dev = devs[rt.rank]
        rank_rows.append(
            {
                "rank": rt.rank,
                "device": dev,
                "node": graph.nodes[dev].get("node", -1),
                "end_s": float(mine["end_s"].max()) if len(mine) else 0.0,
                "compute_s": _length(comp) - both,
                "communication_s": _length(comm) - both,
                "overlap_s": both,
                "idle_s": makespan - (_length(comp) + _length(comm) - both),
                "comp_nodes": int(mine["type"].isin(_COMPUTE_TYPES).sum()),
                "comm_nodes": int(comm_sel.sum()),
                "comm_bytes": float(mine.loc[comm_sel, "bytes"].sum()),
            }
        )
    ranks_df = pd.DataFrame.from_records(rank_rows)
    links = net.link_records()
    flows = net.flow_records()
    summary = {
        "trace": tr.source,
        "num_ranks": tr.num_ranks,
        "topology": graph.graph.get("name"),
        "num_nodes": graph.graph.get("num_nodes"),
        "routing": routing,
        "seed": seed,
        "makespan_s": makespan,
        "breakdown_s": {k: float(ranks_df[f"{k}_s"].mean()) for k in ("compute", "communication", "overlap", "idle")},
        "process_groups": {("world" if g == _WORLD else g): list(m) for g, m in sorted(tr.process_groups.items())},
        "collectives": len(meetings),
        "p2p_transfers": len(p2p_meet) // 2,
        "flows": len(flows),
        "network_bytes": float(flows["bytes"].sum()) if len(flows) else 0.0,
        "bytes_by_class": {str(k): float(v) for k, v in flows.groupby("traffic_class")["bytes"].sum().items()}
        if len(flows)
        else {},
    }
    result = ChakraReplayResult(ranks_df, ops, links, flows, summary)
    if out_dir is not None:
        write_replay(result, out_dir)
    return result


def write_replay(result: ChakraReplayResult, out_dir: str | Path, *, force: bool = False) -> None:
    """Write a replay's tables (CSV + Parquet) and summary.json into ``out_dir`` atomically
    (an existing one is replaced only when netsim wrote it and ``force`` is given)."""
    from netsim.io import atomic_dir, write_json, write_table

    with atomic_dir(out_dir, force=force, kind="chakra-replay") as tmp:
        write_table(result.ranks, tmp, "ranks")
        write_table(result.ops, tmp, "ops")
        write_table(result.links, tmp, "links")
        write_table(result.flows, tmp, "flows")
        write_json(result.summary, tmp / "summary.json")
