"""Expert capacity: Switch formula and the LocMoE Theorem-1 bound."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.special import betainc

from netsim.errors import SpecError
from netsim.moe import locmoe_min_capacity, locmoe_min_capacity_approx, locmoe_p_delta, token_capacity


def test_token_capacity() -> None:
    assert token_capacity(1024, 16, 1.25) == 80
    assert token_capacity(100, 16, 1.0) == 7  # ceil(6.25)
    assert token_capacity(1024, 16, 1.0, top_k=2) == 128
    assert token_capacity(48, 16, 1.0) == 3  # no floating-point fuzz
    with pytest.raises(SpecError):
        token_capacity(10, 4, 0.0)


def test_p_delta_equals_the_betainc_formula() -> None:
    for d, delta in [(64, 0.03), (512, 0.1), (4096, 0.03)]:
        assert locmoe_p_delta(d, delta) == pytest.approx(1 - betainc(0.5, (d - 1) / 2, delta**2), rel=1e-12)
        assert locmoe_min_capacity(16, d, delta) == pytest.approx(1 / (16 * locmoe_p_delta(d, delta)))


def test_p_delta_closed_forms_in_low_dimensions() -> None:
    # d = 3: the cosine with a fixed direction is uniform on [-1, 1]
    assert locmoe_p_delta(3, 0.3) == pytest.approx(0.7)
    # d = 2: the angle is uniform; P(|cos| >= delta) = 1 - (2/pi) arcsin(delta)
    assert locmoe_p_delta(2, 0.4) == pytest.approx(1 - 2 / math.pi * math.asin(0.4))
    assert locmoe_p_delta(64, 0.0) == pytest.approx(1.0)


def test_p_delta_matches_monte_carlo_on_the_sphere() -> None:
    d, delta = 64, 0.1
    v = np.random.default_rng(0).normal(size=(200_000, d))
    cos = v[:, 0] / np.linalg.norm(v, axis=1)
    assert np.mean(np.abs(cos) >= delta) == pytest.approx(locmoe_p_delta(d, delta), abs=0.004)


def test_large_d_approximation() -> None:
    assert locmoe_min_capacity_approx(16, 4096, 0.03) == pytest.approx(math.exp(0.03**2 * 4096 / (2 - 0.03**2)) / 16)
    # the paper's large-d form is a lower bound of the exact ec_min
    for d in (2, 16, 64, 512, 4096, 7168):
        for delta in (0.01, 0.03, 0.1):
            assert locmoe_min_capacity_approx(16, d, delta) <= locmoe_min_capacity(16, d, delta)


def test_capacity_rejects_bad_input() -> None:
    with pytest.raises(SpecError, match="delta"):
        locmoe_p_delta(64, 1.0)
    with pytest.raises(SpecError, match="hidden"):
        locmoe_min_capacity(16, 1)
