"""Pipeline-parallel transfers are NCCL send/recv on the pipeline's communicator: NCCL's latency
before the flow and the rate of the channels its rule gives the message there
(netsim/collectives/nccl/p2p.py).  A pipeline of 16 stages, one GPU per DGX A100: the rule gives
every network peer one channel (2 x ceil(16 / 8) > the communicator's 2 p2p channels), 14.4 GB/s
where the HDR NIC carries 24."""

from __future__ import annotations

from typing import Any

import pytest

from netsim.collectives.setup import collective_setup
from netsim.collectives.transfer_costs import P2pTransfer, p2p_transfer
from netsim.config.scenario import load_scenario
from netsim.network import Network
from netsim.run import prepare, simulate
from netsim.topology import load_topology

MiB = 2**20

DENSE_PP16: dict[str, Any] = {
    "name": "dense-pp16",
    "model": {"layers": 16, "hidden": 1024, "ffn_hidden": 4096, "heads": 8, "vocab": 4096, "seq_len": 2048},
    "parallelism": {"pp": 16, "tp": 8, "ep": 1, "zero_stage": 1},
    "micro_batch_size": 4,
    "num_microbatches": 4,
    "steps": 1,
    "storage": {"enabled": False},
}


def test_a_send_in_a_16_stage_pipeline_gets_one_channel() -> None:
    g = load_topology("dgx-a100", nodes=16)
    setup = collective_setup(g)
    net = Network(g)
    comm = tuple(f"n{i}.g0" for i in range(16))
    t = p2p_transfer(net, setup.cost, comm, "n0.g0", "n1.g0", 16 * MiB)
    assert t.rate_cap_Bps == pytest.approx(14.4e9)
    assert t.wire_bytes == 16 * MiB and 5e-6 < t.latency_s < 100e-6  # NCCL's base + network hop
    # a two-stage pipeline: two channels, faster than the NIC; the ideal model: a plain flow
    assert p2p_transfer(net, setup.cost, comm[:2], "n0.g0", "n1.g0", 16 * MiB).rate_cap_Bps == pytest.approx(28.8e9)
    ideal = collective_setup(g, cost_model="ideal").cost
    assert p2p_transfer(net, ideal, comm, "n0.g0", "n1.g0", 16 * MiB) == P2pTransfer(0.0, 16 * MiB, None)


@pytest.mark.parametrize("options", [{}, {"lockstep": True, "collective_model": "coflow"}])
def test_pipeline_flows_run_at_their_channels_rate(options: dict[str, Any]) -> None:
    scenario = {"name": "pp16", "topology": "dgx-a100", "nodes": 16, "workload": DENSE_PP16, "options": options}
    prep = prepare(load_scenario(scenario))
    _, net = simulate(prep)
    flows = net.flow_records()
    pp = flows[flows["traffic_class"] == "pp"]
    assert len(pp) > 0
    rate = pp["bytes"] / (pp["end_s"] - pp["start_s"])
    # one channel: 14.4 GB/s at most, and that alone on an otherwise idle pipeline hop
    assert rate.max() <= 14.4e9 * 1.001
    assert rate.median() > 14.4e9 * 0.9
