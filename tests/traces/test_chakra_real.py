"""Real Chakra traces: the public test data of mlcommons/chakra, vendored in tests/data/chakra/.

The three archives of ``tests/data/`` in github.com/mlcommons/chakra (Apache-2.0; see
``tests/data/chakra/README.md`` for source paths, commits and checksums) are committed,
unchanged, in ``tests/data/chakra/``.  A copy in ``$NETSIM_SHARED_DATA/chakra-traces/`` or
``<repo>/../shared/data/chakra-traces/`` is used instead when one holds all three:

* ``feeder_tests_trace.tar.gz``: ``tests/data/chakra.0.et``, a binary trace of one rank
  (schema 1.0.1, Dec 2023: 3664 nodes, CPU and GPU ops, 7 NCCL collectives);
* ``json_trace.tar.gz``: ``jsonData/chakra.0.json``, the same trace in the feeder's JSON form
  (no comm_type / comm_size on the NCCL kernels), and ``small_chakra.0.json``;
* ``1.0.2-chakra.0.0.4.tgz``: a PyTorch execution trace, the input of Chakra's converter.

The numbers below were read off the files with independent scripts (protobuf's runtime and
json) when this test was written.
"""

from __future__ import annotations

import hashlib
import os
import re
import tarfile
from pathlib import Path

import pytest

from netsim.errors import TraceError
from netsim.traces.chakra import load_chakra

REPO = Path(__file__).resolve().parents[2]
ARCHIVES = ("feeder_tests_trace.tar.gz", "json_trace.tar.gz", "1.0.2-chakra.0.0.4.tgz")
VENDORED = REPO / "tests" / "data" / "chakra"


def data_dir() -> Path:
    """The shared-data copy of the archives when one holds all three, else the vendored one."""
    shared = Path(os.environ.get("NETSIM_SHARED_DATA", REPO.parent / "shared" / "data")) / "chakra-traces"
    return shared if all((shared / a).is_file() for a in ARCHIVES) else VENDORED


DATA = data_dir()


def test_vendored_archives_are_the_upstream_files() -> None:
    # the README's table (source path, bytes, sha256) is the record of what was copied
    rows = re.findall(
        r"^\| `([^`]+)` \| `tests/data/\1` \| \w+ \(\S+\) \| (\d+) \| ([0-9a-f]{64}) \|$",
        (VENDORED / "README.md").read_text(),
        flags=re.M,
    )
    assert sorted(r[0] for r in rows) == sorted(ARCHIVES)
    for name, size, sha in rows:
        data = (VENDORED / name).read_bytes()
        assert (len(data), hashlib.sha256(data).hexdigest()) == (int(size), sha), name
    assert "Apache License" in (VENDORED / "LICENSE.md").read_text()


def unpack(name: str, dest: Path) -> Path:
    with tarfile.open(DATA / name) as tf:
        tf.extractall(dest, filter="data")
    return dest


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("chakra-real")
    for name in ARCHIVES:
        unpack(name, d)
    return d


def test_binary_et(real: Path) -> None:
    tr = load_chakra(real / "tests" / "data" / "chakra.0.et")
    rt = tr.ranks[0]
    assert tr.forms == ["et"] and len(rt.nodes) == 3664
    nodes = list(rt.nodes.values())
    gpu_colls = [n for n in nodes if n.communicates]
    assert sum(n.on_cpu for n in nodes) == 2448 and len(gpu_colls) == 7
    assert [n.comm_type for n in gpu_colls].count("ALL_REDUCE") == 5
    assert sorted(int(n.comm_size or 0) for n in gpu_colls) == [
        424,
        212480,
        8196000,
        9724160,
        26255360,
        26550272,
        31502336,
    ]
    gpu_compute_s = sum(n.duration_s for n in nodes if not n.on_cpu and n.type == "COMP_NODE")
    assert gpu_compute_s == pytest.approx(292.828e-3)


def test_feeder_json_is_the_same_trace(real: Path) -> None:
    et = load_chakra(real / "tests" / "data" / "chakra.0.et").ranks[0]
    js = load_chakra(real / "jsonData" / "chakra.0.json").ranks[0]
    assert js.form == "feeder-json" and et.nodes.keys() == js.nodes.keys()
    assert all(
        et.nodes[i].deps == js.nodes[i].deps and et.nodes[i].duration_s == js.nodes[i].duration_s for i in et.nodes
    )
    assert {n.comm_size for n in js.nodes.values() if n.communicates} == {None}  # not in this form
    small = load_chakra(real / "jsonData" / "small_chakra.0.json", ranks=2)
    assert small.num_ranks == 2 and len(small.ranks[1].nodes) == 7


def test_pytorch_execution_trace_is_refused(real: Path) -> None:
    with pytest.raises(TraceError, match="PyTorch execution trace"):
        load_chakra(real / "1.0.2-chakra.0.0.4.json")


def test_real_trace_replays_on_eight_gpus(real: Path, tmp_path: Path) -> None:
    from netsim.topology import load_topology
    from netsim.traces.chakra_plan import replay_chakra

    g = load_topology("dgx-h100", nodes=1)
    tr = load_chakra(real / "tests" / "data" / "chakra.0.et", ranks=8)
    o = replay_chakra(tr, g, tmp_path / "run", report=None)
    t = o.summary["trace"]
    assert (t["simulated_collectives"], t["host_ops"], t["compute_ops"]) == (7, 8 * 2448, 8 * 1209)
    # the critical path is the GPU stream plus the CPU ops that gate it: at least the GPU compute
    assert o.summary["step_time_s"] >= 292.828e-3
    assert o.summary["bytes_by_class"]["other"] > 0
