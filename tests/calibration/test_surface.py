"""The fitted GEMM efficiency surface: exact recovery, fit quality, monotonicity, grouped GEMMs."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from netsim.calibration.kernels import KernelTable
from netsim.calibration.surface import GemmSurface, fit_gemm_surface, surface_errors
from netsim.errors import SpecError
from netsim.traces.vidur import read_vidur

FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "vidur" / "h100"
KERNELS = Path(__file__).resolve().parent.parent.parent / "netsim" / "data" / "kernels"

TRUE = GemmSurface(
    t0_s=4e-6,
    peak_flops=800e12,
    memory_Bps=3e12,
    smooth_p=3.0,
    a_m=300.0,
    a_n=60.0,
    a_k=40.0,
    b_m=0.5,
    b_n=0.3,
    b_k=0.2,
    fill_elems=2e5,
    fill_q=1.0,
)


def test_formula_by_hand() -> None:
    s = replace(TRUE, a_m=0.0, a_n=0.0, a_k=0.0, fill_elems=1e-9, t0_s=0.0, smooth_p=8.0)
    m = n = k = 8192.0
    compute = 2 * m * n * k / 800e12
    memory = 2 * (m * k + k * n + m * n) / 3e12
    assert s.time1(m, n, k) == pytest.approx((compute**8 + memory**8) ** (1 / 8), rel=1e-9)
    tc, tm = s.terms(m, n, k)
    assert (float(tc), float(tm)) == (pytest.approx(compute), pytest.approx(memory))
    # FP8: compute / speed-up, one byte per operand (two per output)
    fast = s.time1(m, n, k, compute_speedup=2.0, operand_bytes=1.0)
    mem8 = (m * k + k * n + 2 * m * n) / 3e12
    assert fast == pytest.approx(((compute / 2) ** 8 + mem8**8) ** (1 / 8), rel=1e-9)


def test_fit_recovers_a_known_surface() -> None:
    rng = np.random.default_rng(0)
    m = np.exp(rng.uniform(0, np.log(16384), 400)).round()
    n = rng.choice([1024, 2048, 4096, 8192, 14336, 28672], 400)
    k = rng.choice([1024, 4096, 7168, 8192], 400)
    t = TRUE.time_s(m, n, k)
    fit = fit_gemm_surface(m, n, k, t)
    # not exact: the fitted peak may not exceed the best throughput in the data (< the true 800e12)
    assert fit.stats is not None and fit.stats["median_abs_pct"] < 0.5 and fit.stats["max_abs_pct"] < 2.0
    q = (3000.0, 5000.0, 3000.0)  # a shape it never saw
    assert fit.time1(*q) == pytest.approx(TRUE.time1(*q), rel=0.01)


def test_fit_on_measured_vidur_points_within_stated_tolerance() -> None:
    t = read_vidur(FIXTURE)
    surf = t.gemm_surface("float16")
    assert surf is not None and surf.stats is not None
    g = t.df[t.df["kernel"] == "gemm"]
    err = np.abs(surface_errors(surf, g["m"], g["n"], g["k"], g["time_s"]))
    # the tolerance docs/sections/kernels.md states for the surface on its own points
    assert np.median(err) < 10.0 and np.quantile(err, 0.9) < 30.0
    assert surf.stats["median_abs_pct"] == pytest.approx(float(np.median(err)))
    assert surf.peak_flops <= float((g["flops"] / g["time_s"]).max()) * (1 + 1e-9)  # never above the best measured


def test_fit_needs_enough_points() -> None:
    with pytest.raises(SpecError, match="at least 24 measured GEMMs"):
        fit_gemm_surface([1, 2], [1, 2], [1, 2], [1e-6, 2e-6])


def _shipped(name: str) -> GemmSurface:
    s = KernelTable.load(KERNELS / name).gemm_surface("float16")
    assert s is not None
    return s


SURFACES = [TRUE, _shipped("vidur-h100.csv"), _shipped("vidur-a100.csv")]
dims = st.floats(min_value=1, max_value=65536)


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(range(len(SURFACES))), dims, dims, dims, st.floats(1.0, 4.0), st.sampled_from(["m", "n", "k"]))
def test_a_bigger_gemm_is_never_faster(which: int, m: float, n: float, k: float, grow: float, dim: str) -> None:
    s = SURFACES[which]
    big = {"m": m, "n": n, "k": k}
    big[dim] *= grow
    assert s.time1(big["m"], big["n"], big["k"]) >= s.time1(m, n, k) * (1 - 1e-12)
    assert s.time1(m, n, k, compute_speedup=1.75, operand_bytes=1.0) <= s.time1(m, n, k) * (1 + 1e-12)


def test_grouped_gemm_on_the_surface() -> None:
    s = SURFACES[1]
    assert s.grouped_time_s([4096.0], 4096, 7168) == pytest.approx(s.time1(4096, 4096, 7168))
    assert s.grouped_time_s([0.0, 0.0], 4096, 7168) == 0.0
    # experts without tokens cost nothing; one grouped kernel beats separate GEMMs for small experts
    assert s.grouped_time_s([64.0, 0.0], 4096, 7168) == pytest.approx(s.time1(64, 4096, 7168))
    eight = s.grouped_time_s([32.0] * 8, 4096, 7168)
    assert s.time1(256, 4096, 7168) < eight < 8 * s.time1(32, 4096, 7168)
    # more tokens per expert never make it faster
    assert s.grouped_time_s([64.0] * 8, 4096, 7168) >= eight


def test_roundtrip_and_bad_parameters() -> None:
    d = TRUE.to_dict()
    assert GemmSurface.from_dict(d) == replace(TRUE, stats={})
    with pytest.raises(SpecError, match="missing parameter 'peak_flops'"):
        GemmSurface.from_dict({k: v for k, v in d.items() if k != "peak_flops"})
    with pytest.raises(SpecError, match="b_m out of range"):
        GemmSurface.from_dict({**d, "b_m": 1.5})
