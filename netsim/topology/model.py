"""The topology data model: a directed networkx graph with typed node and edge attributes.

Every builder (presets, fabrics, explicit YAML graphs) produces a :class:`networkx.DiGraph`
following this contract, and everything downstream (routing, the flow engine, collectives,
reports) reads only these attributes.

Nodes (``G.nodes[name]``):

============  ==========================================================================
attribute     meaning
============  ==========================================================================
kind          one of :data:`NODE_KINDS`: ``accelerator`` (GPU/NPU), ``nic``, ``host``,
              ``switch`` (NVSwitch, PCIe switch, leaf/spine/core, Ethernet), ``storage``
role          finer role, e.g. ``gpu``/``npu``, ``rail-nic``/``host-nic``, ``nvswitch``,
              ``pcie-switch``, ``leaf``, ``spine``, ``core``, ``fe-leaf``, ``fe-spine``
node          server index (int) for devices inside a server, ``-1`` for fabric devices
index         local index inside the server (GPU 3 -> 3, NIC 5 -> 5), ``-1`` otherwise
network       ``node`` (inside a server), ``backend`` or ``frontend``
latency_s     forwarding / processing latency of the device in seconds (0 for endpoints)
rail          for NICs and accelerators: the rail (NIC index) they belong to, else -1
plane         for multi-plane fabrics: the plane a switch or NIC belongs to, else -1
nic           for accelerators: the name of the NIC it sends inter-node traffic through
tier          0 inside a server, 1 leaf, 2 spine, 3 core (fabric switches)
============  ==========================================================================

Device names (a contract): accelerators ``n<node>.g<index>``, their NICs
``n<node>.nic<index>``, hosts ``n<node>``, host NICs ``n<node>.hnic<index>``, the NVSwitch
fabric of a node ``n<node>.nvsw``, PCIe switches inside a node ``n<node>.pcie<j>``; fabric
switches ``leaf<i>``, ``spine<i>``, ``core<i>`` (prefixed ``p<plane>.`` or ``r<rail>.`` where
relevant), front-end ``fe.leaf<i>`` and ``fe.spine<i>``, storage ``storage<i>`` (front-end) and
``bstorage<i>`` (attached to the back-end).

Forwarding (what a route may pass through): switches and NICs forward traffic; hosts and
storage targets never do; an accelerator is an endpoint, except that a routing strategy may
relay through it on purpose (PXN: over the node fabric to the accelerator on the destination's
rail, then out of its NIC).  Multi-plane fabrics need that relay for traffic between NICs of
different planes.  With this rule the front-end is never a detour for back-end traffic (it is
reached only through hosts) and, inside an NVSwitch server, the only accelerator-to-accelerator
path is NVLink (the PCIe links to the host do not forward).  The built-in server kinds are
also wired so that plain hop-count shortest paths inside a server already obey the rule (a
detour through the host is always strictly longer).  Parallel cables between two devices are
merged into one edge whose capacity is their sum.

Edges (``G.edges[u, v]``), one per direction of every cable:

=============  =========================================================================
attribute      meaning
=============  =========================================================================
capacity_Bps   capacity of this direction in bytes per second (> 0)
latency_s      propagation + serialisation latency of the link in seconds (>= 0)
link_class     one of :data:`LINK_CLASSES`
network        ``node``, ``backend`` or ``frontend``
tier           a readable tier label, e.g. ``nvlink``, ``gpu-nic``, ``nic-leaf``,
               ``leaf-spine``, ``spine-core``, ``fe-host``, ``fe-leaf-spine``, ``storage``
cost           optional routing cost (> 0); routes take least-cost paths; absent: 100 Gb/s
               over the capacity (:mod:`netsim.network.fabric`)
=============  =========================================================================

Graph attributes (``G.graph``): ``name`` (preset or file), ``num_nodes`` (servers),
``accelerators_per_node``, ``accelerator`` (a dict: ``name``, ``role`` (gpu/npu), ``peak_flops``
{dtype: FLOP/s}, ``memory_Bps``, ``memory_bytes``), and ``spec`` (the resolved spec as a plain
dict, quantities in SI units).
"""

from __future__ import annotations

from typing import Final

NODE_KINDS: Final = ("accelerator", "nic", "host", "switch", "storage")
LINK_CLASSES: Final = ("nvlink", "hccs", "pcie", "ib", "roce", "ethernet", "generic")
NETWORKS: Final = ("node", "backend", "frontend")


def accelerator_name(node: int, index: int) -> str:
    """``n3.g7``: accelerator 7 of server 3."""
    return f"n{node}.g{index}"


def nic_name(node: int, index: int) -> str:
    """``n3.nic7``: back-end NIC 7 of server 3 (rail 7)."""
    return f"n{node}.nic{index}"


def host_name(node: int) -> str:
    """``n3``: the host (CPU side) of server 3."""
    return f"n{node}"


def host_nic_name(node: int, index: int) -> str:
    """``n3.hnic1``: front-end (host) NIC 1 of server 3."""
    return f"n{node}.hnic{index}"


def nvswitch_name(node: int) -> str:
    """``n3.nvsw``: the NVSwitch fabric of server 3 (all its NVSwitch chips as one switch)."""
    return f"n{node}.nvsw"


def pcie_switch_name(node: int, index: int) -> str:
    """``n3.pcie1``: PCIe switch 1 of server 3."""
    return f"n{node}.pcie{index}"


def link_name(src: str, dst: str) -> str:
    """The readable id of the directed link ``src -> dst`` used in result tables."""
    return f"{src}->{dst}"
