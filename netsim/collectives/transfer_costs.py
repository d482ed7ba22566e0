"""How a :class:`~netsim.collectives.cost.CollectiveCall` maps onto the transfers of a plan.

For every transfer of a plan the executor needs three numbers: the software latency before it
starts, the bytes it puts on the wire, and the highest rate it may reach (its flow's cap).
:func:`transfer_costs` derives them from the call (the cost model's decision for this
collective) and the plan:

* **latency**: the call's latency for the transfer's hop (``intra`` when both ends are in the
  same server, an NVSwitch counting as inside; ``inter`` otherwise), less the path latency the
  engine adds for such a hop (one representative transfer per hop class, routed on the
  network), never below zero.  The library's hop latencies (NCCL's ``hwLat``) include the
  wire; subtracting the engine's path latency keeps it from being counted twice.
* **wire bytes**: the plan's bytes times the protocol's wire factor.
* **rate cap** (point-to-point calls): each transfer at most the rate of the channels NCCL
  gives its message (:mod:`netsim.collectives.nccl.p2p`);
* **rate cap** (collectives): a sender ``r`` may move its whole share of the plan in no less than
  ``nbytes / alg_bw`` (the library's own bandwidth limit for the call), i.e. at
  ``R_r = wire bytes r sends x alg_bw / nbytes``; a transfer gets ``R_r`` times its share of
  what ``r`` sends at the same time (its step's bytes, per chunk; all of a fluid plan's
  transfers run at the same time).

Hop classes come from the graph: a device's ``node`` attribute (``-1`` for fabric switches).

The costs are a function of the network, the plan and the call alone, and a training step
executes the same (cached) plan under the same call thousands of times (a layer's TP
collective, every micro-batch): :func:`transfer_costs` keeps them per network and plan object
and hands back the same arrays when the call is equal (the executor only reads them).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from netsim.collectives.plan import Plan

if TYPE_CHECKING:
    from netsim.collectives.cost import CollectiveCall, CostModel
    from netsim.collectives.nccl.p2p import P2pChannels
    from netsim.network.engine import Network

__all__ = ["P2pTransfer", "TransferCosts", "p2p_transfer", "pair_hop_latency_s", "transfer_costs"]


@dataclass(frozen=True)
class TransferCosts:
    """Per-transfer latency (s), wire bytes and rate cap (bytes/s, ``None``: uncapped)."""

    latency_s: np.ndarray
    wire_bytes: np.ndarray
    rate_cap_Bps: np.ndarray | None


def _server_of(net: Network, names: tuple[str, ...]) -> np.ndarray:
    g = net.graph
    out = np.empty(len(names), dtype=np.int64)
    for i, name in enumerate(names):
        v = g.nodes[name].get("node") if name in g else None
        out[i] = -1 if v is None else int(v)
    return out


#: per network: plan id -> the plan (kept, so that its id is not reused), and its costs by call
_CACHES: weakref.WeakKeyDictionary[Network, dict[int, tuple[Plan, list[tuple[CollectiveCall, TransferCosts]]]]] = (
    weakref.WeakKeyDictionary()
)


def transfer_costs(
    net: Network, plan: Plan, call: CollectiveCall, src_ids: np.ndarray, dst_ids: np.ndarray
) -> TransferCosts:
    """The per-transfer costs of ``plan`` under ``call`` (module doc); ``src_ids``/``dst_ids``
    are the network's device ids of the transfers' ends.  The same arrays for the same network,
    plan object and an equal call (the caller must not modify them)."""
    per_net = _CACHES.setdefault(net, {})
    entry = per_net.get(id(plan))
    if entry is None:
        entry = per_net[id(plan)] = (plan, [])
    for known, costs in entry[1]:
        if known == call:
            return costs
    costs = _transfer_costs(net, plan, call)
    entry[1].append((call, costs))
    return costs


def _transfer_costs(net: Network, plan: Plan, call: CollectiveCall) -> TransferCosts:
    """:func:`transfer_costs`, computed."""
    n = len(plan)
    wire = plan.size * float(call.wire_factor) if call.wire_factor != 1.0 else plan.size
    server = _server_of(net, plan.nodes)
    s_src, s_dst = server[plan.src], server[plan.dst]
    inter = (s_src != s_dst) | (s_src < 0) | (s_dst < 0)
    lat = np.where(inter, float(call.hop_latency_s.get("inter", 0.0)), float(call.hop_latency_s.get("intra", 0.0)))
    if call.subtract_path_latency and n:
        for mask in (inter, ~inter):
            if mask.any():
                k = int(np.flatnonzero(mask)[0])
                path = net.path_latency_s(plan.nodes[int(plan.src[k])], plan.nodes[int(plan.dst[k])])
                lat[mask] = np.maximum(lat[mask] - path, 0.0)
    caps = None
    if call.alg_bw_Bps is not None and plan.nbytes > 0 and n:
        fluid = bool(plan.meta.get("fluid"))
        step = np.zeros(n, dtype=np.int64) if fluid else plan.step
        chunks = 1 if fluid or plan.stream else max(int(plan.meta.get("chunks", 1) or 1), 1)
        total = np.bincount(plan.src, weights=wire, minlength=len(plan.nodes))
        rate = total * float(call.alg_bw_Bps) / float(plan.nbytes)  # R_r per sender
        key = plan.src.astype(np.int64) * (int(step.max()) + 1) + step
        _, inv = np.unique(key, return_inverse=True)
        step_bytes = np.bincount(inv, weights=wire)[inv]
        caps = rate[plan.src] * wire * chunks / np.maximum(step_bytes, 1e-300)
        caps = np.where(wire > 0, np.maximum(caps, 1e-3), np.inf)
    if call.p2p is not None and n:
        p2p = _p2p_caps(plan, call.p2p)
        caps = p2p if caps is None else np.minimum(caps, p2p)
    return TransferCosts(latency_s=lat, wire_bytes=np.asarray(wire, dtype=np.float64), rate_cap_Bps=caps)


def _p2p_caps(plan: Plan, rule: P2pChannels) -> np.ndarray:
    """Point-to-point plans: every transfer at most the rate of the channels NCCL gives the
    message between its two ranks (the plan's bytes from its source to its destination; the
    chunks of a message run one after the other on the same channels)."""
    m = len(plan.nodes)
    pair = plan.src.astype(np.int64) * m + plan.dst
    keys, inv = np.unique(pair, return_inverse=True)
    message = np.bincount(inv, weights=plan.size, minlength=keys.size)
    return rule.rate_caps_Bps(message)[inv]


@dataclass(frozen=True)
class P2pTransfer:
    """How a library send/recv of a training step runs: the software latency before its flow
    starts (s), the bytes it puts on the wire and its rate cap (bytes/s, ``None``: uncapped)."""

    latency_s: float
    wire_bytes: float
    rate_cap_Bps: float | None


def p2p_transfer(
    net: Network, cost: CostModel | None, comm: tuple[str, ...], src: str, dst: str, nbytes: float
) -> P2pTransfer:
    """A send/recv of ``nbytes`` from ``src`` to ``dst`` inside the communicator ``comm`` (e.g.
    a pipeline's stages) as the cost model runs it: NCCL's base and hop latency (less the path
    latency the engine adds itself), its protocol's wire bytes and the rate of the channels its
    rule gives the message in that communicator (:mod:`netsim.collectives.nccl.p2p`).  Without a
    library model (``ideal``, no cost model, or fewer than two devices): a plain flow."""
    if cost is None or len(comm) < 2 or getattr(cost, "name", "") == "ideal":
        return P2pTransfer(0.0, float(nbytes), None)
    call = cost.call("sendrecv", comm, nbytes)
    lat = pair_hop_latency_s(net, call, src, dst)
    cap = call.p2p.rate_cap_Bps(nbytes) if call.p2p is not None else None
    return P2pTransfer(call.base_latency_s + lat, float(nbytes) * float(call.wire_factor), cap)


def pair_hop_latency_s(net: Network, call: CollectiveCall, src: str, dst: str) -> float:
    """The library's hop latency of a transfer from ``src`` to ``dst`` (``intra`` inside one
    server, else ``inter``), less the engine's own path latency when the call asks for it
    (module doc), never below zero: what :func:`transfer_costs` gives each transfer of a plan."""
    server = _server_of(net, (src, dst))
    inter = bool(server[0] != server[1] or server[0] < 0)
    lat = float(call.hop_latency_s.get("inter" if inter else "intra", 0.0))
    if call.subtract_path_latency and lat > 0:
        lat = max(lat - net.path_latency_s(src, dst), 0.0)
    return lat
