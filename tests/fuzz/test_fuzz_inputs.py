"""Fuzz every reader with malformed inputs: each must be refused by one line, exit 2, touching nothing.

Readers and the command that exercises each (in-process, in a scratch folder):
topology YAML (``topology show``), ``--set`` values, workload YAML (``sweep --dry-run``),
scenario YAML (``run``), flows CSV (``flows``), nccl-tests logs (``calibrate nccl``), Kineto
JSON (``import kineto``), Chakra JSON (``replay-chakra``), routing traces
(``run --routing-trace``), calibration YAML (``collective --calibration``), kernel tables
(``run --kernels``) and Liger-Kernel's benchmark CSV (``import liger``).  Every generated
input is malformed by construction (a value no field accepts, a broken line, a missing key), so
the contract of :func:`tests.fuzz.harness.assert_rejected` applies to all of them.
"""

from __future__ import annotations

import copy
import json
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from hypothesis import given
from hypothesis import strategies as st

from netsim.traces.liger import LIGER_BENCHMARKS
from tests.fuzz.harness import BAD_NUMBERS, FUZZ, assert_rejected, bad_number, bad_token

ROOT = Path(__file__).resolve().parents[2]
FIX = ROOT / "tests" / "fixtures"
TOPOLOGY = yaml.safe_load((ROOT / "netsim" / "data" / "topologies" / "dgx-h100.yaml").read_text())
SWEEP = yaml.safe_load((ROOT / "examples" / "sweeps" / "oversubscription.yaml").read_text())
NCCL_LOG = (FIX / "nccl" / "all_reduce_perf_1n.log").read_text()


@contextmanager
def scratch() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="netsim-fuzz-") as d:
        yield Path(d)


def _set(data: dict[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    out = copy.deepcopy(data)
    node = out
    *parents, last = dotted.split(".")
    for p in parents:
        node = node[p]
    node[last] = value
    return out


def _yaml(data: Any) -> str:
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


# --------------------------------------------------------------------------- YAML specs

yaml_noise = st.text(alphabet=":-[]{}&*!|>'\"#%@`,?\n\t abcnx019.e", max_size=200)


@FUZZ
@given(text=yaml_noise)
def test_topology_yaml_noise(text: str) -> None:
    with scratch() as d:
        (d / "topo.yaml").write_text(text)
        assert_rejected(["topology", "show", "topo.yaml", "--json"], d, ("topo.yaml",))


TOPOLOGY_FIELDS = [
    "num_nodes",
    "node.accelerators",
    "node.nvlink_bandwidth",
    "node.nvlink_latency",
    "node.pcie_bandwidth",
    "node.nic.bandwidth",
    "node.nic.latency",
    "node.host_nics.count",
    "accelerator.memory",
    "accelerator.memory_bandwidth",
    "accelerator.peak_flops.bf16",
    "backend.nodes_per_leaf",
    "backend.oversubscription",
    "backend.switch_latency",
    "frontend.storage.count",
    "frontend.storage.bandwidth",
]


@FUZZ
@given(field=st.sampled_from(TOPOLOGY_FIELDS), value=bad_number)
def test_topology_field_with_a_bad_value(field: str, value: Any) -> None:
    with scratch() as d:
        (d / "topo.yaml").write_text(_yaml(_set(TOPOLOGY, field, value)))
        line = assert_rejected(["topology", "show", "topo.yaml", "--json"], d, ("topo.yaml",))
        assert field.rpartition(".")[0] in line


SET_KEYS = [
    "num_nodes",
    "node.accelerators",
    "node.nvlink_bandwidth",
    "node.nic.latency",
    "backend.oversubscription",
    "backend.nodes_per_leaf",
    "accelerator.memory",
]


@FUZZ
@given(
    key=st.sampled_from(SET_KEYS),
    value=st.one_of(
        bad_number.map(lambda v: yaml.safe_dump(v, default_flow_style=True).strip().removesuffix("...").strip()),
        st.text(alphabet="abcxyz&*!%", min_size=1, max_size=12),
    ),
)
def test_set_value(key: str, value: str) -> None:
    with scratch() as d:
        assert_rejected(["topology", "show", "dgx-h100", "--set", f"{key}={value}", "--json"], d, ("--set",))


WORKLOAD_FIELDS = [
    "model.layers",
    "model.hidden",
    "model.ffn_hidden",
    "model.heads",
    "model.vocab",
    "model.moe.experts",
    "model.moe.top_k",
    "parallelism.ep",
    "parallelism.tp",
    "num_microbatches",
    "steps",
]


@FUZZ
@given(field=st.sampled_from(WORKLOAD_FIELDS), value=bad_number)
def test_workload_field_with_a_bad_value(field: str, value: Any) -> None:
    sweep = copy.deepcopy(SWEEP)
    sweep["workload"] = _set(sweep["workload"], field, value)
    with scratch() as d:
        (d / "sw.yaml").write_text(_yaml(sweep))
        assert_rejected(["sweep", "sw.yaml", "--dry-run"], d, ("sw.yaml",))


SCENARIO = {
    "name": "s",
    "topology": "dgx-h100",
    "nodes": 2,
    "workload": SWEEP["workload"],
    "steps": 1,
    "seed": 0,
    "options": {"routing_samples": 4},
}


@FUZZ
@given(
    field=st.sampled_from(["nodes", "seed", "steps", "options.routing_samples", "topology", "workload"]),
    value=st.sampled_from([v for v in BAD_NUMBERS if v not in ("abc", "", "12 parsecs")]),
)
def test_scenario_field_with_a_bad_value(field: str, value: Any) -> None:
    with scratch() as d:
        (d / "scen.yaml").write_text(_yaml(_set(SCENARIO, field, value)))
        assert_rejected(["run", "scen.yaml", "-q", "--no-report", "--out", "o"], d, ("scen.yaml",))


# --------------------------------------------------------------------------- flows CSV

good_row = st.tuples(
    st.sampled_from(["n0.g0", "n0.g1", "n0.g7"]),
    st.sampled_from(["n0.g2", "n0.g3"]),
    st.sampled_from(["1MB", "64KiB", "1000"]),
    st.sampled_from(["0", "1us", "0.5"]),
)


@FUZZ
@given(
    rows=st.lists(good_row, max_size=3),
    column=st.sampled_from(["src", "dst", "bytes", "start_s"]),
    token=st.one_of(bad_token, st.sampled_from(["n9.g0", "leaf99", "", "n0.g0 > n0.g1"])),
    at=st.integers(0, 3),
)
def test_flows_csv_with_a_bad_cell(rows: list[tuple[str, ...]], column: str, token: str, at: int) -> None:
    if column in ("src", "dst") and token in ("inf", "-inf", "nan", "NaN", "-5", "1e999", "0x1F", "--", "abc"):
        token = "n" + token  # still not a device
    bad = dict(zip(("src", "dst", "bytes", "start_s"), ("n0.g0", "n0.g1", "1MB", "0"), strict=True))
    bad[column] = token
    lines = [",".join(r) for r in rows]
    lines.insert(min(at, len(lines)), ",".join(bad.values()))
    with scratch() as d:
        (d / "flows.csv").write_text("src,dst,bytes,start_s\n" + "\n".join(lines) + "\n")
        assert_rejected(["flows", "flows.csv", "-t", "dgx-h100", "-n", "1", "--out", "o"], d, ("flows.csv",))


# --------------------------------------------------------------------------- nccl-tests logs

_LOG_LINES = NCCL_LOG.splitlines()
_ROWS = [i for i, ln in enumerate(_LOG_LINES) if ln.strip()[:1].isdigit()]
_TRAILER = next(i for i, ln in enumerate(_LOG_LINES) if "Avg bus bandwidth" in ln)


@FUZZ
@given(row=st.sampled_from(_ROWS), column=st.sampled_from([0, 1, 5, 9]), token=bad_token)
def test_nccl_log_with_a_bad_number(row: int, column: int, token: str) -> None:
    if column == 0 and not token[0].isdigit():
        column = 1  # a line that does not start with a digit is not a result row (NCCL INFO noise): skipped
    lines = list(_LOG_LINES)
    toks = lines[row].split()
    toks[column] = token
    lines[row] = "  ".join(toks)
    with scratch() as d:
        (d / "all_reduce_perf.log").write_text("\n".join(lines) + "\n")
        assert_rejected(
            ["calibrate", "nccl", "all_reduce_perf.log", "-t", "dgx-h100", "--out", "cal.yaml"],
            d,
            ("all_reduce_perf.log",),
        )


@FUZZ
@given(keep=st.integers(0, _TRAILER - 1), junk=st.sampled_from(["", "12 34\n", "# nThread 1 nGpus x\n", "\x00\xff\n"]))
def test_nccl_log_truncated(keep: int, junk: str) -> None:
    with scratch() as d:
        (d / "all_reduce_perf.log").write_text("\n".join(_LOG_LINES[:keep]) + "\n" + junk)
        assert_rejected(
            ["calibrate", "nccl", "all_reduce_perf.log", "-t", "dgx-h100", "--out", "cal.yaml"],
            d,
            ("all_reduce_perf.log",),
        )


# --------------------------------------------------------------------------- Kineto JSON

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=6), kids, max_size=4),
    max_leaves=20,
)
BAD_EVENTS = [
    {},
    {"name": "a", "ts": 1, "dur": 2},
    {"ph": 5},
    {"ph": "X", "ts": 1, "dur": 2},
    {"ph": "X", "name": "a", "ts": "soon", "dur": 2},
    {"ph": "X", "name": "a", "ts": 1, "dur": -3},
    {"ph": "X", "name": "a", "ts": 1},
    {"ph": "X", "name": "a", "ts": 1, "dur": [1]},
    [],
    "event",
    7,
]


@FUZZ
@given(
    first=st.sampled_from(BAD_EVENTS), rest=st.lists(json_values, max_size=4), wrap=st.sampled_from(["object", "list"])
)
def test_kineto_trace_with_a_bad_event(first: Any, rest: list[Any], wrap: str) -> None:
    events = [first, *rest]
    doc = {"traceEvents": events, "schemaVersion": 1} if wrap == "object" else events
    with scratch() as d:
        (d / "t.json").write_text(json.dumps(doc))
        assert_rejected(["import", "kineto", "t.json", "--out", "ops.csv"], d, ("t.json",))


@FUZZ
@given(
    doc=st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.text(max_size=10),
        st.just("{"),
        st.just('{"traceEvents": [' * 3),
        st.dictionaries(st.sampled_from(["a", "b"]), json_values),
    )
)
def test_kineto_trace_not_a_trace(doc: Any) -> None:
    with scratch() as d:
        (d / "t.json").write_text(doc if isinstance(doc, str) and doc.startswith("{") else json.dumps(doc))
        assert_rejected(["import", "kineto", "t.json", "--out", "ops.csv"], d, ("t.json",))


# --------------------------------------------------------------------------- Chakra JSON

# (dangling ctrl_deps are valid: real Chakra traces have them, and they are not dependencies)
CHAKRA_BAD = {
    "id": ["x", -1, [1], None, 1.5],
    "type": ["BOGUS_NODE", 99, None, [1]],
    "data_deps": ["x", [999999], [["a"]], 3],
    "ctrl_deps": ["x", [["a"]]],
    "duration_micros": ["x", -1, [1], {"a": 1}],
}


@FUZZ
@given(index=st.integers(0, 11), field=st.sampled_from(sorted(CHAKRA_BAD)), pick=st.integers(0, 4))
def test_chakra_node_with_a_bad_field(index: int, field: str, pick: int) -> None:
    with scratch() as d:
        shutil.copytree(FIX / "traces" / "chakra4", d / "ch")
        doc = json.loads((d / "ch" / "rank0.json").read_text())
        nodes = doc["nodes"]
        node = nodes[index % len(nodes)]
        if field == "duration_micros" and node.get("type") not in ("COMP_NODE", 4):
            node = next(n for n in nodes if n.get("type") in ("COMP_NODE", 4))
        values = CHAKRA_BAD[field]
        node[field] = values[pick % len(values)]
        (d / "ch" / "rank0.json").write_text(json.dumps(doc))
        assert_rejected(["replay-chakra", "ch", "-t", "dgx-h100", "-n", "1", "--out", "o"], d, ("rank0.json", "ch"))


# --------------------------------------------------------------------------- routing traces

_META = {
    "experts": 8,
    "ep": 8,
    "ranks_per_node": 8,
    "hidden": 2048,
    "top_k": 2,
    "router": "switch",
    "tokens_per_rank": 64,
}


def _trace_frame() -> pd.DataFrame:
    rows = [(0, layer, 0, r, e, 8, 0) for layer in range(4) for r in range(8) for e in range(8)]
    return pd.DataFrame(rows, columns=["step", "layer", "microbatch", "src_rank", "expert", "tokens", "dropped"])


TRACE_FAULTS = [
    "negative tokens",
    "src_rank beyond ep",
    "expert beyond experts",
    "missing column",
    "fractional",
    "duplicate",
    "no metadata",
    "metadata not json",
    "metadata ep",
    "too many tokens",
    "not parquet",
]


@FUZZ
@given(fault=st.sampled_from(TRACE_FAULTS), row=st.integers(0, 255))
def test_routing_trace_with_a_fault(fault: str, row: int) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from netsim.moe.trace import METADATA_KEY

    df, meta = _trace_frame(), dict(_META)
    md: bytes | None = json.dumps(meta).encode()
    if fault == "negative tokens":
        df.loc[row, "tokens"] = -1
    elif fault == "src_rank beyond ep":
        df.loc[row, "src_rank"] = 8
    elif fault == "expert beyond experts":
        df.loc[row, "expert"] = 99
    elif fault == "missing column":
        df = df.drop(columns=[["step", "layer", "src_rank", "expert", "tokens", "dropped"][row % 6]])
    elif fault == "fractional":
        df["tokens"] = df["tokens"].astype(float)
        df.loc[row, "tokens"] = 1.5
    elif fault == "duplicate":
        df = pd.concat([df, df.iloc[[row]]], ignore_index=True)
    elif fault == "no metadata":
        md = None
    elif fault == "metadata not json":
        md = b"{experts: 8"
    elif fault == "metadata ep":
        md = json.dumps({**meta, "ep": -3}).encode()
    elif fault == "too many tokens":
        df.loc[row, "tokens"] = 10_000
    with scratch() as d:
        path = d / "r.parquet"
        if fault == "not parquet":
            path.write_bytes(np.arange(row + 1, dtype=np.int64).tobytes())
        else:
            table = pa.Table.from_pandas(df, preserve_index=False)
            if md is not None:
                table = table.replace_schema_metadata({**(table.schema.metadata or {}), METADATA_KEY: md})
            pq.write_table(table, path)
        assert_rejected(
            ["run", "-q", "--no-report", "--routing-trace", "r.parquet", "--out", "o"],
            d,
            ("r.parquet", "--routing-trace"),
        )


# --------------------------------------------------------------------------- calibration YAML and kernel tables

CALIBRATION = {
    "format": 1,
    "topology": "dgx-h100",
    "nodes": 1,
    "routing": "ecmp",
    "link_efficiency": {"nvlink": 0.9, "ib": 0.85},
    "step_latency_s": 4e-6,
}


@FUZZ
@given(
    field=st.sampled_from(["link_efficiency.nvlink", "link_efficiency.ib", "step_latency_s", "link_efficiency"]),
    value=st.sampled_from([v for v in BAD_NUMBERS if v not in (10**30, -(10**30), 2**64)] + [{"warp": 1.0}]),
)
def test_calibration_field_with_a_bad_value(field: str, value: Any) -> None:
    with scratch() as d:
        (d / "cal.yaml").write_text(_yaml(_set(CALIBRATION, field, value)))
        assert_rejected(
            ["collective", "all_reduce", "-t", "dgx-h100", "-n", "1", "-e", "1MiB", "--calibration", "cal.yaml"],
            d,
            ("cal.yaml",),
        )


_KERNELS = (ROOT / "netsim" / "data" / "kernels" / "cpu-amd-epyc-1thread.csv").read_text().splitlines()
_KHEAD = next(i for i, ln in enumerate(_KERNELS) if not ln.startswith("#"))
_KCOLS = _KERNELS[_KHEAD].split(",")


@FUZZ
@given(
    row=st.integers(1, 20),
    column=st.sampled_from(["m", "n", "k", "time_s", "repeats", "inner", "kernel", "pass"]),
    token=bad_token,
)
def test_kernel_table_with_a_bad_cell(row: int, column: str, token: str) -> None:
    lines = list(_KERNELS)
    cells = lines[_KHEAD + row].split(",")
    cells[_KCOLS.index(column)] = token
    lines[_KHEAD + row] = ",".join(cells)
    with scratch() as d:
        (d / "k.csv").write_text("\n".join(lines) + "\n")
        assert_rejected(["run", "-q", "--no-report", "--kernels", "k.csv", "--out", "o"], d, ("k.csv",))


# --------------------------------------------------------------------------- Liger-Kernel benchmarks

_LIGER = pd.read_csv(FIX / "liger" / "all_benchmark_data.csv", dtype=str, keep_default_na=False)
#: the rows `netsim import liger` reads (the H100 speed rows of the benchmarks it maps)
_LIGER_ROWS = [
    i
    for i, r in _LIGER.iterrows()
    if r.gpu_name == "NVIDIA H100 80GB HBM3"
    and r.metric_name == "speed"
    and (r.kernel_name, r.kernel_provider) in LIGER_BENCHMARKS
]


@FUZZ
@given(
    row=st.sampled_from(_LIGER_ROWS),
    column=st.sampled_from(["x_value", "y_value_50", "y_value_20", "y_value_80", "extra_benchmark_config_str"]),
    token=bad_token,
)
def test_liger_benchmarks_with_a_bad_cell(row: int, column: str, token: str) -> None:
    df = _LIGER.copy()
    df.loc[row, column] = token
    with scratch() as d:
        df.to_csv(d / "bench.csv", index=False)
        assert_rejected(["import", "liger", "bench.csv", "--out", "t.csv"], d, ("bench.csv",))
