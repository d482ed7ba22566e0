"""From a validated spec to the topology graph (see :mod:`netsim.topology.model`).

:func:`build_topology` dispatches on the spec form: a templated spec becomes servers
(:mod:`netsim.topology.nodes`) plus a back-end and a front-end fabric
(:mod:`netsim.topology.fabrics`); an explicit spec becomes exactly the listed devices and
links (:mod:`netsim.topology.explicit`).  The result is checked for connectivity
(:mod:`netsim.topology.validate`) and carries the graph attributes of the contract, including
the resolved spec as a plain dict.
"""

from __future__ import annotations

import networkx as nx

from netsim.config.topology import ExplicitTopologySpec, MultiPlaneFabricSpec, TopologySpec
from netsim.topology.builder import GraphBuilder
from netsim.topology.explicit import build_explicit
from netsim.topology.fabrics import add_backend, add_frontend
from netsim.topology.faults import apply_faults
from netsim.topology.nodes import add_servers
from netsim.topology.validate import check_connected


def build_topology(spec: TopologySpec, *, source: str | None = None) -> nx.DiGraph:
    """Build and validate the graph of ``spec``.

    Args:
        spec: a validated topology spec.
        source: where the spec came from (file or preset), for error messages.

    Raises:
        TopologyError: the graph is disconnected or a link is inconsistent.
    """
    if isinstance(spec, ExplicitTopologySpec):
        b, num_nodes, per_node = build_explicit(spec)
    else:
        b = GraphBuilder()
        add_servers(b, spec, nic_planes=isinstance(spec.backend, MultiPlaneFabricSpec))
        add_backend(b, spec)
        add_frontend(b, spec)
        num_nodes, per_node = spec.num_nodes, spec.node.accelerators
    acc = spec.accelerator
    g = b.graph(
        name=spec.name,
        num_nodes=num_nodes,
        accelerators_per_node=per_node,
        # no accelerator data: a graph for network studies only (`netsim flows`)
        accelerator={}
        if acc is None
        else {
            "name": acc.name,
            "role": acc.role,
            "peak_flops": dict(acc.peak_flops),
            "memory_Bps": acc.memory_bandwidth,
            "memory_bytes": acc.memory,
            **({"compute": acc.compute.model_dump()} if acc.compute is not None else {}),
            **({"sms": acc.sms} if acc.sms is not None else {}),
        },
        spec=spec.model_dump(mode="json", by_alias=True),
    )
    apply_faults(g, spec, source=source)
    check_connected(g, source=source)
    return g
