# Size: over the ~600-line guideline on purpose.  This module is one format's reader: the docstring
# below states Chakra's rules and the parsers and checks under it implement them one to one
# (node fields, one rank, ranks together); the binary .et decoding and the planning already live
# in chakra_formats.py and chakra_plan.py, and a further split would part the rules from their code.
"""Chakra execution traces: read every form Chakra's tools write, validate, hand to the planner.

A Chakra execution trace (ET, MLCommons) has one file per rank; each is a DAG of nodes.  netsim
reads, per file (the form is recognised from the content, not the name):

* the binary ``.et`` Chakra writes (length-delimited protobuf, optionally gzipped;
  :mod:`netsim.traces.chakra_formats`);
* ``chakra_jsonizer`` output: the ``.et`` messages as protobuf JSON, one object after another
  (``GlobalMetadata`` first; ``"id": "216"``, ``"type": "COMP_NODE"``, ``"dataDeps"``,
  ``"attr": [{"name": "comm_type", "int64Val": "5"}]``; fields at their proto3 default are
  left out, so a missing ``durationMicros`` is 0 and a missing ``type`` is ``INVALID_NODE``);
* the feeder's JSON form ``{"workload_graph": [{"Id", "Name", "NodeType", "runtime",
  "data_deps", "is_cpu_op", "comm_type", "comm_size", ...}]}`` (Chakra's ``json_node.cpp``);
* netsim's own JSON: ``{"rank": 0, "process_groups": {"dp0": [0, 2]}, "nodes": [...]}`` or a
  bare list of nodes, each ``{"id", "name", "type", "data_deps", "duration_micros", "attrs"}``
  with attributes as an object or the protobuf list.

Files: ``DIR/rank<N>.json``, ``DIR/<prefix>.<N>.et`` (``.json``, ``.et.gz``) or one file; ranks
0..N-1 without gaps; an optional ``DIR/process_groups.json`` maps group names to rank lists.  A
directory (or file) with a single rank can be replicated to ``ranks`` ranks: every rank runs the
same trace (SPMD data parallelism).

Semantics (those of Chakra's feeder and ASTRA-sim's workload layer, the reference consumers):

* dependencies are ``data_deps``.  ``ctrl_deps`` are not: Chakra's converter writes the calling
  op there (PyTorch's caller -> callee relation) and encodes execution order as data
  dependencies for simulators; Chakra's feeder ignores them;
* node types: ``COMP`` / ``MEM_LOAD`` / ``MEM_STORE`` take ``duration_micros``; ``METADATA`` and
  ``INVALID`` take no time (a ``## process_group:init ##`` metadata node, as PyTorch records it,
  defines process groups: ``ranks: []`` means all ranks); ``COMM_COLL`` / ``COMM_SEND`` /
  ``COMM_RECV`` communicate.  Type names long (``COMP_NODE``), short (``COMP``) or numbers 0-7;
* ``is_cpu_op`` (default false) marks host-side ops: they run for their duration on their CPU
  thread (attribute ``tid``), also when typed as communication (the ``c10d::`` call that
  launches an NCCL kernel; ASTRA-sim refuses communication on the CPU); GPU ops run on the
  rank's compute stream (or attribute ``stream``);
* collectives: ``comm_type`` (``ALL_REDUCE``, ``REDUCE``, ``ALL_GATHER``, ``GATHER``,
  ``SCATTER``, ``BROADCAST``, ``ALL_TO_ALL``, ``REDUCE_SCATTER``, ``REDUCE_SCATTER_BLOCK``,
  ``BARRIER`` or 0-9; when absent, from the kernel name as Chakra's converter does:
  ``ncclKernel_AllReduce_...`` is an all-reduce), ``comm_size`` (bytes, nccl-tests "size"
  convention), ``pg_name`` (none: all ranks).  A collective without ``comm_size`` (the feeder
  JSON form has none) and ``GATHER`` / ``SCATTER`` (no root in the format) keep their measured
  duration instead of being simulated;
* ``COMM_SEND`` (``comm_dst``) and ``COMM_RECV`` (``comm_src``) with ``comm_size`` and
  ``comm_tag`` pair in order per (source, destination, tag).

Malformed traces raise :class:`~netsim.errors.TraceError` naming the file, node and field.
:mod:`netsim.traces.chakra_plan` compiles a trace into a :class:`~netsim.workload.plan.StepPlan`.
"""

from __future__ import annotations

import heapq
import json
import re
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from netsim.errors import TraceError
from netsim.limits import INT64_MAX, MAX_ACCELERATORS, MAX_TRACE_BYTES, check_count, check_file_size
from netsim.traces.chakra_formats import read_document
from netsim.traces.kineto import read_json

__all__ = [
    "COLLECTIVE_OPS",
    "COMM_TYPES",
    "NODE_TYPES",
    "ChakraNode",
    "ChakraTrace",
    "RankTrace",
    "load_chakra",
    "load_chakra_rank",
]

#: NodeType of Chakra's schema, in enum order (0-7)
NODE_TYPES = (
    "INVALID_NODE",
    "METADATA_NODE",
    "MEM_LOAD_NODE",
    "MEM_STORE_NODE",
    "COMP_NODE",
    "COMM_SEND_NODE",
    "COMM_RECV_NODE",
    "COMM_COLL_NODE",
)
#: CollectiveCommType of Chakra's schema, in enum order (0-9)
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
#: Chakra comm_type -> netsim collective op (GATHER and SCATTER: measured time, see above)
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
#: NCCL's barrier is an all-reduce of one word
BARRIER_BYTES = 4.0
#: kernel-name fragments -> comm_type, the rule of Chakra's converter (get_collective_comm_type)
_NAME_COMM_TYPES = (
    ("allreduce", "ALL_REDUCE"),
    ("alltoall", "ALL_TO_ALL"),
    ("allgather", "ALL_GATHER"),
    ("reducescatter", "REDUCE_SCATTER"),
    ("broadcast", "BROADCAST"),
    ("sendrecv", "ALL_TO_ALL"),
)
COMPUTE_TYPES = ("COMP_NODE", "MEM_LOAD_NODE", "MEM_STORE_NODE")
COMM_NODE_TYPES = ("COMM_SEND_NODE", "COMM_RECV_NODE", "COMM_COLL_NODE")
WORLD = "<world>"
_PG_INIT = "process_group:init"


@dataclass(frozen=True)
class ChakraNode:
    """One node of a rank's trace (times in seconds, sizes in bytes; ``comm_size`` None: not
    given, the node keeps its measured duration)."""

    id: int
    name: str
    type: str
    deps: tuple[int, ...]
    duration_s: float = 0.0
    on_cpu: bool = False
    stream: str = ""
    comm_type: str | None = None
    comm_size: float | None = None
    pg_name: str | None = None
    comm_src: int | None = None
    comm_dst: int | None = None
    comm_tag: int = 0

    @property
    def communicates(self) -> bool:
        """A GPU communication node (host-side communication calls are CPU ops)."""
        return self.type in COMM_NODE_TYPES and not self.on_cpu


@dataclass
class RankTrace:
    """The validated DAG of one rank: nodes by id, and a topological order (ties by id)."""

    rank: int
    nodes: dict[int, ChakraNode]
    order: list[int]
    source: str
    process_groups: dict[str, tuple[int, ...] | None] = field(default_factory=dict)
    form: str = "json"


@dataclass
class ChakraTrace:
    """All ranks of a trace, with the process groups (name -> member ranks, sorted)."""

    ranks: list[RankTrace]
    process_groups: dict[str, tuple[int, ...]]
    source: str
    replicated: bool = False

    @property
    def num_ranks(self) -> int:
        return len(self.ranks)

    @property
    def forms(self) -> list[str]:
        return sorted({rt.form for rt in self.ranks})


# --------------------------------------------------------------------------- documents


def _norm_key(s: str) -> str:
    return re.sub(r"[^A-Z0-9]", "", s.upper())


_TYPE_BY_KEY = {_norm_key(t): t for t in NODE_TYPES} | {_norm_key(t[: -len("_NODE")]): t for t in NODE_TYPES}
_COMM_BY_KEY = {_norm_key(t): t for t in COMM_TYPES}


# --------------------------------------------------------------------------- nodes


def _attr_value(entry: Mapping[str, Any]) -> Any:
    """The value of a protobuf attribute entry ``{"name": ..., "<type>_val": ...}``."""
    if "value" in entry:
        return entry["value"]
    for key, v in entry.items():
        if key in ("name", "doc_string", "docString", "type"):
            continue
        if isinstance(v, Mapping) and "values" in v:
            return list(v["values"])
        if isinstance(v, str) and "int" in key.lower() and re.fullmatch(r"-?\d+", v):
            return int(v)  # proto3 JSON writes 64-bit integers as strings
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


def _bool(v: Any, src: str, where: str) -> bool:
    if isinstance(v, bool):
        return v
    if v in (0, 1) or (isinstance(v, str) and v.lower() in ("true", "false", "0", "1")):
        return str(v).lower() in ("true", "1")
    raise TraceError(f"must be true or false (got {v!r})", source=src, field=where)


def _node_type(t: Any, src: str, where: str, proto3: bool) -> str:
    if t is None and proto3:
        return "INVALID_NODE"  # proto3 JSON leaves out the enum's default
    ntype = None
    if isinstance(t, int) and not isinstance(t, bool) and 0 <= t < len(NODE_TYPES):
        ntype = NODE_TYPES[t]
    elif isinstance(t, str):
        ntype = _TYPE_BY_KEY.get(_norm_key(t))
    if ntype is None:
        raise TraceError(
            f"unknown node type {t!r}; allowed: {', '.join(NODE_TYPES)} (or COMP, COMM_SEND, ..., "
            "or their numbers 0-7)",
            source=src,
            field=f"{where}.type",
        )
    return ntype


def _comm_type(ct: Any, name: str, src: str, where: str) -> str:
    if ct is None:  # as Chakra's converter: from the kernel name
        low = name.replace("_", "").replace("-", "").lower()
        for frag, named in _NAME_COMM_TYPES:
            if frag in low:
                return named
        raise TraceError(
            f"collective {name!r} has no comm_type and its name names no collective; allowed: {', '.join(COMM_TYPES)}",
            source=src,
            field=f"{where}.comm_type",
        )
    comm: str | None = None
    if isinstance(ct, int) and not isinstance(ct, bool) and 0 <= ct < len(COMM_TYPES):
        comm = COMM_TYPES[ct]
    elif isinstance(ct, str):
        comm = _COMM_BY_KEY.get(_norm_key(ct))
    if comm is None:
        raise TraceError(
            f"unknown comm_type {ct!r}; allowed: {', '.join(COMM_TYPES)} (or 0-9)",
            source=src,
            field=f"{where}.comm_type",
        )
    return comm


def _deps(raw: Mapping[str, Any], src: str, where: str) -> tuple[int, ...]:
    deps: list[int] = []
    for key in ("data_deps", "dataDeps"):
        val = raw.get(key)
        if val is None:
            continue
        if not isinstance(val, list):
            raise TraceError("must be a list of node ids", source=src, field=f"{where}.{key}")
        deps += [_int(d, src, f"{where}.{key}", minimum=0) for d in val]
    for key in ("ctrl_deps", "ctrlDeps"):  # not dependencies (module doc), but still node ids
        val = raw.get(key)
        if val is not None and not isinstance(val, list):
            raise TraceError("must be a list of node ids", source=src, field=f"{where}.{key}")
        for d in val or ():
            _int(d, src, f"{where}.{key}", minimum=0)
    return tuple(dict.fromkeys(deps))


def parse_node(raw: Any, src: str, i: int, *, proto3: bool = False) -> ChakraNode:
    """Validate one node (``proto3``: fields left out take the schema's defaults)."""
    where = f"nodes[{i}]"
    if not isinstance(raw, Mapping):
        raise TraceError("node must be an object", source=src, field=where)
    if "id" not in raw and not proto3:
        raise TraceError("node has no id", source=src, field=f"{where}.id")
    nid = _int(raw.get("id", 0), src, f"{where}.id", minimum=0)
    where = f"node {nid}"
    name = str(raw.get("name", f"node{nid}"))
    ntype = _node_type(raw.get("type"), src, where, proto3)
    attrs = _attrs(raw.get("attrs", raw.get("attr")), src, where)

    def get(key: str) -> Any:
        return raw[key] if key in raw else attrs.get(key)

    dur = get("duration_micros")
    if dur is None:
        dur = raw.get("durationMicros", 0)  # proto3 default: 0
    duration_s = _float(dur, src, f"{where}.duration_micros") * 1e-6
    on_cpu = _bool(get("is_cpu_op"), src, f"{where}.is_cpu_op") if get("is_cpu_op") is not None else False
    stream = ""
    if on_cpu and get("tid") is not None:
        stream = f"cpu:{get('tid')}"
    elif not on_cpu and get("stream") is not None:
        stream = f"compute:{get('stream')}"
    node = ChakraNode(nid, name, ntype, _deps(raw, src, where), duration_s, on_cpu, stream)
    if ntype not in COMM_NODE_TYPES or on_cpu:
        return node
    return _comm_fields(node, get, src, where)


def _comm_fields(node: ChakraNode, get: Any, src: str, where: str) -> ChakraNode:
    """The communication attributes of a GPU communication node."""
    size_raw = get("comm_size")
    size = _float(size_raw, src, f"{where}.comm_size") if size_raw is not None else None
    comm_type = comm_src = comm_dst = None
    if node.type == "COMM_COLL_NODE":
        comm_type = _comm_type(get("comm_type"), node.name, src, where)
        if comm_type == "BARRIER":
            size = max(size or 0.0, BARRIER_BYTES)
    else:
        if size is None:
            raise TraceError(f"{node.type} {node.name!r} has no comm_size", source=src, field=f"{where}.comm_size")
        peer = "comm_dst" if node.type == "COMM_SEND_NODE" else "comm_src"
        if get(peer) is None:
            what = "send" if peer == "comm_dst" else "recv"
            raise TraceError(f"{what} {node.name!r} has no {peer}", source=src, field=f"{where}.{peer}")
        rank = _int(get(peer), src, f"{where}.{peer}", minimum=0)
        comm_src, comm_dst = (None, rank) if peer == "comm_dst" else (rank, None)
    tag = _int(get("comm_tag"), src, f"{where}.comm_tag") if get("comm_tag") is not None else 0
    pg = get("pg_name")
    return replace(
        node,
        comm_type=comm_type,
        comm_size=size,
        pg_name=str(pg) if pg not in (None, "") else None,
        comm_src=comm_src,
        comm_dst=comm_dst,
        comm_tag=tag,
    )


def pg_init_groups(raw: Mapping[str, Any], src: str) -> dict[str, tuple[int, ...] | None]:
    """Process groups of a PyTorch ``## process_group:init ##`` metadata node: its first input
    is a JSON list of ``{"pg_name", "ranks", ...}`` (as a Python string literal after Chakra's
    converter); ``ranks: []`` (None here) means all ranks."""
    inputs = raw.get("inputs")
    text = inputs.get("values") if isinstance(inputs, Mapping) else None
    if isinstance(text, list):
        text = text[0] if text else ""
    if not isinstance(text, str) or "[" not in text:
        return {}
    start, end = text.find("[{"), text.rfind("}]")
    try:
        items = json.loads(text[start : end + 2]) if 0 <= start < end else []
    except json.JSONDecodeError:
        raise TraceError(
            "process_group:init metadata is not a JSON list of groups",
            source=src,
            field=f"node {raw.get('id')}.inputs.values",
        ) from None
    out: dict[str, tuple[int, ...] | None] = {}
    for g in items:
        if isinstance(g, Mapping) and "pg_name" in g:
            ranks = g.get("ranks") or []
            where = f"node {raw.get('id')}.inputs.values.ranks"
            out[str(g["pg_name"])] = tuple(sorted({_int(r, src, where, minimum=0) for r in ranks})) or None
    return out


# --------------------------------------------------------------------------- one rank


def topo_order(nodes: Mapping[int, ChakraNode], src: str) -> list[int]:
    """A topological order of the data dependencies, ties broken by id (the trace's recording
    order); :class:`TraceError` for unknown dependencies and cycles."""
    indeg = dict.fromkeys(nodes, 0)
    children: dict[int, list[int]] = defaultdict(list)
    for n in nodes.values():
        for d in n.deps:
            if d not in nodes:
                raise TraceError(
                    f"node {n.id} ({n.name!r}) depends on unknown node {d}", source=src, field=f"node {n.id}.data_deps"
                )
            if d == n.id:
                raise TraceError(
                    f"node {n.id} ({n.name!r}) depends on itself", source=src, field=f"node {n.id}.data_deps"
                )
            indeg[n.id] += 1
            children[d].append(n.id)
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


def _parse_groups(raw: Any, src: str, where: str) -> dict[str, tuple[int, ...] | None]:
    if not isinstance(raw, Mapping):
        raise TraceError("must be an object {name: [ranks]}", source=src, field=where)
    out: dict[str, tuple[int, ...] | None] = {}
    for name, ranks in raw.items():
        if not isinstance(ranks, list) or not ranks:
            raise TraceError("must be a non-empty list of ranks", source=src, field=f"{where}.{name}")
        out[str(name)] = tuple(sorted({_int(r, src, f"{where}.{name}", minimum=0) for r in ranks}))
    return out


def load_chakra_rank(path: str | Path, rank: int | None = None) -> RankTrace:
    """Parse and validate one rank's trace, in any form (``rank``: else the file's ``"rank"``,
    else the number its name ends with)."""
    src = str(path)
    form, header, raw_nodes = read_document(path)
    rank = rank if rank is not None else _rank_from_name(Path(path))
    groups: dict[str, tuple[int, ...] | None] = {}
    if "rank" in header:
        file_rank = _int(header["rank"], src, "rank", minimum=0)
        if rank is not None and file_rank != rank:
            raise TraceError(f"file says rank {file_rank}, its name says {rank}", source=src, field="rank")
        rank = file_rank
    if "process_groups" in header:
        groups = _parse_groups(header["process_groups"], src, "process_groups")
    if not isinstance(raw_nodes, list):
        raise TraceError("must be a list of nodes", source=src, field="nodes")
    if rank is None:
        raise TraceError(
            'cannot tell the rank: name the file rank<N>.json / <name>.<N>.et or add "rank": N', source=src
        )
    nodes: dict[int, ChakraNode] = {}
    proto3 = form in ("et", "jsonizer")
    for i, raw in enumerate(raw_nodes):
        n = parse_node(raw, src, i, proto3=proto3)
        if n.id in nodes:
            raise TraceError(f"duplicate node id {n.id}", source=src, field=f"nodes[{i}].id")
        nodes[n.id] = n
        if n.type == "METADATA_NODE" and _PG_INIT in n.name:
            groups.update(pg_init_groups(raw, src))
    if not nodes:
        raise TraceError("trace has no nodes", source=src)
    return RankTrace(rank, nodes, topo_order(nodes, src), src, groups, form)


_RANK_PATTERNS = (re.compile(r"rank[_\-.]?(\d+)$", re.I), re.compile(r"[._\-](\d+)$"), re.compile(r"^(\d+)$"))
_SUFFIXES = (".json", ".et", ".et.gz", ".gz")


def _rank_from_name(p: Path) -> int | None:
    stem = p.name
    for suffix in sorted(_SUFFIXES, key=len, reverse=True):
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    for pat in _RANK_PATTERNS:
        m = pat.search(stem)
        if m:
            return int(m.group(1))
    return None


def _trace_files(path: Path, src: str) -> list[Path]:
    if path.is_file():
        check_chakra_inputs([path], src)
        return [path]
    if not path.is_dir():
        raise TraceError("no such trace file or directory", source=src)
    files = sorted(
        f for f in path.iterdir() if f.is_file() and f.name.endswith(_SUFFIXES) and f.name != "process_groups.json"
    )
    if not files:
        raise TraceError("no rank traces (*.et, *.json) in the directory", source=src)
    check_chakra_inputs(files, src)
    return files


def check_chakra_inputs(files: list[Path], src: str) -> None:
    """Input limits of a Chakra trace, before any file is parsed (:mod:`netsim.limits`): at most
    one rank per accelerator netsim models, and every file within the trace size limit."""
    check_count(len(files), MAX_ACCELERATORS, "rank traces", source=src, what="rank files")
    for f in files:
        check_file_size(f, MAX_TRACE_BYTES, "a Chakra rank trace")


def load_chakra(path: str | Path, *, ranks: int | None = None) -> ChakraTrace:
    """Parse and validate a directory of per-rank traces, or one file (module docstring);
    ``ranks``: replicate a single-rank trace to that many ranks."""
    p = Path(path)
    src = str(path)
    files = _trace_files(p, src)
    by_rank: dict[int, RankTrace] = {}
    for f in files:
        rt = load_chakra_rank(f, _rank_from_name(f) if len(files) > 1 or p.is_dir() else 0)
        if rt.rank in by_rank:
            raise TraceError(f"rank {rt.rank} appears twice (also in {by_rank[rt.rank].source})", source=str(f))
        by_rank[rt.rank] = rt
    n = len(by_rank)
    missing = sorted(set(range(n)) - set(by_rank))
    if missing:
        raise TraceError(f"ranks must be 0..{n - 1}; missing rank {missing[0]} (have {sorted(by_rank)})", source=src)
    ordered = [by_rank[r] for r in range(n)]
    replicated = ranks is not None and ranks != n
    if replicated:
        ordered = replicate(ordered, ranks or 0, src)
    groups: dict[str, tuple[int, ...] | None] = {}
    sources: dict[str, str] = {}
    pg_file = p / "process_groups.json"
    if p.is_dir() and pg_file.is_file():
        groups = _parse_groups(read_json(pg_file), str(pg_file), "process_groups")
        sources = dict.fromkeys(groups, str(pg_file))
    for rt in ordered:
        for name, members in rt.process_groups.items():
            if name in groups and groups[name] != members:
                raise TraceError(
                    f"process group {name!r} is {_show(members)} here but {_show(groups[name])} in {sources[name]}",
                    source=rt.source,
                    field=f"process_groups.{name}",
                )
            groups.setdefault(name, members)
            sources.setdefault(name, rt.source)
    trace = ChakraTrace(ordered, {}, src, replicated)
    trace.process_groups = resolve_groups(trace, groups)
    check_matching(trace)
    return trace


def _show(members: tuple[int, ...] | None) -> str:
    return "all ranks" if members is None else str(list(members))


def replicate(ranks: list[RankTrace], n: int, src: str) -> list[RankTrace]:
    """The one rank's trace on ``n`` ranks (SPMD); refused for several ranks or send/recv."""
    if len(ranks) != 1:
        raise TraceError(
            f"--ranks {n}: the trace has {len(ranks)} ranks; only a single-rank trace can be replicated",
            source=src,
            field="ranks",
        )
    if n < 1:
        raise TraceError(f"must be >= 1 (got {n})", source=src, field="ranks")
    one = ranks[0]
    p2p = [nd for nd in one.nodes.values() if nd.communicates and nd.type != "COMM_COLL_NODE"]
    if p2p:
        raise TraceError(
            f"node {p2p[0].id} ({p2p[0].name!r}) is a send/recv with a fixed peer: a trace with "
            "point-to-point nodes cannot be replicated",
            source=one.source,
            field="ranks",
        )
    return [replace(one, rank=r) for r in range(n)]


# --------------------------------------------------------------------------- across ranks


def resolve_groups(trace: ChakraTrace, given: Mapping[str, tuple[int, ...] | None]) -> dict[str, tuple[int, ...]]:
    """Member ranks of every group a collective uses: as given (None: all ranks), else the ranks
    whose traces use it; no ``pg_name``: all ranks.  Peers and members must be ranks."""
    world = tuple(range(trace.num_ranks))
    used: dict[str, set[int]] = defaultdict(set)
    for rt in trace.ranks:
        for n in rt.nodes.values():
            if n.communicates and n.type == "COMM_COLL_NODE":
                used[n.pg_name or WORLD].add(rt.rank)
            for peer in (n.comm_src, n.comm_dst):
                if peer is not None and peer >= trace.num_ranks:
                    raise TraceError(
                        f"node {n.id} ({n.name!r}) names rank {peer}, but the trace has ranks 0..{trace.num_ranks - 1}",
                        source=rt.source,
                    )
    groups: dict[str, tuple[int, ...]] = {}
    for name in sorted(used):
        members = world if name == WORLD else given.get(name, tuple(sorted(used[name])))
        members = world if members is None else members
        bad = [r for r in members if r >= trace.num_ranks]
        if bad:
            raise TraceError(
                f"process group {name!r} names rank {bad[0]}, but the trace has ranks 0..{trace.num_ranks - 1}",
                source=trace.source,
            )
        outside = sorted(used[name] - set(members))
        if outside:
            raise TraceError(
                f"rank {outside[0]} runs a collective of process group {name!r}, which does not contain it",
                source=trace.ranks[outside[0]].source,
            )
        groups[name] = members
    return groups


def collectives_of(rt: RankTrace) -> dict[str, list[ChakraNode]]:
    """The rank's GPU collectives per group, in its topological order."""
    out: dict[str, list[ChakraNode]] = defaultdict(list)
    for nid in rt.order:
        n = rt.nodes[nid]
        if n.communicates and n.type == "COMM_COLL_NODE":
            out[n.pg_name or WORLD].append(n)
    return out


P2PKey = tuple[int, int, int]


def p2p_of(trace: ChakraTrace) -> tuple[dict[P2PKey, list[ChakraNode]], dict[P2PKey, list[ChakraNode]]]:
    """(sends, receives), each keyed (source rank, destination rank, tag), in topological order."""
    sends: dict[P2PKey, list[ChakraNode]] = defaultdict(list)
    recvs: dict[P2PKey, list[ChakraNode]] = defaultdict(list)
    for rt in trace.ranks:
        for nid in rt.order:
            n = rt.nodes[nid]
            if n.communicates and n.comm_dst is not None:
                sends[(rt.rank, n.comm_dst, n.comm_tag)].append(n)
            elif n.communicates and n.comm_src is not None:
                recvs[(n.comm_src, rt.rank, n.comm_tag)].append(n)
    return sends, recvs


def check_matching(trace: ChakraTrace) -> None:
    """Every member has the same collectives per group (type, size); every send its receive."""
    colls = [collectives_of(rt) for rt in trace.ranks]
    for name, members in sorted(trace.process_groups.items()):
        first = members[0]
        ref = colls[first].get(name, [])
        label = "all ranks" if name == WORLD else f"process group {name!r}"
        for r in members[1:]:
            mine = colls[r].get(name, [])
            if len(mine) != len(ref):
                raise TraceError(
                    f"{label}: rank {r} has {len(mine)} collectives, rank {first} has {len(ref)}",
                    source=trace.ranks[r].source,
                )
            for k, (want, got) in enumerate(zip(ref, mine, strict=True)):
                if want.comm_type != got.comm_type or want.comm_size != got.comm_size:
                    raise TraceError(
                        f"{label}: collective #{k} is {got.comm_type} of {_size(got)} (node {got.id}) on rank {r} "
                        f"but {want.comm_type} of {_size(want)} (node {want.id}) on rank {first}",
                        source=trace.ranks[r].source,
                    )
    sends, recvs = p2p_of(trace)
    for key in sorted(set(sends) | set(recvs)):
        sent, received = sends.get(key, []), recvs.get(key, [])
        src, dst, tag = key
        if len(sent) != len(received):
            raise TraceError(
                f"rank {src} sends {len(sent)} message(s) to rank {dst} (tag {tag}) but rank {dst} "
                f"receives {len(received)}",
                source=trace.ranks[dst if len(sent) > len(received) else src].source,
            )
        for x, y in zip(sent, received, strict=True):
            if x.comm_size != y.comm_size:
                raise TraceError(
                    f"send node {x.id} on rank {src} has {_size(x)}, its receive node {y.id} on rank {dst} {_size(y)}",
                    source=trace.ranks[dst].source,
                )


def _size(n: ChakraNode) -> str:
    return "unknown size" if n.comm_size is None else f"{n.comm_size:g} B"
