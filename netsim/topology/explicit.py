"""Explicit graphs: a topology YAML that lists its devices (``nodes:``) and cables (``links:``).

Defaults fill in what the contract needs but a hand-written file may leave out:

* device ``role``: ``accelerator.role`` (gpu/npu; gpu without an ``accelerator:`` block) for
  accelerators, ``rail-nic``, ``host``, ``switch``, ``storage`` for the other kinds;
* device ``network``: ``node`` for accelerators and hosts, ``backend`` for the rest;
* device ``tier``: 1 for a switch outside any server (``node: -1``), else 0;
* accelerator ``nic``: ``n<node>.nic<index>`` if a NIC of that name exists;
* link ``network``: ``node`` if both ends are in the same server, ``frontend`` if either end
  is on the front-end, else ``backend``; link ``tier``: its class; link ``cost`` (routing):
  100 Gb/s over its bandwidth (:mod:`netsim.network.fabric`).

The ``accelerator:`` block (peak FLOPS, memory) is needed by training runs only: a graph for
``netsim flows`` may leave it out.

``num_nodes`` is the number of distinct servers (``node >= 0``) among the accelerators (1 if
none is given), ``accelerators_per_node`` the most accelerators any server has.
"""

from __future__ import annotations

from collections import Counter

from netsim.config.topology import ExplicitTopologySpec
from netsim.topology.builder import GraphBuilder
from netsim.topology.model import nic_name

_DEFAULT_ROLE = {"nic": "rail-nic", "host": "host", "switch": "switch", "storage": "storage"}


def _default_role(spec: ExplicitTopologySpec, kind: str) -> str:
    if kind == "accelerator":
        return spec.accelerator.role if spec.accelerator is not None else "gpu"
    return _DEFAULT_ROLE[kind]


def build_explicit(spec: ExplicitTopologySpec) -> tuple[GraphBuilder, int, int]:
    """Return the builder filled from ``spec``, the server count and accelerators per server."""
    b = GraphBuilder()
    kinds = {n.name: n.kind for n in spec.nodes}
    networks: dict[str, str] = {}
    servers: dict[str, int] = {}
    for n in spec.nodes:
        network = n.network or ("node" if n.kind in ("accelerator", "host") else "backend")
        nic = n.nic
        if n.kind == "accelerator" and not nic and n.node >= 0 and n.index >= 0:
            candidate = nic_name(n.node, n.index)
            nic = candidate if kinds.get(candidate) == "nic" else ""
        b.device(
            n.name,
            kind=n.kind,
            role=n.role or _default_role(spec, n.kind),
            network=network,
            node=n.node,
            index=n.index,
            latency_s=n.latency,
            rail=n.rail,
            plane=n.plane,
            nic=nic,
            tier=n.tier if n.tier is not None else (1 if n.kind == "switch" and n.node < 0 else 0),
        )
        networks[n.name] = network
        servers[n.name] = n.node
    for link in spec.links:
        if link.network is not None:
            network = link.network
        elif servers[link.a] >= 0 and servers[link.a] == servers[link.b]:
            network = "node"
        elif "frontend" in (networks[link.a], networks[link.b]):
            network = "frontend"
        else:
            network = "backend"
        add = b.link if link.directed else b.cable
        add(
            link.a,
            link.b,
            capacity_Bps=link.bandwidth,
            latency_s=link.latency,
            link_class=link.link_class,
            network=network,
            tier=link.tier or link.link_class,
            cost=link.cost,
        )
    per_server = Counter(n.node for n in spec.nodes if n.kind == "accelerator")
    num_nodes = max(1, len([k for k in per_server if k >= 0]))
    return b, num_nodes, max(per_server.values())
