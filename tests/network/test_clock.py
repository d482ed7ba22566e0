"""The engine's simpy driver: wake-ups at the end of their instant, deliveries after latency."""

from __future__ import annotations

import pytest
import simpy

from netsim.network import Network
from tests.network.graphs import star

GB = 1e9


def test_flows_started_late_in_an_instant_join_its_batch() -> None:
    """A process that reaches the instant through a chain of zero-delay events still starts its
    flow in the same batch as the others: one rate update to start, one to finish."""
    net = Network(star(3, lat=0.0))
    env = net.env

    def early(env: simpy.Environment):  # type: ignore[no-untyped-def]
        yield net.transfer("h0", "h2", GB)

    def late(env: simpy.Environment):  # type: ignore[no-untyped-def]
        for _ in range(3):
            yield env.timeout(0)
        yield net.transfer("h1", "h2", GB)

    env.process(early(env))
    env.process(late(env))
    net.run()
    assert net.flow_records()["end_s"].tolist() == pytest.approx([2.0, 2.0])
    assert net.num_rate_updates == 2


def test_two_networks_share_one_environment() -> None:
    """Each network wakes at the end of the instant in turn; neither waits for the other forever."""
    env = simpy.Environment()
    a = Network(star(2, lat=1e-6), env)
    b = Network(star(2, lat=1e-6), env)
    done: dict[str, float] = {}

    def proc(env: simpy.Environment, net: Network, name: str, nbytes: float):  # type: ignore[no-untyped-def]
        yield net.transfer("h0", "h1", nbytes)
        done[name] = env.now

    env.process(proc(env, a, "a", GB))
    env.process(proc(env, b, "b", 2 * GB))
    env.run()
    assert done == {"a": pytest.approx(1.0 + 2e-6), "b": pytest.approx(2.0 + 2e-6)}


def test_transfer_event_fires_after_the_path_latency_with_the_flow_id() -> None:
    net = Network(star(2, lat=0.25))
    got: list[tuple[float, int]] = []

    def proc(env: simpy.Environment):  # type: ignore[no-untyped-def]
        fid = yield net.transfer("h0", "h1", GB)
        got.append((env.now, fid))

    net.env.process(proc(net.env))
    net.run()
    assert got == [(pytest.approx(1.5), 0)]  # 1 GB at 1 GB/s, then two links of 0.25 s
