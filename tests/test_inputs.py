"""Hostile and absurd inputs: each is one line on stderr naming the flag, file or field, exit 2,
before any work (issue 19's tracebacks, killed runs and silently accepted inputs)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

import netsim.limits
from netsim.cli import main

ROOT = Path(__file__).resolve().parent.parent
FIX = ROOT / "tests" / "fixtures"
LOG = (FIX / "nccl" / "all_reduce_perf_1n.log").read_text()


def _cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    cap = capsys.readouterr()
    return int(exc.value.code or 0), cap.out, cap.err


def _one_error(argv: list[str], capsys: pytest.CaptureFixture[str], *words: str) -> str:
    code, _, err = _cli(argv, capsys)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    for w in words:
        assert w in lines[0], lines[0]
    return lines[0]


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(netsim.limits.NO_SIZE_CHECK_ENV, raising=False)


@pytest.fixture
def small_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    """A machine with 8 GiB available, whatever this one has (the estimates are machine-independent)."""
    monkeypatch.setattr(netsim.limits, "available_memory_bytes", lambda: 8 * 2**30)


# --------------------------------------------------------------------------- structure and numbers


def test_deeply_nested_yaml_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "deep.yaml").write_text("a: " + "[" * 5000 + "]" * 5000 + "\n")
    (tmp_path / "deep70.yaml").write_text("a: " + "[" * 70 + "]" * 70 + "\n")
    for f in ("deep.yaml", "deep70.yaml"):
        _one_error(["run", f, "-q"], capsys, f, "nested deeper than 64 levels")
        _one_error(["topology", "show", f], capsys, f, "nested deeper than 64 levels")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["deep.yaml", "deep70.yaml"]


def test_yaml_aliases_that_expand_to_billions_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [
        f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, "
        f"*a{i - 1}, *a{i - 1}]"
        for i in range(1, 9)
    ]
    (tmp_path / "laughs.yaml").write_text("\n".join(lines) + "\n")
    _one_error(["topology", "show", "laughs.yaml"], capsys, "more than 1,000,000 values")


def test_oversized_spec_file_is_refused_before_reading(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("netsim.config.common.MAX_SPEC_BYTES", 100)
    (tmp_path / "big.yaml").write_text("name: x\n" + "# padding\n" * 20)
    _one_error(["topology", "show", "big.yaml"], capsys, "big.yaml", "netsim reads at most 100 B")


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["run", "-q", "--set", "workload.model.moe.top_k=&a 1"], ["--set workload.model.moe.top_k", "YAML anchor"]),
        (["run", "-q", "--set", "topology.num_nodes=4"], ["--set topology.num_nodes", "also given as 2", "give one"]),
        (["topology", "show", "dgx-h100", "--set", "num_nodes=true"], ["--set num_nodes=true", "(got 'true')"]),
        (["run", "-q", "--set", "workload.model.moe.top_k=!!int 1"], ["YAML anchor, alias or tag"]),
        (["topology", "show", "dgx-h100", "--set", "node.nvlink_bandwidth=1e300GB/s"], ["node.nvlink_bandwidth"]),
        (["topology", "show", "dgx-h100", "--set", "backend.oversubscription=1e300"], ["at most 1e6"]),
        (["topology", "show", "dgx-h100", "--set", "node.accelerators=100000000"], ["node.accelerators", "<= 1024"]),
        (["topology", "show", "dgx-h100", "--nodes", "1000000000"], ["--nodes", "131,072"]),
        (["topology", "show", "dgx-h100", "--set", "num_nodes=1000000000"], ["num_nodes", "<= 131072"]),
        (["run", "-q", "--set", "workload.model.layers=100000"], ["--set workload.model.layers", "<= 4096"]),
        (["run", "-q", "--set", "workload.steps=1000000000"], ["--set workload.steps", "<= 100000"]),
        (["run", "-q", "--set", "workload.model.hidden=99999999999999999999999"], ["model.hidden"]),
    ],
)
def test_absurd_values_are_one_line(argv: list[str], words: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    _one_error(argv, capsys, *words)


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (  # an efficiency so low that a step outlasts the float clock's microsecond resolution
            ["run", "-q", "--set", "options.flops_efficiency=1e-300"],
            ["would take", "more than a day", "options.flops_efficiency"],
        ),
        (["run", "-q", "--set", "options.algorithms.all_to_all=bogus"], ["--set options.algorithms.all_to_all: "]),
        (["run", "-q", "--set", "options.algorithms.nonsense=ring"], ["--set options.algorithms.nonsense: unknown"]),
        (["run", "-q", "--set", "name=../../escape"], ["--set name: must be one folder name"]),
        (
            ["run", "-q", "--set", "options.path_policy=foo"],
            ["--set options.path_policy: unknown routing policy 'foo'"],
        ),
        (["validate", "--collective-cost", "bogus", "--out", "v"], ["--collective-cost: unknown collective cost"]),
        (["run", "-q", "--set", "name=/tmp/abs"], ["--set name: must be one folder name"]),
    ],
)
def test_out_of_range_runs_are_one_line_and_write_nothing(
    argv: list[str], words: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _one_error(argv, capsys, *words)
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    ("line", "words"),
    [
        ('topology_overrides: ["backend.oversubscription=-3"]', ["topology_overrides 'backend.oversubscription=-3'"]),
        ('workload_overrides: ["model.layers=-2"]', ["workload_overrides 'model.layers=-2': must be >= 1"]),
    ],
)
def test_a_scenario_files_own_override_names_the_file(
    line: str, words: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "s.yaml").write_text(f"name: s\ntopology: dgx-h100\nnodes: 1\nworkload: gpt-dense\n{line}\n")
    _one_error(["run", "s.yaml", "-q"], capsys, "error: s.yaml: ", *words)


def test_a_sweep_name_is_one_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "s.yaml").write_text("name: ../../escape\ngrid: {seed: [0, 1]}\n")
    _one_error(["sweep", "s.yaml", "--dry-run"], capsys, "s.yaml", "name", "must be one folder name")


# --------------------------------------------------------------------------- errors blame the user's input


@pytest.mark.parametrize(
    ("argv", "blamed"),
    [
        (["run", "-q", "--set", "workload.parallelism.ep=5"], "error: --set workload.parallelism.ep: "),
        (["run", "-q", "--set", "workload.parallelism.cp=3"], "error: --set workload.parallelism.cp: "),
        (["run", "-q", "--router", "psychic"], "error: --router: unknown routing 'psychic'"),
        (["run", "-q", "--set", "options.router=psychic"], "error: --set options.router: "),
    ],
)
def test_errors_blame_the_users_flag_not_a_builtin_file(
    argv: list[str], blamed: str, capsys: pytest.CaptureFixture[str]
) -> None:
    line = _one_error(argv, capsys)
    assert line.startswith(blamed) and "default.yaml" not in line


# --------------------------------------------------------------------------- size guard


@pytest.mark.usefixtures("small_machine")
def test_a_request_larger_than_memory_is_refused_at_once(capsys: pytest.CaptureFixture[str]) -> None:
    line = _one_error(
        ["collective", "all_to_all", "-t", "dgx-h100", "-n", "1000", "-e", "1MiB"],
        capsys,
        "all_to_all over 8,000 ranks needs about",
        "63,992,000 flows",
        "8 GiB available",
        "--no-size-check",
    )
    assert re.search(r"needs about [\d.]+ GiB of memory", line)
    _one_error(["run", "-q", "--set", "workload.num_microbatches=100000"], capsys, "this run needs about")
    _one_error(
        ["topology", "show", "dgx-h100", "--nodes", "100000"],
        capsys,
        "topologies/dgx-h100.yaml",
        "(100,000 nodes) needs about",
        "3,081,251 devices",
    )


@pytest.mark.usefixtures("small_machine")
def test_no_size_check_lets_a_request_through(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(netsim.limits, "available_memory_bytes", lambda: 2**10)
    _one_error(["topology", "show", "dgx-h100", "--nodes", "2"], capsys, "needs about")
    code, out, err = _cli(["topology", "show", "dgx-h100", "--nodes", "2", "--json", "--no-size-check"], capsys)
    assert code == 0 and json.loads(out)["num_nodes"] == 2, err


def test_estimates_grow_as_their_formulas_say() -> None:
    topo = netsim.limits.estimate_topology(4, 27)
    assert topo.devices == 4 * 27 + (4 * 27) // 16 + 1
    a2a = netsim.limits.estimate_collective(topo, "all_to_all", 64)
    ring = netsim.limits.estimate_collective(topo, "all_reduce", 64, channels=2)
    assert a2a.flows == 64 * 63 and ring.flows == 2 * 63 * 64 * 2
    lim = netsim.limits
    assert a2a.memory_bytes == (
        topo.devices * lim.BYTES_PER_DEVICE + topo.links * lim.BYTES_PER_LINK + 64 * 63 * lim.BYTES_PER_FLOW
    )


@pytest.mark.parametrize(("lockstep", "ops"), [(False, 512 * 24 * 12 * 6), (True, 2 * 24 * 12 * 6)])
def test_run_estimate_counts_a_replicas_micro_batches_a_stages_layers_and_built_ranks(lockstep: bool, ops: int) -> None:
    # Narayanan et al. 2021's 39B: 512 GPUs as TP 8 x PP 2 x DP 32, batch 1536 of micro-batch 4:
    # 12 micro-batches per replica, 24 layers per stage; lockstep builds one rank per stage
    from netsim.config.scenario import load_scenario
    from netsim.run import load_scenario_workload, run_estimate
    from netsim.topology import load_topology

    sc = load_scenario(
        {
            "topology": "dgx-a100",
            "nodes": 64,
            "workload": "gpt-dense",
            "options": {"lockstep": lockstep},
            "workload_overrides": [
                "model.layers=48",
                "parallelism.tp=8",
                "parallelism.pp=2",
                "micro_batch_size=4",
                "global_batch_size=1536",
            ],
        }
    )
    graph = load_topology(sc.resolve_path(sc.topology), nodes=64)
    est = run_estimate(graph, load_scenario_workload(sc), sc)
    assert est.ops == ops


# --------------------------------------------------------------------------- collective options


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["-g", "9"], ["--gpus-per-node", "have 8 accelerators; cannot use 9"]),
        (["-b", "1", "-e", "8GiB", "-f", "1.0001"], ["--step-factor", "at most 256"]),
        (["-f", "inf"], ["--step-factor"]),
        (["-e", "1e30B"], ["--max-bytes", "beyond any real bytes"]),
        (["--chunk-bytes", "1e30B"], ["--chunk-bytes"]),
        (["--step-latency", "1e20s"], ["--step-latency"]),
    ],
)
def test_collective_options_are_checked_first(
    argv: list[str], words: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    _one_error(["collective", "all_reduce", "-t", "dgx-h100", "-n", "1", *argv], capsys, *words)


def test_version_takes_no_arguments_and_bare_netsim_prints_no_empty_error(capsys: pytest.CaptureFixture[str]) -> None:
    _one_error(["--version", "x"], capsys, "--version takes no other arguments")
    code, out, err = _cli([], capsys)
    assert code == 0 and "Usage" in out + err and "error:" not in err  # bare netsim prints its help


# --------------------------------------------------------------------------- readers


def test_flows_file_limits(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "ov.csv").write_text("src,dst,bytes,start_s\nn0.g0,n0.g1,99999999999999999999999999,0\n")
    _one_error(["flows", "ov.csv", "-t", "dgx-h100", "-n", "1", "--out", "o"], capsys, "ov.csv: row 2.bytes")
    (tmp_path / "late.csv").write_text("src,dst,bytes,start_s\nn0.g0,n0.g1,1MB,1e300\n")
    _one_error(["flows", "late.csv", "-t", "dgx-h100", "-n", "1", "--out", "o"], capsys, "row 2.start_s")
    monkeypatch.setattr("netsim.network.flowfile.MAX_FLOW_ROWS", 3)
    (tmp_path / "many.csv").write_text("src,dst,bytes,start_s\n" + "n0.g0,n0.g1,1MB,0\n" * 4)
    _one_error(["flows", "many.csv", "-t", "dgx-h100", "-n", "1", "--out", "o"], capsys, "4 flows", "--no-size-check")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("src,dst,bytes,start_s\nn0.g0,n0.g1,4MB,0,extra\n", ["row 2: more fields than the header"]),
        ("src,dst,bytes,start_s,bogus\nn0.g0,n0.g1,4MB,0,1\n", ["unknown column 'bogus'; allowed: src, dst"]),
        ("src,dst,bytes,start_s\nn0.g0,n0.g0,4MB,0\n", ["row 2.dst: a flow from 'n0.g0' to itself"]),
        ("src,dst,bytes,start_s\nn0.g0,n0.g1,2.5,0\n", ["row 2.bytes: bytes must be a whole number"]),
        ("src,dst,bytes,start_s\nn0.g0,n9.g1,1MB,0\n", ["row 2.dst: unknown device 'n9.g1'", "include "]),
    ],
)
def test_flows_rows_and_columns_are_checked(
    text: str, words: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "f.csv").write_text(text)
    _one_error(["flows", "f.csv", "-t", "dgx-h100", "-n", "1", "--out", "o"], capsys, "f.csv", *words)
    assert not (tmp_path / "o").exists()


def test_flows_plain_number_is_bytes(tmp_path: Path) -> None:
    from netsim.network.flowfile import read_flows

    (tmp_path / "f.csv").write_text("src,dst,bytes,start_s\nn0.g0,n0.g1,1000,0\nn0.g0,n0.g1,1kB,0\n")
    assert list(read_flows(tmp_path / "f.csv")["bytes"]) == [1000.0, 1000.0]


@pytest.mark.parametrize(
    ("edit", "words"),
    [
        (
            lambda t: t.replace(
                "    30.00    0.00    0.00      0    30.00", "      inf    0.00    0.00      0    30.00", 1
            ),
            ["line 14: time 'inf' is not a finite number"],
        ),
        (
            lambda t: t.replace("           8             2 ", " 99999999999999999999999             2 ", 1),
            ["line 14: size '99999999999999999999999' is beyond int64"],
        ),
        (
            lambda t: t.replace("           8             2 ", "  9999999999999999999             2 ", 1),
            ["line 14: size '9999999999999999999' is beyond int64"],
        ),
        (
            lambda t: "\n".join(ln for ln in t.splitlines() if "Rank" not in ln) + "\n",
            ["no '# Rank' lines", "pass --nodes"],
        ),
    ],
)
def test_nccl_log_problems_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], edit, words) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "all_reduce_perf.log").write_text(edit(LOG))
    _one_error(["calibrate", "nccl", "all_reduce_perf.log", "-t", "dgx-h100", "--out", "cal.yaml"], capsys, *words)
    assert not (tmp_path / "cal.yaml").exists()


@pytest.mark.usefixtures("small_machine")
def test_a_thousand_host_nccl_log_is_refused_by_its_size(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ranks = "".join(
        f"#  Rank {r:5d} Group  0 Pid {r} on host{r // 8:04d} device {r % 8} [0x18] NVIDIA H100\n" for r in range(8000)
    )
    text = LOG.replace("# Using devices\n", "# Using devices\n" + ranks)
    text = "\n".join(ln for ln in text.splitlines() if not re.match(r"#  Rank +[0-3] Group  0 Pid 10000", ln))
    (tmp_path / "all_reduce_perf.log").write_text(text + "\n")
    _one_error(
        ["calibrate", "nccl", "all_reduce_perf.log", "-t", "dgx-h100", "--out", "cal.yaml"],
        capsys,
        "all_reduce over 8,000 ranks needs about",
    )


def test_nccl_size_zero_rows_are_ignored_with_a_note(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from netsim.calibration.nccl import parse_nccl_log

    text = LOG.replace("           8             2 ", "           0             0 ", 1)
    (tmp_path / "all_reduce_perf.log").write_text(text)
    assert parse_nccl_log(tmp_path / "all_reduce_perf.log")["size_bytes"].iloc[0] == 0  # read as written
    code, out, err = _cli(
        ["calibrate", "nccl", "all_reduce_perf.log", "-t", "dgx-h100", "--out", "cal.yaml", "--max-sizes", "2"], capsys
    )
    assert code == 0, err
    assert "1 row(s) of size 0 ignored" in out


@pytest.mark.parametrize(
    ("doc", "words"),
    [
        ('{"traceEvents": [{"name": "a", "ts": 1, "dur": 2}]}', ["traceEvents[0].ph", "needs a phase"]),
        ('{"traceEvents": [{"ph": "X", "name": "a", "ts": 1, "dur": NaN}]}', ["not valid JSON", "NaN"]),
        ('{"traceEvents": [{"ph": "X", "name": "a", "ts": 1' + "0" * 400 + ', "dur": 1}]}', ["ts", "finite"]),
        ('{"traceEvents": ' + "[" * 100000 + "]" * 100000 + "}", ["nested too deeply"]),
    ],
)
def test_kineto_problems_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], doc: str, words: list[str]
) -> None:
    (tmp_path / "t.json").write_text(doc)
    _one_error(["import", "kineto", "t.json", "--out", "ops.csv"], capsys, "t.json", *words)
    assert not (tmp_path / "ops.csv").exists()


@pytest.mark.parametrize(
    ("options", "words"),
    [
        (["--out", "ops.txt"], ["--out: write a .csv or .parquet file"]),
        (["--out", "ops.csv", "--start-us", "nan"], ["--start-us: must be a finite number"]),
        (["--out", "ops.csv", "--start-us", "100", "--end-us", "5"], ["--end-us: must be after --start-us 100"]),
        (["--out", "ops.csv", "--step-range", "Step#*"], ["--step-range: ", "give --kernel-table"]),
    ],
)
def test_kineto_options_are_checked_before_the_trace(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], options: list[str], words: list[str]
) -> None:
    (tmp_path / "t.json").write_text('[{"ph": "X", "name": "a", "ts": 1, "dur": 2, "cat": "cpu_op"}]')
    _one_error(["import", "kineto", "t.json", *options], capsys, *words)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.json"]


def test_validate_names_an_empty_only_and_a_bad_what_if_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    _one_error(["validate", "--only", "", "--out", "v"], capsys, "--only: no validation case matches --only ''")
    argv = ["validate", "--only", "nccl-tests-issue-212/*", "--set", "topology.node.nvlink_bandwidth=-1", "--out", "v"]
    _one_error(argv, capsys, "nvlink_bandwidth")


def test_kineto_json_array_format_is_a_trace(tmp_path: Path) -> None:
    """The Chrome trace format allows a bare list of events (its "JSON Array Format")."""
    from netsim.traces.kineto import load_kineto

    (tmp_path / "t.json").write_text('[{"ph": "X", "name": "a", "ts": 1, "dur": 2, "cat": "cpu_op"}]')
    assert list(load_kineto(tmp_path / "t.json").events["name"]) == ["a"]


def test_chakra_send_without_its_receive(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import shutil

    shutil.copytree(FIX / "traces" / "chakra4", tmp_path / "ch")
    doc = json.loads((tmp_path / "ch" / "rank2.json").read_text())
    doc["nodes"] = [n for n in doc["nodes"] if n["type"] not in ("COMM_RECV_NODE", 6)]  # its receive from rank 0
    for n in doc["nodes"]:
        n["data_deps"] = [d for d in n["data_deps"] if any(m["id"] == d for m in doc["nodes"])]
        n["ctrl_deps"] = [d for d in n["ctrl_deps"] if any(m["id"] == d for m in doc["nodes"])]
    (tmp_path / "ch" / "rank2.json").write_text(json.dumps(doc))
    _one_error(
        ["replay-chakra", "ch", "-t", "dgx-h100", "-n", "1", "--out", "o"],
        capsys,
        "rank 0 sends 1 message(s) to rank 2",
        "rank 2 receives 0",
    )
    assert not (tmp_path / "o").exists()


def test_routing_trace_with_more_tokens_than_its_ranks_have(tmp_path: Path) -> None:
    from netsim.errors import TraceError
    from netsim.moe.trace import RoutingTrace, TraceMeta, read_routing_trace, write_routing_trace

    meta = TraceMeta(experts=4, ep=2, ranks_per_node=2, hidden=8, top_k=1, router="switch", tokens_per_rank=10)
    ok = np.array([[3, 3, 2, 2], [5, 5, 0, 0]])
    write_routing_trace(RoutingTrace.from_counts([(0, 0, 0, ok, None)], meta), tmp_path / "ok.parquet")
    assert int(read_routing_trace(tmp_path / "ok.parquet").table["tokens"].sum()) == 20
    bad = np.array([[3, 3, 2, 2], [5, 5, 5, 0]])
    write_routing_trace(RoutingTrace.from_counts([(0, 0, 0, bad, None)], meta), tmp_path / "bad.parquet")
    with pytest.raises(TraceError, match=r"src_rank 1 routes 15 .* tokens_per_rank \* top_k = 10 \* 1 = 10") as exc:
        read_routing_trace(tmp_path / "bad.parquet")
    assert "bad.parquet" in str(exc.value) and "\n" not in str(exc.value)


def test_huge_sweep_grid_is_refused_before_expanding(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    grid = {"seed": list(range(100)), "steps": list(range(1, 101)), "nodes": list(range(1, 11))}
    (tmp_path / "big.yaml").write_text(
        json.dumps({"name": "big", "topology": "dgx-h100", "workload": "moe-ep16-4node", "grid": grid})
    )
    _one_error(["sweep", "big.yaml", "--dry-run"], capsys, "big.yaml: grid: 100,000 points", "at most 10,000")


def test_unknown_study_topology_fails_at_once(capsys: pytest.CaptureFixture[str]) -> None:
    _one_error(
        ["study", "locmoe", "--topologies", "tpu-v9"], capsys, "--topologies", "unknown topology preset 'tpu-v9'"
    )


def test_structure_check_limits() -> None:
    from netsim.errors import LimitError

    netsim.limits.check_structure({"a": [1, 2.5, "x"]}, "s")
    with pytest.raises(LimitError, match="outside int64"):
        netsim.limits.check_structure({"a": 2**64}, "s")
    with pytest.raises(LimitError, match="not a finite number"):
        netsim.limits.check_structure({"a": [float("nan")]}, "s")


def test_running_out_of_memory_is_one_line(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """The backstop for what the estimate misses: numpy's ArrayMemoryError is a MemoryError."""
    import netsim.cli

    def boom(*_a: object, **_k: object) -> None:
        raise MemoryError("Unable to allocate 89.5 GiB for an array")

    monkeypatch.setattr(netsim.cli, "app", boom)
    _one_error(["presets"], capsys, "out of memory", "needs more memory than this machine has")


@pytest.mark.parametrize(
    ("argv", "start"),
    [
        (["run", "-q", "--seed", "99999999999999999999999"], "error: --seed: integer"),
        (["run", "-q", "--routing-samples", "99999999999999999999999"], "error: --routing-samples: integer"),
        (
            ["collective", "all_reduce", "-t", "dgx-h100", "-n", "1", "--seed", "99999999999999999999999"],
            "error: --seed: must be in 0..2**63-1",
        ),
        (
            [
                "replay-chakra",
                str(FIX / "traces" / "chakra4"),
                "-t",
                "dgx-h100",
                "-n",
                "1",
                "--compute-scale",
                "inf",
                "--out",
                "o",
            ],
            "error: --compute-scale: must be a finite number",
        ),
    ],
)
def test_numeric_options_are_checked_and_named(argv: list[str], start: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert _one_error(argv, capsys).startswith(start)


def test_the_size_estimate_prices_compact_transfers_below_engine_flows() -> None:
    # the 256-server DeepSeek-V3 benchmark simulated every rank in 3.99 GiB (coflow collectives);
    # priced as engine flows it was refused at ~96 GiB on a 22 GiB machine
    from netsim.config.scenario import load_scenario
    from netsim.run import load_scenario_workload, run_estimate
    from netsim.topology import load_topology

    lim = netsim.limits
    ests = {}
    for model in ("exact", "coflow", "auto"):
        sc = load_scenario(None, ["topology=dgx-h100", "nodes=4", f"options.collective_model={model}"])
        graph = load_topology(sc.resolve_path(sc.topology), nodes=4)
        ests[model] = run_estimate(graph, load_scenario_workload(sc), sc)
    assert ests["exact"].flows == ests["coflow"].flows == ests["auto"].flows > 0
    assert ests["exact"].bytes_per_flow == lim.BYTES_PER_FLOW
    assert ests["coflow"].bytes_per_flow == ests["auto"].bytes_per_flow == lim.BYTES_PER_COMPACT_TRANSFER
    assert ests["coflow"].memory_bytes < ests["exact"].memory_bytes
