"""Servers: the devices and links inside one node, for each node kind.

* ``nvswitch`` (DGX/HGX): every GPU ``n<k>.g<i>`` has one link of ``nvlink_bandwidth`` per
  direction to ``n<k>.nvsw``, which stands for all NVSwitch chips of the server together (the
  NVSwitch fabric is non-blocking, so one switch with per-GPU links has the same capacity).
  Each GPU reaches the host ``n<k>`` through its own PCIe switch ``n<k>.pcie<i>``.
* ``hccs`` (Atlas 800): NPUs in groups of ``group_size``; inside a group every pair of NPUs has
  a direct HCCS link.  Group ``g`` hangs off PCIe switch ``n<k>.pcie<g>`` (one PCIe link per
  NPU); group switches are joined pairwise by an inter-group PCIe link, so traffic between
  groups shares that link (the Atlas 800 9000's bottleneck); the host attaches to every group
  switch.
* ``pcie``: accelerators under PCIe switches ``n<k>.pcie<j>``, switches joined pairwise
  (through the root complex), host attached to every switch.

Hop counts are chosen so that even a router that ignores the forwarding rule of
:mod:`netsim.topology.model` (plain shortest paths inside a server) takes the intended path:
GPU to GPU over NVLink is 2 hops while through the host it is 4, and the PXN relay
``g1 -> nvsw -> g0 -> nic0`` is 3 hops against 5 through the host; across HCCS groups the
inter-group PCIe link (3 hops) beats the host (4).

Rail NICs: ``n<k>.nic<i>`` is linked to ``n<k>.g<i>`` by PCIe (``attach: pcie``) or by an
on-chip port (``attach: integrated``, class ``generic``, capacity = port speed).  Host NICs
``n<k>.hnic<j>`` hang off the host by PCIe and connect to the front-end.  NICs are built only
where there is a network to plug them into: rail NICs with a back-end, host NICs with a
front-end (``--set frontend=null`` removes the host NICs too).
"""

from __future__ import annotations

from netsim.config.topology import (
    HCCSNodeSpec,
    HostNicSpec,
    NicSpec,
    NVSwitchNodeSpec,
    PCIeNodeSpec,
    TemplatedTopologySpec,
)
from netsim.topology.builder import GraphBuilder
from netsim.topology.model import accelerator_name, host_name, host_nic_name, nic_name, nvswitch_name, pcie_switch_name


def add_servers(b: GraphBuilder, spec: TemplatedTopologySpec, *, nic_planes: bool) -> None:
    """Add ``spec.num_nodes`` servers to ``b``.

    Args:
        b: the graph being built.
        spec: the validated templated spec.
        nic_planes: rail NIC ``i`` belongs to plane ``i`` (multi-plane back-ends).
    """
    for k in range(spec.num_nodes):
        _add_server(b, spec, k, nic_planes=nic_planes)


def _add_server(b: GraphBuilder, spec: TemplatedTopologySpec, k: int, *, nic_planes: bool) -> None:
    ns = spec.node
    nic = ns.nic if spec.backend is not None else None  # NICs only where they plug into a network
    host = b.device(host_name(k), kind="host", role="host", network="node", node=k)
    accs = [
        b.device(
            accelerator_name(k, i),
            kind="accelerator",
            role=spec.accelerator.role,
            network="node",
            node=k,
            index=i,
            rail=i if nic is not None else -1,
            nic=nic_name(k, i) if nic is not None else "",
        )
        for i in range(ns.accelerators)
    ]

    if isinstance(ns, NVSwitchNodeSpec):
        _nvswitch_links(b, ns, k, host, accs)
    elif isinstance(ns, HCCSNodeSpec | PCIeNodeSpec):
        _switch_group_links(b, ns, k, host, accs)
    else:  # pragma: no cover - the spec union is closed
        raise AssertionError(f"unknown node kind {ns!r}")
    if nic is not None:
        _rail_nics(b, nic, k, accs, nic_planes=nic_planes)
    if ns.host_nics is not None and spec.frontend is not None:
        _host_nics(b, ns.host_nics, k, host)


def _nvswitch_links(b: GraphBuilder, ns: NVSwitchNodeSpec, k: int, host: str, accs: list[str]) -> None:
    """Every GPU to the NVSwitch by NVLink and to the host through its own PCIe switch."""
    sw = b.device(
        nvswitch_name(k), kind="switch", role="nvswitch", network="node", node=k, latency_s=ns.nvswitch_latency
    )
    for i, a in enumerate(accs):
        b.cable(
            a,
            sw,
            capacity_Bps=ns.nvlink_bandwidth,
            latency_s=ns.nvlink_latency,
            link_class="nvlink",
            network="node",
            tier="nvlink",
        )
        _pcie_switch(b, ns, k, i, host, [a])


def _pcie_switch(
    b: GraphBuilder,
    ns: NVSwitchNodeSpec | HCCSNodeSpec | PCIeNodeSpec,
    k: int,
    index: int,
    host: str,
    accs: list[str],
    *,
    host_last: bool = False,
) -> str:
    """PCIe switch ``index`` of server ``k`` with ``accs`` below it and the host above it (the
    host's cable is left to the caller when ``host_last``, so that it follows other links)."""
    ps = b.device(
        pcie_switch_name(k, index),
        kind="switch",
        role="pcie-switch",
        network="node",
        node=k,
        index=index,
        latency_s=ns.pcie_switch_latency,
    )
    for a in accs:
        b.cable(
            a,
            ps,
            capacity_Bps=ns.pcie_bandwidth,
            latency_s=ns.pcie_latency,
            link_class="pcie",
            network="node",
            tier="gpu-pcie",
        )
    if not host_last:
        _host_cable(b, ns, host, ps)
    return ps


def _host_cable(b: GraphBuilder, ns: NVSwitchNodeSpec | HCCSNodeSpec | PCIeNodeSpec, host: str, ps: str) -> None:
    b.cable(
        host,
        ps,
        capacity_Bps=ns.host_bandwidth or ns.pcie_bandwidth,
        latency_s=ns.pcie_latency,
        link_class="pcie",
        network="node",
        tier="host-pcie",
    )


def _switch_group_links(b: GraphBuilder, ns: HCCSNodeSpec | PCIeNodeSpec, k: int, host: str, accs: list[str]) -> None:
    """Accelerators in groups under PCIe switches (HCCS: a direct link between every pair of a
    group), the host on every switch, switches joined pairwise."""
    size = ns.group_size if isinstance(ns, HCCSNodeSpec) else ns.accelerators_per_switch
    between = ns.inter_group_bandwidth if isinstance(ns, HCCSNodeSpec) else ns.inter_switch_bandwidth
    switches = []
    for g in range(ns.accelerators // size):
        group = accs[g * size : (g + 1) * size]
        sw = _pcie_switch(b, ns, k, g, host, group, host_last=isinstance(ns, HCCSNodeSpec))
        switches.append(sw)
        if isinstance(ns, HCCSNodeSpec):
            for i, a in enumerate(group):
                for c in group[i + 1 :]:
                    b.cable(
                        a,
                        c,
                        capacity_Bps=ns.hccs_bandwidth,
                        latency_s=ns.hccs_latency,
                        link_class="hccs",
                        network="node",
                        tier="hccs",
                    )
            _host_cable(b, ns, host, sw)
    for i, s in enumerate(switches):
        for t in switches[i + 1 :]:
            b.cable(
                s,
                t,
                capacity_Bps=between or ns.pcie_bandwidth,
                latency_s=ns.pcie_latency,
                link_class="pcie",
                network="node",
                tier="pcie-pcie",
            )


def _rail_nics(b: GraphBuilder, nic: NicSpec, k: int, accs: list[str], *, nic_planes: bool) -> None:
    """Rail NIC ``i`` of every accelerator ``i``: by PCIe, or an on-chip port (``integrated``)."""
    integrated = nic.attach == "integrated"
    for i, a in enumerate(accs):
        n = b.device(
            nic_name(k, i),
            kind="nic",
            role="rail-nic",
            network="backend",
            node=k,
            index=i,
            latency_s=nic.latency,
            rail=i,
            plane=i if nic_planes else -1,
        )
        b.cable(
            a,
            n,
            capacity_Bps=nic.bandwidth if integrated else (nic.pcie_bandwidth or nic.bandwidth),
            latency_s=nic.pcie_latency,
            link_class="generic" if integrated else "pcie",
            network="node",
            tier="gpu-nic",
        )


def _host_nics(b: GraphBuilder, h: HostNicSpec, k: int, host: str) -> None:
    """The host's front-end NICs, by PCIe."""
    for j in range(h.count):
        n = b.device(
            host_nic_name(k, j), kind="nic", role="host-nic", network="frontend", node=k, index=j, latency_s=h.latency
        )
        b.cable(
            host,
            n,
            capacity_Bps=h.pcie_bandwidth or h.bandwidth,
            latency_s=h.pcie_latency,
            link_class="pcie",
            network="node",
            tier="host-nic",
        )
