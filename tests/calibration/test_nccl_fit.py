"""Calibration: recover known link efficiencies and step latency from logs the simulator wrote
(tests/fixtures/nccl, see generate.py there), and the calibration file format."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from netsim.calibration.fit import CALIBRATION_FORMAT, Calibration, FitCase, fit_calibration, load_calibration
from netsim.calibration.nccl import read_nccl_runs
from netsim.collectives import accelerators, simulate_collective
from netsim.errors import NetsimError, SpecError

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "nccl"


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("nccl_fixture_generator", FIX / "generate.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


GEN = _generator()
TRUE_EFF = GEN.PARAMS["link_efficiency"]
TRUE_LAT = GEN.PARAMS["step_latency_s"]


def cases(*names: str) -> list[FitCase]:
    out = []
    for run in read_nccl_runs([FIX / n for n in names]):
        g = GEN.topology(run.nnodes)
        devs = accelerators(g, per_node=run.nranks // run.nnodes)
        out.append(
            FitCase(
                g,
                run.op,
                devs,
                run.rows["size_bytes"].to_numpy(),
                run.rows["oop_time_us"].to_numpy() * 1e-6,
                source=run.source,
                nnodes=run.nnodes,
            )
        )
    return out


def test_round_trip_single_node_log() -> None:
    cal = fit_calibration(cases("all_reduce_perf_1n.log"), max_sizes=8, cost_model="ideal")
    assert cal.cost_model == "ideal"
    assert set(cal.link_efficiency) == {"nvlink"}
    assert cal.link_efficiency["nvlink"] == pytest.approx(TRUE_EFF["nvlink"], rel=0.01)
    assert cal.step_latency_s == pytest.approx(TRUE_LAT, rel=0.02)
    # the log prints times with 2-4 significant digits: the fit is as good as the rounding
    assert cal.rms_log_error is not None and cal.rms_log_error < 0.005
    assert len(cal.points) == 13
    assert max(abs(p.rel_error) for p in cal.points) < 0.01


def test_round_trip_two_logs_two_link_classes() -> None:
    cal = fit_calibration(cases("all_reduce_perf_1n.log", "all_reduce_perf_2n.log"), max_sizes=4, cost_model="ideal")
    assert cal.link_efficiency["nvlink"] == pytest.approx(TRUE_EFF["nvlink"], rel=0.02)
    assert cal.link_efficiency["ib"] == pytest.approx(TRUE_EFF["ib"], rel=0.02)
    assert cal.step_latency_s == pytest.approx(TRUE_LAT, rel=0.05)
    # the GPU-NIC PCIe links carry bytes but are never the bottleneck
    assert cal.unconstrained_classes == ["pcie"]
    assert {p.nnodes for p in cal.points} == {1, 2}


def test_round_trip_nccl_model_recovers_efficiency_and_latency_scale() -> None:
    """Under the nccl cost model the fit recovers the link efficiency and NCCL latency scale
    that made the measurements (simulated at other values than the preset's)."""
    from netsim.collectives.setup import collective_setup
    from netsim.network.engine import Network
    from netsim.topology import load_topology

    g = load_topology("dgx-h100", nodes=1)
    devs = accelerators(g)
    sizes = np.array([2**k for k in range(10, 31, 2)])
    true = collective_setup(g, efficiency={"nvlink": 0.75}, latency_scale=1.4)
    meas = np.array(
        [
            simulate_collective(g, "all_gather", devs, float(s), cost=true.cost, efficiency=true.efficiency)
            for s in sizes
        ]
    )
    assert Network  # the engine runs at the setup's efficiencies
    cal = fit_calibration([FitCase(g, "all_gather", devs, sizes, meas, source="synthetic")], max_sizes=6)
    assert cal.cost_model == "nccl"
    assert cal.link_efficiency["nvlink"] == pytest.approx(0.75, rel=0.02)
    assert cal.latency_scale == pytest.approx(1.4, rel=0.05)
    assert cal.rms_log_error is not None and cal.rms_log_error < 0.02


def test_a_file_from_before_the_nccl_model_is_an_ideal_calibration(tmp_path: Path) -> None:
    path = tmp_path / "old.yaml"
    path.write_text("link_efficiency: {nvlink: 0.8}\nstep_latency_s: 4us\n")
    cal = load_calibration(path)
    assert cal.cost_model == "ideal" and cal.setup_kwargs()["step_latency_s"] == pytest.approx(4e-6)
    path.write_text("link_efficiency: {nvlink: 0.8}\nlatency_scale: 1.2\n")
    assert load_calibration(path).setup_kwargs() == {
        "cost_model": "nccl",
        "efficiency": {"nvlink": 0.8},
        "latency_scale": 1.2,
    }
    path.write_text("cost_model: psychic\n")
    with pytest.raises(SpecError, match="cost_model: unknown cost model 'psychic'"):
        load_calibration(path)


def test_wrong_parameters_give_large_errors() -> None:
    (case,) = cases("all_reduce_perf_1n.log")
    big = case.sizes_bytes[-1]
    off = simulate_collective(case.graph, "all_reduce", case.devices, float(big), efficiency={"nvlink": 0.5})
    assert off / case.measured_s[-1] > 1.5  # the fit has something to correct


def test_save_and_load(tmp_path: Path) -> None:
    cal = Calibration(
        link_efficiency={"ib": 0.912345678, "nvlink": 0.8},
        step_latency_s=4.123456789e-6,
        cost_model="ideal",
        topology="dgx-h100",
        nodes=2,
        routing="ecmp",
        source_logs=["a.log"],
        unconstrained_classes=["pcie"],
        rms_log_error=0.01,
    )
    path = tmp_path / "cal.yaml"
    cal.save(path)
    text = path.read_text()
    assert text.startswith("# netsim calibration") and f"format: {CALIBRATION_FORMAT}" in text
    back = load_calibration(path)
    assert back.link_efficiency == {"ib": 0.912346, "nvlink": 0.8}
    assert back.step_latency_s == pytest.approx(4.12346e-6)
    assert back.setup_kwargs() == {
        "cost_model": "ideal",
        "efficiency": {"ib": 0.912346, "nvlink": 0.8},
        "step_latency_s": pytest.approx(4.12346e-6),
    }
    assert (back.topology, back.nodes, back.unconstrained_classes) == ("dgx-h100", 2, ["pcie"])
    assert Calibration().setup_kwargs() == {"cost_model": "nccl", "efficiency": {}, "latency_scale": 1.0}


def test_hand_written_file_with_units(tmp_path: Path) -> None:
    p = tmp_path / "cal.yaml"
    p.write_text("link_efficiency:\n  nvlink: 0.9\nstep_latency_s: 3.5us\n")
    cal = load_calibration(p)
    assert cal.step_latency_s == pytest.approx(3.5e-6) and cal.link_efficiency == {"nvlink": 0.9}


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("link_efficiency: {ib: 1.5}\n", "link_efficiency.ib: must be a number in (0, 1]"),
        ("link_efficiency: {ib: 0}\n", "link_efficiency.ib"),
        ("link_efficiency: [0.5]\n", "link_efficiency: must map link classes"),
        ("step_latency_s: -1\n", "step_latency_s: must be >= 0"),
        ("step_latency_s: 3 parsecs\n", "step_latency_s"),
        ("efficiency: {ib: 0.5}\n", "unknown key 'efficiency'"),
        ("format: other/2\n", "unsupported format"),
        ("link_efficiency: {ib: [\n", "not valid YAML"),
        ("- 1\n- 2\n", "must be a mapping"),
    ],
)
def test_bad_calibration_files(tmp_path: Path, text: str, words: str) -> None:
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    with pytest.raises(SpecError) as info:
        load_calibration(p)
    msg = info.value.one_line()
    assert msg.startswith(str(p)) and words in msg


def test_missing_file_and_empty_input() -> None:
    with pytest.raises(SpecError, match="no such calibration file"):
        load_calibration("/nonexistent/cal.yaml")
    with pytest.raises(NetsimError, match="nothing to calibrate"):
        fit_calibration([])
    (case,) = cases("all_reduce_perf_1n.log")
    case.measured_s = np.zeros_like(case.measured_s)
    with pytest.raises(NetsimError, match="must be > 0"):
        fit_calibration([case])
