"""Switch fabrics: the back-end (compute) fabric over the rail NICs and the front-end network.

Back-end fabrics (``backend.fabric``):

* ``single-switch``: every rail NIC on ``leaf0``.
* ``leaf-spine``: servers in groups of ``nodes_per_leaf``; all NICs of a group on ``leaf<j>``;
  every leaf linked to every spine ``spine<s>``.
* ``rail-optimized``: NIC ``i`` of each server of group ``j`` on rail ``i``'s leaf
  ``r<i>.leaf<j>``; spines ``spine<s>`` join all leaves (so also the rails).
* ``multi-plane``: one independent leaf-spine per NIC index (plane ``p``: ``p<p>.leaf<j>``,
  ``p<p>.spine<s>``); no link joins two planes.
* ``fat-tree``: leaves as in leaf-spine, grouped ``leaves_per_pod`` per pod; each pod has its
  own spines ``spine<pod * spines_per_pod + s>``; spine ``s`` of every pod links to core group
  ``s`` (``cores / spines_per_pod`` cores ``core<c>``).

Oversubscription: a switch's *down* capacity is the sum of its links from below (NICs,
storage, lower switches).  Its *up* capacity is ``down / oversubscription``, split equally
over the switches above it; several cables between the same two switches are one edge of
their total capacity.  Every switch of a tier is cabled as the fullest one: a partly filled
last leaf (or pod) keeps a full leaf's uplinks, as a built scalable unit does, rather than
uplinks thinned to its few servers.  The default number of spines is the number of uplink
ports of the fullest leaf, ``ceil(downlink ports / oversubscription)``, i.e. one uplink
cable per spine.
A tier above a single switch would carry no traffic, so it is left out (a 4-server cluster
under one leaf has no spines, a one-pod fat-tree no cores) unless its size is set
explicitly (``spines``, ``cores``) or storage attaches to it.

Storage targets attach round-robin to the switches of one tier (in every plane for
multi-plane fabrics), before that tier's uplinks are sized, so they count as downlinks.

Front-end (``frontend.fabric``): Ethernet ``single-switch`` (``fe.leaf0``) or ``leaf-spine``
(host NICs of ``hosts_per_leaf`` servers on ``fe.leaf<j>``, spines ``fe.spine<s>``), with
storage targets ``storage<i>``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from netsim.config.topology import (
    BackendStorageSpec,
    FatTreeFabricSpec,
    FrontendStorageSpec,
    LeafSpineFabricSpec,
    LeafSpineFrontendSpec,
    MultiPlaneFabricSpec,
    RailOptimizedFabricSpec,
    SingleSwitchFabricSpec,
    SingleSwitchFrontendSpec,
    TemplatedTopologySpec,
)
from netsim.topology.builder import GraphBuilder
from netsim.topology.model import host_nic_name, nic_name


class _Fabric:
    """Adds switches and links of one network and tracks each switch's downlink capacity."""

    def __init__(
        self, b: GraphBuilder, *, network: str, link_class: str, link_latency_s: float, switch_latency_s: float
    ) -> None:
        self.b = b
        self.network = network
        self.link_class = link_class
        self.link_latency_s = link_latency_s
        self.switch_latency_s = switch_latency_s
        self.down_Bps: dict[str, float] = {}
        self.down_ports: dict[str, int] = {}
        self.storage_Bps: dict[str, float] = {}

    def switch(self, name: str, *, role: str, tier: int, index: int, rail: int = -1, plane: int = -1) -> str:
        self.b.device(
            name,
            kind="switch",
            role=role,
            network=self.network,
            index=index,
            latency_s=self.switch_latency_s,
            rail=rail,
            plane=plane,
            tier=tier,
        )
        self.down_Bps[name] = 0.0
        self.down_ports[name] = 0
        return name

    def attach(
        self, below: str, switch: str, capacity_Bps: float, *, tier: str, latency_s: float | None = None
    ) -> None:
        """A cable from a device below ``switch`` (NIC, storage, lower switch) up to it."""
        self.b.cable(
            below,
            switch,
            capacity_Bps=capacity_Bps,
            latency_s=self.link_latency_s if latency_s is None else latency_s,
            link_class=self.link_class,
            network=self.network,
            tier=tier,
        )
        self.down_Bps[switch] += capacity_Bps
        self.down_ports[switch] += 1
        if tier == "storage":
            self.storage_Bps[switch] = self.storage_Bps.get(switch, 0.0) + capacity_Bps

    def fabric_Bps(self, switches: Sequence[str]) -> float:
        """Down capacity of the fullest of ``switches`` from the fabric alone (storage targets
        left out): the cabling a switch of their tier is designed for."""
        return max(self.down_Bps[s] - self.storage_Bps.get(s, 0.0) for s in switches)

    def uplinks(
        self,
        lower: Sequence[str],
        upper: Sequence[str],
        oversubscription: float,
        *,
        tier: str,
        design_Bps: float | None = None,
    ) -> None:
        """Link every ``lower`` switch to every ``upper`` one with the cables of a full switch.

        Up capacity = ``(design_Bps + own storage) / oversubscription``, split over ``upper``,
        for every switch that has something below it.  ``design_Bps`` (default: the fullest
        ``lower`` switch's fabric downlinks, :meth:`fabric_Bps`) is what a switch of the tier
        is cabled for: a partly filled last leaf keeps a full leaf's uplink cables, as in a
        built fabric, instead of thinning them to its own servers (which capped one flow
        through it at a fraction of a NIC)."""
        full_Bps = self.fabric_Bps(lower) if design_Bps is None else design_Bps
        for s in lower:
            if self.down_Bps[s] <= 0:
                continue  # a switch with nothing below it needs no uplinks
            each_Bps = (full_Bps + self.storage_Bps.get(s, 0.0)) / oversubscription / len(upper)
            for u in upper:
                self.attach(s, u, each_Bps, tier=tier)

    def upper_tier(
        self,
        lower: Sequence[str],
        count: int | None,
        oversubscription: float,
        *,
        storage_here: bool,
        name: str,
        role: str,
        tier: int,
        plane: int = -1,
        link_tier: str,
    ) -> list[str]:
        """Add the tier above ``lower`` (``count`` switches, default one per uplink port of the
        fullest lower switch) and its uplinks; nothing if it would sit above a single switch."""
        if len(lower) <= 1 and count is None and not storage_here:
            return []
        n = count or self.uplink_ports(lower, oversubscription)
        upper = [self.switch(name.format(i=i), role=role, tier=tier, index=i, plane=plane) for i in range(n)]
        self.uplinks(lower, upper, oversubscription, tier=link_tier)
        return upper

    def uplink_ports(self, switches: Sequence[str], oversubscription: float) -> int:
        """Uplink ports of the fullest switch: ``ceil(downlink ports / oversubscription)``."""
        return max(1, max(math.ceil(self.down_ports[s] / oversubscription - 1e-9) for s in switches))


def _groups(n: int, size: int) -> list[range]:
    """``range(n)`` cut into consecutive groups of ``size`` (the last may be shorter)."""
    return [range(start, min(start + size, n)) for start in range(0, n, size)]


def add_backend(b: GraphBuilder, spec: TemplatedTopologySpec) -> None:
    """Add the back-end fabric of ``spec`` (which must have rail NICs) to ``b``."""
    be = spec.backend
    nic = spec.node.nic
    if be is None or nic is None:
        return
    n_nodes, rails, nic_Bps = spec.num_nodes, spec.node.accelerators, nic.bandwidth
    fab = _Fabric(
        b,
        network="backend",
        link_class=be.link_class,
        link_latency_s=be.link_latency,
        switch_latency_s=be.switch_latency,
    )
    # per plane (one entry unless multi-plane): the switches of each tier, for storage
    planes: list[dict[str, list[str]]] = []
    if isinstance(be, SingleSwitchFabricSpec):
        leaf = fab.switch("leaf0", role="leaf", tier=1, index=0)
        for k in range(n_nodes):
            for i in range(rails):
                fab.attach(nic_name(k, i), leaf, nic_Bps, tier="nic-leaf")
        planes.append({"leaf": [leaf]})
        _backend_storage(fab, be.storage, planes, "leaf")
    elif isinstance(be, LeafSpineFabricSpec | FatTreeFabricSpec):
        _leaf_spine_or_fat_tree(fab, be, n_nodes, rails, nic_Bps, planes)
    elif isinstance(be, RailOptimizedFabricSpec):
        _rail_optimized(fab, be, n_nodes, rails, nic_Bps, planes)
    elif isinstance(be, MultiPlaneFabricSpec):
        _multi_plane(fab, be, n_nodes, rails, nic_Bps, planes)
    else:  # pragma: no cover - the spec union is closed
        raise AssertionError(f"unknown fabric {be!r}")


def _leaf_spine_or_fat_tree(
    fab: _Fabric,
    be: LeafSpineFabricSpec | FatTreeFabricSpec,
    n_nodes: int,
    rails: int,
    nic_Bps: float,
    planes: list[dict[str, list[str]]],
) -> None:
    """Leaves with every NIC of their servers, then a spine tier (leaf-spine) or the fat tree's
    upper tiers."""
    leaves = []
    for j, group in enumerate(_groups(n_nodes, be.nodes_per_leaf)):
        leaf = fab.switch(f"leaf{j}", role="leaf", tier=1, index=j)
        leaves.append(leaf)
        for k in group:
            for i in range(rails):
                fab.attach(nic_name(k, i), leaf, nic_Bps, tier="nic-leaf")
    planes.append({"leaf": leaves})
    _backend_storage(fab, be.storage, planes, "leaf")
    if isinstance(be, LeafSpineFabricSpec):
        planes[0]["spine"] = fab.upper_tier(
            leaves,
            be.spines,
            be.oversubscription,
            storage_here=_at(be.storage, "spine"),
            name="spine{i}",
            role="spine",
            tier=2,
            link_tier="leaf-spine",
        )
        _backend_storage(fab, be.storage, planes, "spine")
    else:
        _fat_tree_upper(fab, be, leaves, planes)


def _rail_optimized(
    fab: _Fabric,
    be: RailOptimizedFabricSpec,
    n_nodes: int,
    rails: int,
    nic_Bps: float,
    planes: list[dict[str, list[str]]],
) -> None:
    """One leaf per rail and server group (rail ``r`` of every server on leaf ``r``), one spine tier."""
    leaves = []
    for j, group in enumerate(_groups(n_nodes, be.nodes_per_leaf)):
        for r in range(rails):
            leaf = fab.switch(f"r{r}.leaf{j}", role="leaf", tier=1, index=j, rail=r)
            leaves.append(leaf)
            for k in group:
                fab.attach(nic_name(k, r), leaf, nic_Bps, tier="nic-leaf")
    planes.append({"leaf": leaves})
    _backend_storage(fab, be.storage, planes, "leaf")
    planes[0]["spine"] = fab.upper_tier(
        leaves,
        be.spines,
        be.oversubscription,
        storage_here=_at(be.storage, "spine"),
        name="spine{i}",
        role="spine",
        tier=2,
        link_tier="leaf-spine",
    )
    _backend_storage(fab, be.storage, planes, "spine")


def _multi_plane(
    fab: _Fabric, be: MultiPlaneFabricSpec, n_nodes: int, rails: int, nic_Bps: float, planes: list[dict[str, list[str]]]
) -> None:
    """One separate leaf-spine plane per rail (NIC ``p`` of every server in plane ``p``)."""
    groups = _groups(n_nodes, be.nodes_per_leaf)
    for p in range(rails):
        leaves = []
        for j, group in enumerate(groups):
            leaf = fab.switch(f"p{p}.leaf{j}", role="leaf", tier=1, index=j, plane=p)
            leaves.append(leaf)
            for k in group:
                fab.attach(nic_name(k, p), leaf, nic_Bps, tier="nic-leaf")
        planes.append({"leaf": leaves})
    _backend_storage(fab, be.storage, planes, "leaf")
    for p, plane in enumerate(planes):
        plane["spine"] = fab.upper_tier(
            plane["leaf"],
            be.spines,
            be.oversubscription,
            storage_here=_at(be.storage, "spine"),
            name=f"p{p}.spine{{i}}",
            role="spine",
            tier=2,
            plane=p,
            link_tier="leaf-spine",
        )
    _backend_storage(fab, be.storage, planes, "spine")


def _fat_tree_upper(fab: _Fabric, be: FatTreeFabricSpec, leaves: list[str], planes: list[dict[str, list[str]]]) -> None:
    pods = [[leaves[j] for j in r] for r in _groups(len(leaves), be.leaves_per_pod)]
    spines_here = _at(be.storage, "spine") or _at(be.storage, "core")
    if len(leaves) <= 1 and be.spines_per_pod is None and be.cores is None and not spines_here:
        planes[0]["spine"] = planes[0]["core"] = []
        return
    per_pod = be.spines_per_pod or fab.uplink_ports(leaves, be.oversubscription)
    leaf_Bps = fab.fabric_Bps(leaves)
    pod_spines: list[list[str]] = []
    for pod, pod_leaves in enumerate(pods):
        spines = [
            fab.switch(f"spine{pod * per_pod + s}", role="spine", tier=2, index=pod * per_pod + s)
            for s in range(per_pod)
        ]
        fab.uplinks(pod_leaves, spines, be.oversubscription, tier="leaf-spine", design_Bps=leaf_Bps)
        pod_spines.append(spines)
    planes[0]["spine"] = [s for spines in pod_spines for s in spines]
    _backend_storage(fab, be.storage, planes, "spine")
    planes[0]["core"] = []
    if len(pods) <= 1 and be.cores is None and not _at(be.storage, "core"):
        return
    n_cores = be.cores or per_pod
    per_group = n_cores // per_pod
    cores = [fab.switch(f"core{c}", role="core", tier=3, index=c) for c in range(n_cores)]
    spine_Bps = fab.fabric_Bps([spine for spines in pod_spines for spine in spines])
    for spines in pod_spines:
        for s, spine in enumerate(spines):
            fab.uplinks(
                [spine],
                cores[s * per_group : (s + 1) * per_group],
                be.core_oversubscription,
                tier="spine-core",
                design_Bps=spine_Bps,
            )
    planes[0]["core"] = cores
    _backend_storage(fab, be.storage, planes, "core")


def _at(storage: BackendStorageSpec | None, tier: str) -> bool:
    return storage is not None and storage.attach == tier


def _backend_storage(
    fab: _Fabric, storage: BackendStorageSpec | None, planes: list[dict[str, list[str]]], tier: str
) -> None:
    """Attach ``bstorage<i>`` to switch ``i mod n`` of ``tier`` (in every plane) if asked to."""
    if storage is None or storage.attach != tier:
        return
    for i in range(storage.count):
        name = fab.b.device(f"bstorage{i}", kind="storage", role="storage", network="backend", index=i)
        for plane in planes:
            switches = plane[tier]
            fab.attach(name, switches[i % len(switches)], storage.bandwidth, tier="storage", latency_s=storage.latency)


def add_frontend(b: GraphBuilder, spec: TemplatedTopologySpec) -> None:
    """Add the Ethernet front-end joining host NICs and storage targets, if the spec has one."""
    fe = spec.frontend
    hn = spec.node.host_nics
    if fe is None or hn is None:
        return
    fab = _Fabric(
        b, network="frontend", link_class="ethernet", link_latency_s=fe.link_latency, switch_latency_s=fe.switch_latency
    )
    hosts_per_leaf = spec.num_nodes if isinstance(fe, SingleSwitchFrontendSpec) else fe.hosts_per_leaf
    leaves = []
    for j, group in enumerate(_groups(spec.num_nodes, hosts_per_leaf)):
        leaf = fab.switch(f"fe.leaf{j}", role="fe-leaf", tier=1, index=j)
        leaves.append(leaf)
        for k in group:
            for h in range(hn.count):
                fab.attach(host_nic_name(k, h), leaf, hn.bandwidth, tier="fe-host")
    storage: list[str] = []
    if fe.storage is not None:
        storage = [
            b.device(f"storage{i}", kind="storage", role="storage", network="frontend", index=i)
            for i in range(fe.storage.count)
        ]
        if fe.storage.attach == "leaf":
            _frontend_storage(fab, fe.storage, storage, leaves)
    if isinstance(fe, LeafSpineFrontendSpec):
        on_spines = fe.storage is not None and fe.storage.attach == "spine"
        spines = fab.upper_tier(
            leaves,
            fe.spines,
            fe.oversubscription,
            storage_here=on_spines,
            name="fe.spine{i}",
            role="fe-spine",
            tier=2,
            link_tier="fe-leaf-spine",
        )
        if fe.storage is not None and on_spines:
            _frontend_storage(fab, fe.storage, storage, spines)


def _frontend_storage(fab: _Fabric, st: FrontendStorageSpec, names: list[str], switches: list[str]) -> None:
    for i, name in enumerate(names):
        fab.attach(name, switches[i % len(switches)], st.bandwidth, tier="storage", latency_s=st.latency)
