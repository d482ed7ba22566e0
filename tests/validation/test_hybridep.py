"""netsim's ``hybridep`` dispatcher against HybridEP's published bandwidths on H100
(``netsim.validation.hybridep``; DeepEP docs/README_Hybrid-EP.md at 41cad94449).

Where InfiniBand bounds the all-to-all across 4 and 8 servers (EP 32, 64), netsim predicts the
kernels' bandwidth within 8-10%: its NICs run at the dgx-h100 preset's achieved rate (~48 GB/s)
and HybridEP's kernels reach ~41.  Across 2 servers (EP 16), where every rank sends its whole
cross-node share to one peer, the kernels reach ~36 GB/s of InfiniBand (71.71 GB/s counted, each
token counted on both nodes) and netsim is 31% (dispatch) and 50% (combine) fast; through the
Torch API, which the training frameworks call, the gap is 73-77% at EP 16 and 16-33% at 32 and
64.  The recorded gap of the Qwen3-30B-A3B training rows (EP 16 on 2 servers) is this one;
asserted as such, so that a change of the dispatcher or the network model fails here."""

from __future__ import annotations

import numpy as np
import pytest

from netsim.validation.hybridep import PUBLISHED, TOKENS, HybridEPRow, compare, route, table


@pytest.fixture(scope="module")
def rows() -> dict[int, HybridEPRow]:
    return {r.ep: r for r in compare()}


def test_routing_is_uniform_top8_over_eight_local_experts() -> None:
    dest = route(np.random.default_rng(0), 16)
    assert dest.shape == (16, TOKENS, 8) and (dest >= 0).all() and (dest < 16).all()
    # 8 distinct experts of 128, 8 per rank: a token reaches 16 (1 - C(120, 8) / C(128, 8)) = 6.56
    # ranks on average
    ranks = np.array([len(set(t.tolist())) for t in dest[0]])
    assert 6.45 < ranks.mean() < 6.7
    counts = np.bincount(dest.ravel(), minlength=16)
    assert counts.min() > 0.95 * counts.mean()


def test_ib_bound_rows_within_10_percent_of_the_kernels(rows: dict[int, HybridEPRow]) -> None:
    for ep in (32, 64):
        r = rows[ep]
        assert r.ib_send_GBps == pytest.approx(48.0, rel=0.03)  # the busiest NIC at the preset's rate
        for err in r.errors_kernel:
            assert 0.0 < err < 0.10, (ep, r.errors_kernel)
        for err in r.errors_torch:
            assert 0.10 < err < 0.35, (ep, r.errors_torch)


def test_two_servers_are_the_recorded_gap(rows: dict[int, HybridEPRow]) -> None:
    r = rows[16]
    assert r.nodes_per_token == pytest.approx(2.0, abs=0.02)  # nearly every token reaches both servers
    dk, ck = r.errors_kernel
    assert 0.25 < dk < 0.40 and 0.40 < ck < 0.60, r.errors_kernel
    assert all(0.6 < e < 0.9 for e in r.errors_torch), r.errors_torch
    # the kernels' InfiniBand rate the published number implies: about 36 GB/s per GPU
    implied = r.published[2] / r.nodes_per_token * (r.nodes_per_token - 1)
    assert 34 < implied < 38


def test_every_published_row_is_compared(rows: dict[int, HybridEPRow]) -> None:
    assert sorted(rows) == sorted(PUBLISHED)
    text = table(list(rows.values()))
    assert text.count("\n") == 1 + len(PUBLISHED) and "| 64 | 54.1 | 41.24 / 49.97 |" in text
