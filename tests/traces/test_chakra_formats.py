"""The file forms of Chakra traces: binary .et, chakra_jsonizer JSON, the feeder's JSON, errors.

The .et files here are written byte by byte with a small protobuf wire encoder that follows
Chakra's published schema (et_def.proto) independently of the descriptor netsim builds, so a
wrong field number on either side fails these tests.  The JSON forms mirror, field for field,
the shapes of the public artefacts of mlcommons/chakra's test data (tests/data/*.tar.gz): the
feeder's ``workload_graph`` JSON (``Id``/``Name``/``NodeType``/``runtime``, ``is_cpu_op``, no
comm attributes on NCCL kernels), ``chakra_jsonizer`` output (``MessageToJson`` of each message,
concatenated) and a PyTorch execution trace (``schema: 1.0.2-chakra.0.0.4``).
"""

from __future__ import annotations

import gzip
import json
import struct
from pathlib import Path
from typing import Any

import pytest

from netsim.cli import main
from netsim.errors import TraceError
from netsim.traces.chakra import load_chakra, load_chakra_rank
from netsim.traces.chakra_formats import read_et

# ------------------------------------------------------------------ a protobuf wire encoder


def varint(x: int) -> bytes:
    x &= (1 << 64) - 1  # negative int64 as two's complement, as protobuf writes them
    out = bytearray()
    while True:
        b = x & 0x7F
        x >>= 7
        out.append(b | (0x80 if x else 0))
        if not x:
            return bytes(out)


def key(field: int, wire: int) -> bytes:
    return varint(field << 3 | wire)


def f_varint(field: int, x: int) -> bytes:
    return key(field, 0) + varint(x)


def f_bytes(field: int, data: bytes | str) -> bytes:
    raw = data.encode() if isinstance(data, str) else data
    return key(field, 2) + varint(len(raw)) + raw


def f_double(field: int, x: float) -> bytes:
    return key(field, 1) + struct.pack("<d", x)


# AttributeProto (et_def.proto): name = 1; oneof value: double_val = 3, int64_val = 9,
# uint64_val = 13, bool_val = 27, bool_list = 28, string_val = 29
def attr(name: str, value: Any) -> bytes:
    body = f_bytes(1, name)
    if isinstance(value, bool):
        body += f_varint(27, int(value))
    elif isinstance(value, int):
        body += f_varint(9, value)
    elif isinstance(value, float):
        body += f_double(3, value)
    elif isinstance(value, list):
        body += f_bytes(28, f_bytes(1, bytes(int(v) for v in value)))  # packed bools
    else:
        body += f_bytes(29, str(value))
    return body


# Node: id = 1, name = 2, type = 3, ctrl_deps = 4, data_deps = 5, start_time_micros = 6,
# duration_micros = 7, inputs = 8 (IOInfo: values = 1), attr = 10
def node(
    nid: int,
    name: str,
    ntype: int,
    *,
    deps: tuple[int, ...] = (),
    ctrl: tuple[int, ...] = (),
    dur: int = 0,
    attrs: dict[str, Any] | None = None,
    inputs: str = "",
    packed: bool = True,
) -> bytes:
    body = f_varint(1, nid) + f_bytes(2, name) + f_varint(3, ntype)
    if ctrl:
        body += f_bytes(4, b"".join(varint(d) for d in ctrl))
    if deps and packed:
        body += f_bytes(5, b"".join(varint(d) for d in deps))
    else:
        body += b"".join(f_varint(5, d) for d in deps)
    body += f_varint(6, 123) + f_varint(7, dur)
    if inputs:
        body += f_bytes(8, f_bytes(1, inputs))
    for k, v in (attrs or {}).items():
        body += f_bytes(10, attr(k, v))
    return body


def metadata(**attrs: Any) -> bytes:  # GlobalMetadata: version = 1, attr = 2
    return f_bytes(1, "0.0.4") + b"".join(f_bytes(2, attr(k, v)) for k, v in attrs.items())


def stream(*messages: bytes) -> bytes:
    return b"".join(varint(len(m)) + m for m in messages)


PG_INIT = (
    '[\'[{"pg_name": "0", "backend_id": 1, "backend_config": "cuda:nccl", "ranks": [], '
    '"group_size": 2, "group_count": 2}, {"pg_name": "1", "ranks": [0, 1], "group_size": 2}]\']'
)


def rank_et(rank: int) -> bytes:
    """One rank of a 2-rank trace as Chakra's converter writes it: process-group metadata, a
    CPU op launching a GPU kernel, the CPU-side c10d call (COMM_COLL on the CPU, no comm_type),
    the NCCL kernel with comm_type / comm_size / pg_name, a send or receive."""
    gpu = {"is_cpu_op": False}
    peer = {"comm_dst": 1} if rank == 0 else {"comm_src": 0}
    return stream(
        metadata(schema="1.0.2-chakra.0.0.4", pid=7),
        node(3, "## process_group:init ##", 1, inputs=PG_INIT, attrs={"is_cpu_op": True, "tid": 1}),
        node(4, "aten::mm", 4, deps=(3,), ctrl=(2,), dur=40, attrs={"is_cpu_op": True, "tid": 1, "rf_id": -1}),
        node(5, "sm80_xmma_gemm", 4, deps=(4,), ctrl=(4,), dur=700, attrs=gpu, packed=False),
        node(6, "c10d::allreduce_", 7, deps=(4,), dur=25, attrs={"is_cpu_op": True, "tid": 1}),
        node(
            7,
            "ncclDevKernel_AllReduce_Sum_f32_RING_LL",
            7,
            deps=(5, 6),
            dur=900,
            attrs={**gpu, "comm_type": 0, "comm_size": 1 << 20, "pg_name": "0", "involved_dim": [True, True]},
        ),
        node(
            8,
            "ncclDevKernel_SendRecv",
            5 if rank == 0 else 6,
            deps=(7,),
            dur=80,
            attrs={**gpu, "comm_size": 4096, "comm_tag": 3, **peer},
        ),
    )


def write_et(tmp: Path, name: str = "trace", gz: bool = False) -> Path:
    d = tmp / name
    d.mkdir()
    for r in (0, 1):
        data = rank_et(r)
        (d / f"chakra.{r}.et{'.gz' if gz else ''}").write_bytes(gzip.compress(data, mtime=0) if gz else data)
    return d


# ------------------------------------------------------------------ binary .et


@pytest.mark.parametrize("gz", [False, True])
def test_et_reads_every_field(tmp_path: Path, gz: bool) -> None:
    d = write_et(tmp_path, gz=gz)
    meta, raw = read_et(next(d.iterdir()))
    assert meta["schema"] == "1.0.2-chakra.0.0.4" and meta["pid"] == 7 and meta["version"] == "0.0.4"
    assert [n["id"] for n in raw] == [3, 4, 5, 6, 7, 8]
    k = raw[4]
    assert (k["type"], k["duration_micros"], k["data_deps"], k["attr"]["comm_size"]) == (7, 900, [5, 6], 1 << 20)
    assert k["attr"]["involved_dim"] == [True, True] and raw[1]["attr"]["rf_id"] == -1
    assert raw[2]["data_deps"] == [4]  # unpacked repeated field
    tr = load_chakra(d)
    assert tr.num_ranks == 2 and tr.forms == ["et"]
    r0 = tr.ranks[0]
    assert r0.nodes[4].deps == (3,)  # ctrl_deps (the caller) are not dependencies
    assert (r0.nodes[4].on_cpu, r0.nodes[4].stream) == (True, "cpu:1")
    assert r0.nodes[6].on_cpu and r0.nodes[6].comm_type is None  # the c10d call: a CPU op
    n7 = r0.nodes[7]
    assert (n7.comm_type, n7.comm_size, n7.pg_name, n7.duration_s) == ("ALL_REDUCE", 1048576.0, "0", 900e-6)
    assert (r0.nodes[8].comm_dst, r0.nodes[8].comm_tag, tr.ranks[1].nodes[8].comm_src) == (1, 3, 0)
    assert tr.process_groups == {"0": (0, 1)}  # process_group:init, ranks []: every rank


def test_committed_et_example_is_this_encoder_s() -> None:
    # tests/fixtures/traces/et2 (used in the docs) holds rank_et(0) and rank_et(1)
    fix = Path(__file__).resolve().parents[1] / "fixtures" / "traces" / "et2"
    assert [(fix / f"chakra.{r}.et").read_bytes() for r in (0, 1)] == [rank_et(0), rank_et(1)]


def test_et_replay_runs(tmp_path: Path) -> None:
    from netsim.collectives.setup import collective_setup
    from netsim.traces.chakra_plan import replay_chakra
    from tests.traces.test_chakra import star

    g = star(2)
    o = replay_chakra(
        write_et(tmp_path), g, tmp_path / "run", setup=collective_setup(g, cost_model="ideal"), report=None
    )
    t = o.summary["trace"]
    assert (t["simulated_collectives"], t["p2p_transfers"], t["host_ops"], t["compute_ops"]) == (1, 1, 4, 2)
    ops = o.tables["trace_nodes"].set_index(["rank", "node_id"])
    # the gemm starts after the 40 us CPU op that launched it; the all-reduce after the gemm
    assert ops.loc[(0, 5), ["start_s", "end_s"]].tolist() == pytest.approx([40e-6, 740e-6])
    assert ops.loc[(0, 7), "start_s"] == pytest.approx(740e-6)
    assert o.summary["bytes_by_class"]["other"] == pytest.approx(2 * (1 << 20))  # pg "0": class other
    assert o.summary["bytes_by_class"]["pp"] == 4096


def test_jsonizer_output_and_proto3_defaults(tmp_path: Path) -> None:
    # chakra_jsonizer writes MessageToJson of every message, one after another; proto3 JSON
    # leaves out fields at their default (duration 0, node id 0, type INVALID_NODE = 0)
    from google.protobuf.json_format import MessageToJson

    from netsim.traces.chakra_formats import _message_classes

    meta_cls, node_cls = _message_classes()
    msgs = [meta_cls.FromString(metadata(schema="1.0.2-chakra.0.0.4"))]
    msgs += [
        node_cls.FromString(node(0, "root", 0)),
        node_cls.FromString(node(1, "aten::add", 4, deps=(0,))),
        node_cls.FromString(
            node(2, "ncclKernel_Broadcast_RING_LL", 7, deps=(1,), dur=12, attrs={"comm_type": 5, "comm_size": 2048})
        ),
    ]
    p = tmp_path / "chakra.0.json"
    p.write_text("".join(MessageToJson(m) for m in msgs))
    text = p.read_text()
    assert '"durationMicros"' in text and '"int64Val": "5"' in text and '"type": "COMP_NODE"' in text
    rt = load_chakra_rank(p)
    assert rt.form == "jsonizer" and rt.rank == 0
    assert (rt.nodes[0].type, rt.nodes[1].duration_s, rt.nodes[1].deps) == ("INVALID_NODE", 0.0, (0,))
    assert (rt.nodes[2].comm_type, rt.nodes[2].comm_size) == ("BROADCAST", 2048.0)


# ------------------------------------------------------------------ JSON forms


def test_feeder_json_form(tmp_path: Path) -> None:
    # the shape of Chakra's jsonData/small_chakra.0.json: no comm attributes on NCCL kernels
    doc = {
        "workload_graph": [
            {
                "Id": 216,
                "Name": "aten::flatten_dense_tensors(0)",
                "NodeType": 4,
                "ctrlDeps": [3],
                "data_deps": [],
                "runtime": 318,
                "is_cpu_op": True,
            },
            {
                "Id": 430,
                "Name": "CatArrayBatchedCopy",
                "NodeType": 4,
                "ctrlDeps": [429],
                "data_deps": [216],
                "runtime": 4,
                "is_cpu_op": False,
            },
            {
                "Id": 432,
                "Name": "c10d::broadcast_(0)",
                "NodeType": 7,
                "data_deps": [],
                "runtime": 85,
                "is_cpu_op": True,
            },
            {
                "Id": 435,
                "Name": "ncclKernel_Broadcast_RING_LL_Sum_int8_t(ncclDevComm*, unsigned long, ncclWork*)",
                "NodeType": 7,
                "data_deps": [432, 216],
                "runtime": 28,
                "is_cpu_op": False,
            },
            {"Id": 541, "Name": "aten::zero_", "NodeType": 4, "data_deps": [], "is_cpu_op": True},
        ],
        "workload_name": "workload_name",
        "ngpus": 8,
        "soc": "soc_name",
    }
    (tmp_path / "chakra.0.json").write_text(json.dumps(doc))
    tr = load_chakra(tmp_path, ranks=4)
    assert tr.forms == ["feeder-json"] and tr.num_ranks == 4 and tr.replicated
    n = tr.ranks[3].nodes
    assert (n[435].comm_type, n[435].comm_size, n[435].on_cpu) == ("BROADCAST", None, False)
    assert n[432].on_cpu and n[541].duration_s == 0.0 and n[430].deps == (216,)
    assert tr.process_groups == {"<world>": (0, 1, 2, 3)}


def test_pytorch_execution_trace_is_refused(tmp_path: Path) -> None:
    p = tmp_path / "rank0.json"
    p.write_text(
        json.dumps(
            {
                "schema": "1.0.2-chakra.0.0.4",
                "pid": 1,
                "nodes": [
                    {
                        "id": 2,
                        "name": "[pytorch|profiler|execution_trace|thread]",
                        "ctrl_deps": 1,
                        "inputs": {"values": [], "shapes": [], "types": []},
                        "outputs": {"values": [], "shapes": [], "types": []},
                        "attrs": [{"name": "rf_id", "type": "uint64", "value": 0}],
                    }
                ],
            }
        )
    )
    with pytest.raises(TraceError, match=r"PyTorch execution trace \(schema 1.0.2-chakra.0.0.4\).*chakra_converter"):
        load_chakra_rank(p)


def test_replication_refuses_point_to_point(tmp_path: Path) -> None:
    d = write_et(tmp_path)
    (d / "chakra.1.et").unlink()
    with pytest.raises(TraceError, match="a trace with point-to-point nodes cannot be replicated"):
        load_chakra(d, ranks=2)
    with pytest.raises(TraceError, match="only a single-rank trace can be replicated"):
        load_chakra(write_et(tmp_path, "two"), ranks=4)


# ------------------------------------------------------------------ corrupt files


def _corrupt_cases() -> list[tuple[str, bytes, str]]:
    good = rank_et(0)
    last = len(
        node(
            8,
            "ncclDevKernel_SendRecv",
            5,
            deps=(7,),
            dur=80,
            attrs={"is_cpu_op": False, "comm_size": 4096, "comm_tag": 3, "comm_dst": 1},
        )
    )
    at = len(good) - last - 1
    return [
        (
            "truncated",
            good[:-7],
            f"message 6 at byte {at} claims {last} bytes but only {last - 7} remain (truncated file?)",
        ),
        ("size prefix", good + b"\xff\xff", f"the size prefix at byte {len(good)} runs past the end of the file"),
        ("garbage", stream(metadata(), b"\x0a\xff\xff\xff\xff\x0f"), "message 1 at byte 8 is not a Chakra Node"),
        ("long varint", b"\xff" * 11, "the size prefix at byte 0 is longer than 10 bytes"),
        ("gzip", gzip.compress(good)[:40], "corrupt gzip-compressed .et"),
    ]


@pytest.mark.parametrize("case", range(len(_corrupt_cases())))
def test_corrupt_et(tmp_path: Path, case: int) -> None:
    _, data, message = _corrupt_cases()[case]
    p = tmp_path / "chakra.0.et"
    p.write_bytes(data)
    with pytest.raises(TraceError) as ei:
        load_chakra_rank(p)
    assert str(ei.value).startswith(f"{p}: ") and message in str(ei.value) and "\n" not in str(ei.value)


def test_cli_corrupt_et_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = write_et(tmp_path)
    (d / "chakra.1.et").write_bytes(rank_et(1)[:100])
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as ei:
        main(["replay-chakra", str(d), "--topology", "dgx-h100", "--out", str(out)])
    err = capsys.readouterr().err
    assert ei.value.code == 2 and "chakra.1.et: corrupt .et: message" in err and err.count("\n") == 1
    assert not out.exists()
