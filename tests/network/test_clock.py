"""The engine's simpy driver: wake-ups at the end of their instant, deliveries after latency."""

from __future__ import annotations

import numpy as np
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


def _delivery_log(use_handler: bool) -> list[tuple[float, str]]:
    """What runs, in order, when flows are delivered: two batches of flows around an ordinary
    transfer event that a process waits for (delivered at the same instants), and the zero-delay
    events the arrivals schedule (as plan executions do)."""
    net = Network(star(8, lat=0.125))
    env = net.env
    log: list[tuple[float, str]] = []

    def arrived(fids: list[int]) -> None:
        for fid in fids:
            log.append((env.now, f"flow {fid}"))
            env.timeout(0).callbacks.append(lambda _e, fid=fid: log.append((env.now, f"after {fid}")))

    def submit(pairs: list[tuple[str, str, float]]) -> None:
        src = np.array([net.links.index[a] for a, _, _ in pairs])
        dst = np.array([net.links.index[b] for _, b, _ in pairs])
        size = np.array([n for _, _, n in pairs])
        if use_handler:
            net.transfer_notify(src, dst, size, arrived)
        else:
            for ev in net.transfer_ids(src, dst, size):
                ev.callbacks.append(lambda e: arrived([int(e.value)]))

    def waiter(env: simpy.Environment, ev: simpy.Event):  # type: ignore[no-untyped-def]
        fid = yield ev
        log.append((env.now, f"process {fid}"))

    submit([("h0", "h1", GB), ("h2", "h3", GB), ("h1", "h0", 0.0)])
    env.process(waiter(env, net.transfer("h4", "h5", GB)))
    submit([("h6", "h7", GB), ("h3", "h2", 2 * GB)])
    net.run()
    return log


def test_a_delivery_handler_runs_where_the_flows_events_would() -> None:
    """:meth:`Clock.notify` saves an event per flow without changing the order of anything."""
    with_events = _delivery_log(use_handler=False)
    assert [x for _, x in with_events][:6] == ["flow 2", "after 2", "flow 0", "flow 1", "process 3", "flow 4"]
    assert _delivery_log(use_handler=True) == with_events
