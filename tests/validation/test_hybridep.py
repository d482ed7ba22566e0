"""netsim's ``hybridep`` dispatcher against HybridEP's published bandwidths on H100
(``netsim.validation.hybridep``; DeepEP docs/README_Hybrid-EP.md at 41cad94449).

The transfers alone: where InfiniBand bounds the all-to-all across 4 and 8 servers (EP 32, 64),
netsim is 8-10% fast against the kernel-only timings: its NICs run at the dgx-h100 preset's
achieved rate (~48 GB/s).  Across 2 servers (EP 16), where every rank sends its whole cross-node
share to one peer, the kernels reach ~36 GB/s of InfiniBand (71.71 GB/s counted, each token
counted on both nodes) and the transfers are 31% (dispatch) and 50% (combine) fast.  With the
kernel's fixed time per call (0.32 ms, fitted to these 9 timings: ``netsim.validation.ep_latency``)
every kernel-only timing is within 10% but the 2-server combine (19% fast in bandwidth), the
gap recorded for the Qwen3-30B-A3B training rows (EP 16 on 2 servers).  The Torch API numbers add
a device-to-device copy and a synchronisation per call that netsim does not model (10-40%).
Asserted as such, so that a change of the dispatcher, the network model or the latency fails
here."""

from __future__ import annotations

import numpy as np
import pytest

from netsim.validation.hybridep import PUBLISHED, TOKENS, HybridEPRow, compare, route, table


@pytest.fixture(scope="module")
def rows() -> dict[int, HybridEPRow]:
    return {r.ep: r for r in compare()}


@pytest.fixture(scope="module")
def transfers() -> dict[int, HybridEPRow]:
    return {r.ep: r for r in compare(latency_s=0.0)}


def test_routing_is_uniform_top8_over_eight_local_experts() -> None:
    dest = route(np.random.default_rng(0), 16)
    assert dest.shape == (16, TOKENS, 8) and (dest >= 0).all() and (dest < 16).all()
    # 8 distinct experts of 128, 8 per rank: a token reaches 16 (1 - C(120, 8) / C(128, 8)) = 6.56
    # ranks on average
    ranks = np.array([len(set(t.tolist())) for t in dest[0]])
    assert 6.45 < ranks.mean() < 6.7
    counts = np.bincount(dest.ravel(), minlength=16)
    assert counts.min() > 0.95 * counts.mean()


def test_kernel_timings_within_10_percent_but_the_two_server_combine(rows: dict[int, HybridEPRow]) -> None:
    for ep, r in rows.items():
        dk, ck = r.errors_kernel
        fp8 = r.fp8_dispatch_GBps / r.published_fp8_kernel - 1.0
        assert abs(dk) < 0.10 and abs(fp8) < 0.10, (ep, dk, fp8)
        if ep == 16:  # the recorded gap: the combine across 2 servers
            assert 0.15 < ck < 0.25, r.errors_kernel
        else:
            assert abs(ck) < 0.10, (ep, r.errors_kernel)
        assert all(0.09 < e < 0.45 for e in r.errors_torch), (ep, r.errors_torch)


def test_ib_bound_transfers_within_10_percent_of_the_kernels(transfers: dict[int, HybridEPRow]) -> None:
    for ep in (32, 64):
        r = transfers[ep]
        assert r.ib_send_GBps == pytest.approx(48.0, rel=0.03)  # the busiest NIC at the preset's rate
        for err in r.errors_kernel:
            assert 0.0 < err < 0.10, (ep, r.errors_kernel)


def test_two_server_transfers_are_fast(transfers: dict[int, HybridEPRow]) -> None:
    r = transfers[16]
    assert r.nodes_per_token == pytest.approx(2.0, abs=0.02)  # nearly every token reaches both servers
    dk, ck = r.errors_kernel
    assert 0.25 < dk < 0.40 and 0.40 < ck < 0.60, r.errors_kernel
    # the kernels' InfiniBand rate the published number implies: about 36 GB/s per GPU
    implied = r.published[2] / r.nodes_per_token * (r.nodes_per_token - 1)
    assert 34 < implied < 38


def test_every_published_row_is_compared(rows: dict[int, HybridEPRow]) -> None:
    assert sorted(rows) == sorted(PUBLISHED)
    text = table(list(rows.values()))
    assert text.count("\n") == 1 + len(PUBLISHED) and "| 64 | 51.2 | 41.24 / 49.97 |" in text
