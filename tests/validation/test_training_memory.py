"""Memory against what ran: the published training runs fitted their GPUs, so netsim's tally
(:mod:`netsim.workload.memory`) must say they fit, except where a case names the saving the
tally does not model; and where a source measured the peak (``peak_memory_gib``), the tally is
within the case's tolerance of it.

Each case's memory report is taken where ``build_plan`` checks it, before the step's ops are
built (all cases in a few seconds).  A change to the tally that over- or under-counts moves a
case across its accelerator's HBM and fails here.
"""

from __future__ import annotations

from typing import Any

import pytest

import netsim.workload.graph as graph_module
from netsim.run import prepare
from netsim.validation.runner import tolerance_for
from netsim.validation.sources import load_sources
from netsim.validation.training import scenario_of
from netsim.workload.memory import MemoryReport

#: published runs the tally puts over their HBM, and the saving it lacks (the case's yaml says
#: more and sets ``options.allow_oom``)
OVER = {
    # activations cached in FP8 beyond the GEMM inputs (DeepSeek-V3 report section 3.3.3)
    "deepseek-v3/pretrain-2048-gpus",
    "deepseek-v3/pretrain-2048-gpus-profiled-compute",  # the same run, its kernels calibrated
    # pipeline input/output tensors deallocated early (Llama 3 paper section 3.3.2)
    "llama3-405b/pretrain-8k-gpus",
    # the 25.11 table's micro-batch 2; the recipe's micro-batch 1 fits
    "megatron-bridge-h100/qwen3-30b-a3b-16gpus-25-11",
}


class _Checked(Exception):
    """Raised in place of the memory check: the report is what the test wanted."""


def _measured_peaks() -> dict[str, tuple[float, float]]:
    """``source/case -> (measured peak GiB, tolerance)`` of the cases that publish it."""
    return {
        f"{src.source.id}/{case.id}": (case.peak_memory_gib, tolerance_for(case, None) or 0.1)
        for src in load_sources()
        for case in src.cases
        if case.kind == "training" and case.peak_memory_gib is not None
    }


def _memory_reports() -> dict[str, tuple[MemoryReport, bool]]:
    seen: dict[str, Any] = {}

    def capture(memory: MemoryReport, spec: Any, allow_oom: bool) -> None:
        seen["memory"], seen["allow_oom"] = memory, allow_oom
        raise _Checked

    out: dict[str, tuple[MemoryReport, bool]] = {}
    mp = pytest.MonkeyPatch()
    mp.setattr(graph_module, "check_memory", capture)
    try:
        for src in load_sources():
            for case in src.cases:
                if case.kind != "training":
                    continue
                with pytest.raises(_Checked):
                    prepare(scenario_of(src, case))
                out[f"{src.source.id}/{case.id}"] = (seen["memory"], seen["allow_oom"])
    finally:
        mp.undo()
    return out


@pytest.fixture(scope="module")
def reports() -> dict[str, tuple[MemoryReport, bool]]:
    return _memory_reports()


def test_published_runs_fit_their_gpus_by_the_tally(reports: dict[str, tuple[MemoryReport, bool]]) -> None:
    over = {name for name, (memory, _) in reports.items() if not memory.fits}
    assert over == OVER, {name: reports[name][0].shortfall() for name in over ^ OVER}


def test_only_the_cases_over_their_hbm_turn_the_memory_check_off(reports: dict[str, tuple[MemoryReport, bool]]) -> None:
    blanket = sorted(name for name, (memory, allow) in reports.items() if allow and memory.fits)
    assert not blanket, f"allow_oom on cases that fit: {blanket}"
    for name in OVER:
        assert reports[name][1], f"{name} is over its HBM: it needs options.allow_oom and a reason"


#: measured peaks the tally misses by more than the tolerance, and what it is known to get wrong
#: (megatron-bridge-h100-sft.yaml): the two layouts that hold the most activations (TP 4 with the
#: attention core alone recomputed) it counts above what the runs held, while it credits TP 8 and
#: a recomputed MLP with more saving than the runs showed
PEAKS_OFF = {
    "megatron-bridge-h100-sft/llama3-70b-sft-tp4-pp4": "+12.7%",
    "megatron-bridge-h100-sft/llama3-70b-sft-tp4-pp8": "+12.3%",
}


def test_the_tally_matches_the_measured_peaks(reports: dict[str, tuple[MemoryReport, bool]]) -> None:
    peaks = _measured_peaks()
    assert peaks, "no case publishes its peak memory"
    assert set(PEAKS_OFF) <= set(peaks)
    for name, (measured, tol) in peaks.items():
        predicted = reports[name][0].peak.total / 2**30
        error = predicted / measured - 1
        if name in PEAKS_OFF:  # a known miss stays listed only while it is one
            assert abs(error) > tol and f"{100 * error:+.1f}%" == PEAKS_OFF[name], (name, error)
            continue
        assert abs(error) <= tol, f"{name}: measured {measured} GiB, tally {predicted:.2f} GiB"
