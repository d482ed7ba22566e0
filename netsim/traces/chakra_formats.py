"""The file forms of Chakra execution traces: binary ``.et`` (protobuf), and JSON.

:func:`read_document` recognises the form from the content and returns the raw nodes;
:mod:`netsim.traces.chakra` validates them.  The JSON forms are described there.

Chakra (MLCommons, github.com/mlcommons/chakra) stores one rank's execution trace as a stream
of length-delimited protobuf messages: a ``GlobalMetadata`` first, then one ``Node`` per op,
each preceded by its size as a varint (Chakra's ``encodeMessage`` / ``decodeMessage``); the
file may be gzip-compressed (Chakra's reader opens either).

The message classes are built here from a descriptor written out in code, so no ``protoc`` run
and no generated file is needed.  It follows ``schema/protobuf/et_def.proto`` of Chakra 1.0.0
(repository commit 21585d8f, 2026-05-20; the ``Node`` and ``AttributeProto`` field numbers have
been stable since the schema's first release): package ``ChakraProtoMsg``;

* ``GlobalMetadata``: ``version`` (1, string), ``attr`` (2, repeated AttributeProto);
* ``Node``: ``id`` (1, uint64), ``name`` (2), ``type`` (3, enum NodeType), ``ctrl_deps`` (4,
  repeated uint64), ``data_deps`` (5), ``start_time_micros`` (6), ``duration_micros`` (7),
  ``inputs`` / ``outputs`` (8, 9: IOInfo with string ``values``, ``shapes``, ``types``),
  ``attr`` (10, repeated AttributeProto);
* ``AttributeProto``: ``name`` (1), ``doc_string`` (2) and a oneof ``value``: one scalar and one
  list field per type, numbered 3 to 32 in the order double, float, int32, int64, uint32,
  uint64, sint32, sint64, fixed32, fixed64, sfixed32, sfixed64, bool, string, bytes (scalar
  ``<type>_val`` then list ``<type>_list``, a message with ``repeated <type> values = 1``).

Enum ``NodeType``: 0 INVALID, 1 METADATA, 2 MEM_LOAD, 3 MEM_STORE, 4 COMP, 5 COMM_SEND,
6 COMM_RECV, 7 COMM_COLL (read as numbers; an unknown number is kept, proto3 enums are open);
the ``comm_type`` attribute holds a CollectiveCommType number (0-9, as in
:data:`netsim.traces.chakra.COMM_TYPES`).  :func:`read_et` returns the nodes as plain dicts in
the JSON spelling :mod:`netsim.traces.chakra` parses (attributes as ``{name: value}``).
"""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from netsim.errors import TraceError
from netsim.traces.kineto import json_error

__all__ = ["check_not_pytorch_et", "read_document", "read_et"]

_PACKAGE = "ChakraProtoMsg"
#: (scalar name, descriptor type) per oneof type, in schema order (fields 3, 5, ... 31; the
#: lists are the next number)
_VALUE_TYPES = (
    ("double", "TYPE_DOUBLE"),
    ("float", "TYPE_FLOAT"),
    ("int32", "TYPE_INT32"),
    ("int64", "TYPE_INT64"),
    ("uint32", "TYPE_UINT32"),
    ("uint64", "TYPE_UINT64"),
    ("sint32", "TYPE_SINT32"),
    ("sint64", "TYPE_SINT64"),
    ("fixed32", "TYPE_FIXED32"),
    ("fixed64", "TYPE_FIXED64"),
    ("sfixed32", "TYPE_SFIXED32"),
    ("sfixed64", "TYPE_SFIXED64"),
    ("bool", "TYPE_BOOL"),
    ("string", "TYPE_STRING"),
    ("bytes", "TYPE_BYTES"),
)
#: enum NodeType, in number order
_NODE_TYPES = (
    "INVALID_NODE",
    "METADATA_NODE",
    "MEM_LOAD_NODE",
    "MEM_STORE_NODE",
    "COMP_NODE",
    "COMM_SEND_NODE",
    "COMM_RECV_NODE",
    "COMM_COLL_NODE",
)
_classes: tuple[Any, Any] | None = None


def _message_classes() -> tuple[Any, Any]:
    """(GlobalMetadata, Node) message classes, built once from the schema above."""
    global _classes
    if _classes is not None:
        return _classes
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    F = descriptor_pb2.FieldDescriptorProto
    fdp = descriptor_pb2.FileDescriptorProto(name="netsim_chakra_et_def.proto", package=_PACKAGE, syntax="proto3")

    def message(name: str, fields: list[tuple[int, str, str, bool, str | None, bool]], oneof: str = "") -> None:
        m = fdp.message_type.add(name=name)
        if oneof:
            m.oneof_decl.add(name=oneof)
        for number, fname, ftype, repeated, type_name, in_oneof in fields:
            f = m.field.add(
                name=fname,
                number=number,
                type=getattr(F, ftype),
                label=F.LABEL_REPEATED if repeated else F.LABEL_OPTIONAL,
            )
            if type_name:
                f.type_name = f".{_PACKAGE}.{type_name}"
            if in_oneof:
                f.oneof_index = 0

    attr_fields: list[tuple[int, str, str, bool, str | None, bool]] = [
        (1, "name", "TYPE_STRING", False, None, False),
        (2, "doc_string", "TYPE_STRING", False, None, False),
    ]
    for i, (tname, ftype) in enumerate(_VALUE_TYPES):
        list_msg = tname.capitalize() + "List"
        message(list_msg, [(1, "values", ftype, True, None, False)])
        attr_fields.append((3 + 2 * i, f"{tname}_val", ftype, False, None, True))
        attr_fields.append((4 + 2 * i, f"{tname}_list", "TYPE_MESSAGE", False, list_msg, True))
    message("AttributeProto", attr_fields, oneof="value")
    enum = fdp.enum_type.add(name="NodeType")
    for number, name in enumerate(_NODE_TYPES):
        enum.value.add(name=name, number=number)
    message(
        "IOInfo",
        [
            (1, "values", "TYPE_STRING", False, None, False),
            (2, "shapes", "TYPE_STRING", False, None, False),
            (3, "types", "TYPE_STRING", False, None, False),
        ],
    )
    message(
        "GlobalMetadata",
        [(1, "version", "TYPE_STRING", False, None, False), (2, "attr", "TYPE_MESSAGE", True, "AttributeProto", False)],
    )
    message(
        "Node",
        [
            (1, "id", "TYPE_UINT64", False, None, False),
            (2, "name", "TYPE_STRING", False, None, False),
            (3, "type", "TYPE_ENUM", False, "NodeType", False),
            (4, "ctrl_deps", "TYPE_UINT64", True, None, False),
            (5, "data_deps", "TYPE_UINT64", True, None, False),
            (6, "start_time_micros", "TYPE_UINT64", False, None, False),
            (7, "duration_micros", "TYPE_UINT64", False, None, False),
            (8, "inputs", "TYPE_MESSAGE", False, "IOInfo", False),
            (9, "outputs", "TYPE_MESSAGE", False, "IOInfo", False),
            (10, "attr", "TYPE_MESSAGE", True, "AttributeProto", False),
        ],
    )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    _classes = (
        message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{_PACKAGE}.GlobalMetadata")),
        message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{_PACKAGE}.Node")),
    )
    return _classes


def is_binary_trace(data: bytes) -> bool:
    """True unless ``data`` looks like JSON text (first non-blank byte ``{`` or ``[``)."""
    head = data.lstrip()[:1]
    return head not in (b"{", b"[")


def _unzip(data: bytes, src: str) -> bytes:
    if data[:2] != b"\x1f\x8b":
        return data
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as exc:
        raise TraceError(f"corrupt gzip-compressed .et: {exc}", source=src) from None


def _frames(data: bytes, src: str) -> list[tuple[int, bytes]]:
    """Split a length-delimited stream into (offset, message bytes)."""
    out: list[tuple[int, bytes]] = []
    pos, n = 0, len(data)
    while pos < n:
        start = pos
        size = shift = 0
        while True:
            if pos >= n:
                raise TraceError(
                    f"corrupt .et: the size prefix at byte {start} runs past the end of the file (truncated file?)",
                    source=src,
                )
            b = data[pos]
            pos += 1
            size |= (b & 0x7F) << shift
            if not b & 0x80:
                break
            shift += 7
            if shift > 63:
                raise TraceError(f"corrupt .et: the size prefix at byte {start} is longer than 10 bytes", source=src)
        if pos + size > n:
            raise TraceError(
                f"corrupt .et: message {len(out)} at byte {start} claims {size} bytes but only "
                f"{n - pos} remain (truncated file?)",
                source=src,
            )
        out.append((start, data[pos : pos + size]))
        pos += size
    return out


def _attr_value(attr: Any) -> Any:
    which = attr.WhichOneof("value")
    if which is None:
        return None
    v = getattr(attr, which)
    return list(v.values) if which.endswith("_list") else v


def _node_dict(msg: Any) -> dict[str, Any]:
    node: dict[str, Any] = {
        "id": int(msg.id),
        "name": msg.name,
        "type": int(msg.type),
        "data_deps": [int(d) for d in msg.data_deps],
        "ctrl_deps": [int(d) for d in msg.ctrl_deps],
        "duration_micros": int(msg.duration_micros),
        "attr": {a.name: _attr_value(a) for a in msg.attr},
    }
    if msg.HasField("inputs"):
        node["inputs"] = {"values": msg.inputs.values}
    return node


def read_et(path: str | Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(metadata, nodes) of a binary Chakra trace; :class:`TraceError` naming the file and the
    byte offset of whatever is corrupt (see the module docstring)."""
    from google.protobuf.message import DecodeError

    src = str(path)
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise TraceError(f"cannot read trace: {exc}", source=src) from None
    data = _unzip(raw, src)
    if not data:
        raise TraceError("trace file is empty", source=src)
    meta_cls, node_cls = _message_classes()
    frames = _frames(data, src)
    try:
        meta_msg = meta_cls.FromString(frames[0][1])
    except DecodeError as exc:
        raise TraceError(
            f"corrupt .et: the first message (GlobalMetadata) does not decode: {exc}", source=src
        ) from None
    meta: dict[str, Any] = {"version": meta_msg.version} | {a.name: _attr_value(a) for a in meta_msg.attr}
    nodes = []
    for k, (offset, body) in enumerate(frames[1:], start=1):
        try:
            nodes.append(_node_dict(node_cls.FromString(body)))
        except DecodeError as exc:
            raise TraceError(
                f"corrupt .et: message {k} at byte {offset} is not a Chakra Node: {exc}", source=src
            ) from None
    return meta, nodes


#: feeder JSON (json_node.cpp) key -> netsim's spelling
_FEEDER_KEYS = {"Id": "id", "Name": "name", "NodeType": "type", "runtime": "duration_micros", "ctrlDeps": "ctrl_deps"}


def _json_objects(text: str, src: str) -> list[Any]:
    """One JSON document, or several written one after another (``chakra_jsonizer``)."""
    dec = json.JSONDecoder()
    out: list[Any] = []
    pos, n = 0, len(text)
    while True:
        while pos < n and text[pos].isspace():
            pos += 1
        if pos >= n:
            return out
        try:
            obj, pos = dec.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            raise json_error(exc, text, src) from None
        out.append(obj)


def read_document(path: str | Path) -> tuple[str, dict[str, Any], list[Any]]:
    """``(form, header, raw nodes)`` of one rank's file, whichever form it is in (module doc);
    forms: ``et``, ``jsonizer``, ``feeder-json``, ``json``."""
    src = str(path)
    p = Path(path)
    if not p.is_file():
        raise TraceError("trace file not found", source=src)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise TraceError(f"cannot read trace: {exc}", source=src) from None
    if not data.strip():
        raise TraceError("trace file is empty", source=src)
    if is_binary_trace(data):
        meta, nodes = read_et(p)
        return "et", meta, nodes
    try:
        docs = _json_objects(data.decode("utf-8"), src)
    except UnicodeDecodeError as exc:
        raise TraceError(f"cannot read trace: {exc}", source=src) from None
    if len(docs) > 1:  # chakra_jsonizer: GlobalMetadata, then one Node per object
        head = docs[0] if isinstance(docs[0], Mapping) and "id" not in docs[0] and "name" not in docs[0] else {}
        return "jsonizer", dict(head), docs[1:] if head else docs
    doc = docs[0]
    if isinstance(doc, list):
        return "json", {}, doc
    if not isinstance(doc, Mapping):
        raise TraceError("not a Chakra trace: expected an object with nodes or a list of nodes", source=src)
    if "workload_graph" in doc:
        graph = doc["workload_graph"]
        if not isinstance(graph, list):
            raise TraceError("must be a list of nodes", source=src, field="workload_graph")
        nodes = [
            {_FEEDER_KEYS.get(str(k), str(k)): v for k, v in n.items()} if isinstance(n, Mapping) else n for n in graph
        ]
        return "feeder-json", {k: v for k, v in doc.items() if k != "workload_graph"}, nodes
    if "nodes" not in doc:
        raise TraceError("not a Chakra trace: the JSON object has no nodes (nor workload_graph)", source=src)
    check_not_pytorch_et(doc, src)
    return "json", {k: v for k, v in doc.items() if k != "nodes"}, doc["nodes"]


def check_not_pytorch_et(doc: Mapping[str, Any], src: str) -> None:
    """A PyTorch execution trace (the converter's *input*) has nodes without types: say so."""
    nodes = doc.get("nodes")
    schema = str(doc.get("schema", ""))
    if (
        isinstance(nodes, list)
        and nodes
        and all(isinstance(n, Mapping) and "type" not in n for n in nodes)
        and ("chakra" in schema or all("inputs" in n for n in nodes))
    ):
        raise TraceError(
            f"this is a PyTorch execution trace (schema {schema or '?'}), the input of Chakra's "
            "converter, not a Chakra trace: convert it with chakra_trace_link and chakra_converter",
            source=src,
        )
