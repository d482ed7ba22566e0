"""Hypothesis properties of the flow engine (docs/architecture.md, "The network engine")."""

from __future__ import annotations

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netsim.network import Network
from netsim.network.active import ActiveFlows
from tests.network.graphs import leaf_spine, star

HOSTS = [f"h{lf}_{i}" for lf in range(3) for i in range(3)]

flows_st = st.lists(
    st.tuples(
        st.sampled_from(HOSTS),
        st.sampled_from(HOSTS),
        st.floats(min_value=1.0, max_value=1e9),
        st.sampled_from([0.0, 0.0, 0.25, 0.5, 1.0]),
    ),
    min_size=1,
    max_size=40,
)
SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _run(flows, routing: str = "ecmp", scale: float = 1.0, seed: int = 0) -> Network:  # type: ignore[no-untyped-def]
    g = leaf_spine(leaves=3, spines=2, hosts_per_leaf=3, bw=1e9 * scale, up_bw=1.5e9 * scale, lat=1e-6)
    net = Network(g, routing=routing, seed=seed)
    for s, d, b, t in flows:
        net.submit(s, d, b, t)
    net.run()
    return net


@SETTINGS
@given(flows_st, st.sampled_from(["ecmp", "spray", "shortest"]))
def test_every_byte_is_delivered_and_no_link_exceeds_capacity(flows, routing) -> None:  # type: ignore[no-untyped-def]
    net = _run(flows, routing)
    fr = net.flow_records()
    assert fr["end_s"].notna().all()
    lk = net.link_records()
    # each flow's bytes cross each of its links once: sum over links = sum bytes x hops
    expected = float((fr["bytes"] * fr["hops"]).sum())
    assert lk["bytes"].sum() == np_approx(expected)
    assert (lk["peak_utilization"] <= 1.0 + 1e-9).all()
    # a flow never beats latency + bytes / bottleneck capacity (1 GB/s host links here)
    remote = fr[fr["src"] != fr["dst"]]
    assert (remote["fct_s"] >= remote["latency_s"] + remote["bytes"] / 1e9 * (1 - 1e-9) - 1e-15).all()
    assert (fr.loc[fr["src"] == fr["dst"], "fct_s"] == 0).all()  # a local copy costs no network


@SETTINGS
@given(flows_st, st.floats(min_value=1.0, max_value=8.0))
def test_more_capacity_never_slows_simultaneous_flows(flows, factor) -> None:  # type: ignore[no-untyped-def]
    # All flows start together: rates scale with capacity, so every drain time shrinks.
    flows = [(s, d, b, 0.0) for s, d, b, _ in flows]
    base = _run(flows, scale=1.0).flow_records()
    fast = _run(flows, scale=factor).flow_records()
    assert (fast["fct_s"] <= base["fct_s"] * (1 + 1e-9) + 1e-15).all()


@SETTINGS
@given(
    st.lists(st.tuples(st.integers(1, 6), st.floats(1e3, 1e9), st.floats(0.0, 2.0)), min_size=1, max_size=25),
    st.floats(1.0, 4.0),
)
def test_more_capacity_never_slows_a_shared_bottleneck(flows, factor) -> None:  # type: ignore[no-untyped-def]
    # Processor sharing on one bottleneck (incast) is monotone in capacity, whatever the arrivals.
    def run(scale: float) -> pd.DataFrame:
        net = Network(star(7, bw=1e9 * scale, lat=1e-6))
        for h, b, t in flows:
            net.submit(f"h{h}", "h0", b, t)
        net.run()
        return net.flow_records()

    base, fast = run(1.0), run(factor)
    assert (fast["end_s"] <= base["end_s"] * (1 + 1e-9) + 1e-12).all()


@SETTINGS
@given(flows_st, st.integers(0, 2**31 - 1))
def test_same_seed_gives_identical_tables(flows, seed) -> None:  # type: ignore[no-untyped-def]
    a, b = _run(flows, seed=seed), _run(flows, seed=seed)
    pd.testing.assert_frame_equal(a.flow_records(), b.flow_records())
    pd.testing.assert_frame_equal(a.link_records(), b.link_records())
    assert a.flow_records().to_csv().encode() == b.flow_records().to_csv().encode()


def np_approx(x: float):  # type: ignore[no-untyped-def]
    import pytest

    return pytest.approx(x, rel=1e-6, abs=1e-3)


def test_progressive_filling_matches_bruteforce_on_random_instances() -> None:
    from netsim.network.sharing import max_min_rates

    rng = np.random.default_rng(7)
    for _ in range(200):
        nl, nf = rng.integers(1, 6), rng.integers(1, 8)
        inc = rng.random((nf, nl)) < 0.5
        inc[np.arange(nf), rng.integers(0, nl, nf)] = True
        cap = rng.uniform(1, 10, nl)
        f, lk = np.nonzero(inc)
        r = max_min_rates(nf, f, lk, None, cap)
        load = inc.T.astype(float) @ r
        assert (load <= cap * (1 + 1e-9)).all()
        # max-min: every flow has a saturated link on which it has the largest rate
        for i in range(nf):
            links = np.flatnonzero(inc[i])
            ok = [load[j] >= cap[j] * (1 - 1e-9) and r[i] >= r[inc[:, j]].max() * (1 - 1e-9) for j in links]
            assert any(ok)


def test_compiled_filling_agrees_with_the_vectorised_one() -> None:
    """The compiled kernel (when numba is installed) and the numpy filling give the same rates
    (weights, caps below and above the fair share, a resumed level, links without flows)."""
    import pytest

    from netsim.network import _fill_kernel, sharing

    if not _fill_kernel.HAVE_NUMBA:
        pytest.skip("numba is not installed")
    rng = np.random.default_rng(11)
    for _ in range(300):
        nl, nf = int(rng.integers(1, 8)), int(rng.integers(1, 12))
        inc = rng.random((nf, nl)) < 0.4
        inc[np.arange(nf), rng.integers(0, nl, nf)] = rng.random(nf) < 0.9  # some flows cross nothing
        f, lk = np.nonzero(inc)
        ptr = np.zeros(nf + 1, dtype=np.int64)
        np.cumsum(inc.sum(axis=1), out=ptr[1:])
        w = np.where(rng.random(f.size) < 0.3, rng.uniform(0.1, 1.0, f.size), 1.0)
        cap = rng.uniform(1, 10, nl + 2)  # two links nobody crosses
        fcap = np.where(rng.random(nf) < 0.3, rng.uniform(0.2, 5.0, nf), np.inf)
        fcap[(inc.sum(axis=1) == 0) & ~np.isfinite(fcap)] = 3.0  # a flow on no link needs a cap
        level0 = float(rng.choice([0.0, 0.1]))
        old = sharing.USE_COMPILED
        try:
            sharing.USE_COMPILED = False
            vectorised = sharing.refill(ptr, lk, w, cap, fcap, level0)
        finally:
            sharing.USE_COMPILED = old
        compiled = _fill_kernel.fill(ptr, lk.astype(np.int64), w, cap, fcap, level0)
        np.testing.assert_allclose(compiled, vectorised, rtol=1e-9, atol=1e-12)


def test_component_restricted_refills_match_global_ones() -> None:
    """Refilling only the component of the flows that started or left gives the rates a global
    refill gives: same completion time for every flow (hundreds of flows, mostly inside leaves
    so that there are many components, some across the spines to join them)."""
    g = leaf_spine(leaves=4, spines=2, hosts_per_leaf=4, bw=1e9, up_bw=1.5e9, lat=1e-6)
    hosts = [f"h{lf}_{i}" for lf in range(4) for i in range(4)]
    rng = np.random.default_rng(5)
    flows = []
    for _ in range(400):
        lf = int(rng.integers(0, 4))
        a, b = rng.choice(4, 2, replace=False)
        src, dst = f"h{lf}_{a}", f"h{lf}_{b}"
        if rng.random() < 0.15:
            dst = hosts[int(rng.integers(0, len(hosts)))]
        flows.append((src, dst, float(rng.uniform(1e5, 5e7)), float(rng.choice([0.0, 1e-3, 5e-3, 2e-2]))))
    ends = {}
    old = ActiveFlows.COMPONENT_MAX_SHARE
    try:
        for share in (0.0, 1.0):  # never / always (when it is not all of them) restrict
            ActiveFlows.COMPONENT_MAX_SHARE = share
            net = Network(g, routing="ecmp", seed=3)
            for s, d, b, t in flows:
                net.submit(s, d, b, t)
            net.run()
            ends[share] = net.flow_end_s()
    finally:
        ActiveFlows.COMPONENT_MAX_SHARE = old
    np.testing.assert_allclose(ends[1.0], ends[0.0], rtol=1e-7)
