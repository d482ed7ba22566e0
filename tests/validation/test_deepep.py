"""netsim's ``deepep`` dispatcher against DeepEP's published normal-kernel bandwidths on H800
(``netsim.validation.deepep``; DeepEP docs/legacy.md at dd758caf45).

The transfers alone: where InfiniBand bounds the all-to-all (EP 32 and 64, DeepSeek-V3's own EP
64 over 8 nodes) netsim is 5-11% fast; where NVLink bounds it (intranode EP 8, and EP 16, whose
NVLink fan-out carries ~6x its InfiniBand bytes) 17-31% fast.  With the kernel's fixed time per
call (0.25 ms, fitted to these 8 timings: ``netsim.validation.ep_latency``) every row is within
7% but the 2-server combine (17% fast), the recorded gap.  Asserted as such: a change of the
dispatcher, the network model or the latency moves these numbers and fails here."""

from __future__ import annotations

import numpy as np
import pytest

from netsim.validation.deepep import PUBLISHED, DeepEPRow, compare, route, table


@pytest.fixture(scope="module")
def rows() -> dict[int, DeepEPRow]:
    return {r.ep: r for r in compare()}


@pytest.fixture(scope="module")
def transfers() -> dict[int, DeepEPRow]:
    return {r.ep: r for r in compare(latency_s=0.0)}


def test_routing_is_deepeps_node_limited_top8() -> None:
    dest = route(np.random.default_rng(0), 8)
    assert dest.shape == (64, 4096, 8)
    nodes_per_token = np.array([len(set(t.tolist())) for t in dest[0] // 8])
    assert nodes_per_token.max() <= 4 and nodes_per_token.mean() > 3  # top-4 groups of 8 nodes
    assert (dest >= 0).all() and (dest < 64).all()


def test_rows_within_7_percent_but_the_two_server_combine(rows: dict[int, DeepEPRow]) -> None:
    for ep, r in rows.items():
        d, c = r.errors
        assert abs(d) < 0.07, (ep, r.errors)
        if ep == 16:  # the recorded gap: the combine across 2 servers
            assert 0.12 < c < 0.22, r.errors
        else:
            assert abs(c) < 0.07, (ep, r.errors)


def test_ib_bound_transfers_within_11_percent(transfers: dict[int, DeepEPRow]) -> None:
    for ep in (32, 64):
        r = transfers[ep]
        assert r.ib_send_GBps == pytest.approx(48.0, rel=0.03)  # the busiest NIC at its achieved rate
        for err in r.errors:
            assert 0.0 < err < 0.115, (ep, r.errors)


def test_nvlink_bound_transfers(transfers: dict[int, DeepEPRow]) -> None:
    for ep in (8, 16):
        r = transfers[ep]
        assert r.nvlink_send_GBps == pytest.approx(0.824 * 200, rel=0.03)  # NVLink saturated
        for err in r.errors:
            assert 0.15 < err < 0.35, (ep, r.errors)
    assert transfers[8].ib_send_GBps == 0.0


def test_every_published_row_is_compared(rows: dict[int, DeepEPRow]) -> None:
    assert sorted(rows) == sorted(PUBLISHED)
    text = table(list(rows.values()))
    assert text.count("\n") == 1 + len(PUBLISHED) and "| internode | 64 | 51 |" in text
