"""What NCCL's topology detection and search would find for a group of devices.

NCCL builds its tuner inputs from the machine it runs on: how many ranks and nodes, the GPU
architecture, how GPUs of a node are joined (NVLink or PCIe), the NICs, and, per algorithm,
a *channel graph*: how many channels (rings or trees, one thread block each) and how much
bandwidth each channel gets (``ncclTopoCompute`` in ``src/graph/search.cc``).  This module
derives the same from a netsim topology graph and the topology's ``collectives`` settings,
with a simplified search that follows NCCL's rules:

* the *intra-node bandwidth* of a GPU is what its links to the other GPUs carry at the
  achieved efficiency of their class (NVSwitch: its NVLink port; a direct mesh: the sum of its
  GPU-to-GPU links; otherwise its PCIe link); the *inter-node bandwidth* is one NIC's at its
  class's efficiency, and a group uses as many NICs per node as it has GPUs there;
* the search tries NCCL's per-channel speeds from the highest one a path allows, keeps the
  first speed that gives the most total bandwidth (channels x speed, channels limited by the
  GPU's bandwidth and, across nodes, by the NICs), and stops when the next speed is below
  0.49x the best one; then it doubles the channels at half the speed when the speed is
  high (``ncclTopoDupChannels``);
* the communicator's channel count is twice the graph's (``ncclTopoPostset``), doubled again
  on Hopper across nodes when the speed is above 45 GB/s and there are fewer than 16;
* NVLS uses one channel per GPU of the node at the highest speed the NVLink port holds for
  all of them, and 16 communicator channels on Hopper (``NVLS_NCHANNELS_SM90``).

The result is an :class:`~netsim.collectives.nccl.tuner.NcclSystem`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import networkx as nx

from netsim.collectives.nccl.constants import ARCHES, NcclConstants
from netsim.collectives.nccl.tuner import ChannelGraph, NcclSystem
from netsim.collectives.plan import CollectiveError, TopologyView

__all__ = ["GroupShape", "group_shape", "nccl_system", "ring_total_bw", "search_channels"]

_NVLS_CHANNELS = {"hopper": 16, "blackwell": 32}
_GPU_LINK_CLASSES = ("nvlink", "hccs")


@dataclass(frozen=True)
class GroupShape:
    """The facts about a group of devices the tuner needs.

    Attributes:
        n_ranks, n_nodes: group size and servers.
        ranks_per_node: the largest number of the group's devices on one server.
        intra_hw: ``nvlink`` (NVSwitch or GPU-to-GPU links) or ``pcie``.
        intra_bw_GBps: achieved intra-node bandwidth of one GPU (GB/s per direction).
        link_bw_GBps: achieved bandwidth of one GPU-to-GPU link (a mesh), or the port
            (NVSwitch / PCIe).
        nics_per_node: distinct NICs the group's devices of one server send through.
        nic_bw_GBps: achieved bandwidth of one NIC (0 if the group is on one server).
        nvswitch: the servers have an NVSwitch.
        full_mesh: every GPU of a server links directly to every other GPU of the group there.
        uniform: every server holds the same number of the group's devices (what hierarchical
            algorithms need).
    """

    n_ranks: int
    n_nodes: int
    ranks_per_node: int
    intra_hw: str
    intra_bw_GBps: float
    link_bw_GBps: float
    nics_per_node: int
    nic_bw_GBps: float
    nvswitch: bool
    full_mesh: bool = False
    uniform: bool = True


def _efficiency(eff: Mapping[str, float], cls: str) -> float:
    return float(eff.get(cls, 1.0))


def group_shape(graph: nx.DiGraph, devices: Sequence[str], efficiency: Mapping[str, float]) -> GroupShape:
    """Read the :class:`GroupShape` of ``devices`` from ``graph`` (links at the achieved
    ``efficiency`` of their class)."""
    view = TopologyView.from_graph(graph, devices)
    groups = view.node_groups(devices)
    n_nodes = len(groups)
    per = max(len(g) for g in groups)
    first = devices[groups[0][0]]
    nvsw = 0.0
    mesh: list[float] = []
    peers: set[str] = set()
    pcie = 0.0
    for _, v, a in graph.out_edges(first, data=True):
        cls = str(a.get("link_class", "generic"))
        cap = float(a["capacity_Bps"]) * _efficiency(efficiency, cls) / 1e9
        kind = graph.nodes[v].get("kind")
        role = graph.nodes[v].get("role")
        if kind == "switch" and role == "nvswitch":
            nvsw += cap
        elif kind == "accelerator" and cls in _GPU_LINK_CLASSES:
            mesh.append(cap)
            peers.add(str(v))
        elif kind == "switch" and cls == "pcie":
            pcie = max(pcie, cap)
    if nvsw > 0:
        intra_hw, intra_bw, link_bw = "nvlink", nvsw, nvsw
    elif mesh:
        intra_hw, intra_bw, link_bw = "nvlink", sum(mesh), max(mesh)
    else:
        intra_hw, intra_bw, link_bw = "pcie", pcie, pcie
    nic_bw = 0.0
    nics: set[str] = set()
    if n_nodes > 1:
        for r in groups[0]:
            nic = _nic_of(graph, devices[r])
            if nic is not None:
                nics.add(nic)
        for nic in sorted(nics):
            for _, _v, a in graph.out_edges(nic, data=True):
                if a.get("network") == "backend":
                    cls = str(a.get("link_class", "generic"))
                    nic_bw = max(nic_bw, float(a["capacity_Bps"]) * _efficiency(efficiency, cls) / 1e9)
        if not nics or nic_bw <= 0:
            raise CollectiveError(
                f"the group spans {n_nodes} servers but {first!r} has no back-end NIC", field="devices"
            )
    return GroupShape(
        n_ranks=len(devices),
        n_nodes=n_nodes,
        ranks_per_node=per,
        intra_hw=intra_hw,
        intra_bw_GBps=intra_bw,
        link_bw_GBps=link_bw,
        nics_per_node=max(len(nics), 1 if n_nodes > 1 else 0),
        nic_bw_GBps=nic_bw,
        nvswitch=nvsw > 0,
        full_mesh=per > 1 and {devices[r] for r in groups[0][1:]} <= peers,
        uniform=len({len(g) for g in groups}) == 1,
    )


def _nic_of(graph: nx.DiGraph, device: str) -> str | None:
    name = graph.nodes[device].get("nic")
    if name and name in graph:
        return str(name)
    for _, v in graph.out_edges(device):
        if graph.nodes[v].get("kind") == "nic" and graph.nodes[v].get("network") == "backend":
            return str(v)
    return None


def _speeds(c: NcclConstants, kind: str, arch: str) -> list[float]:
    table = c.get("search_speeds_GBps", kind)
    return [float(x) for x in table.get(arch, table["default"])]


def ring_total_bw(shape: GroupShape) -> float:
    """What a ring's channels together get from the hardware: a GPU's intra-node bandwidth (of
    which across nodes ``(ppn-1)/ppn`` per channel) and the node's NICs."""
    per_gpu = shape.intra_bw_GBps if shape.ranks_per_node > 1 else math.inf
    if shape.n_nodes <= 1:
        return per_gpu
    share = (shape.ranks_per_node - 1) / shape.ranks_per_node
    intra = per_gpu / share if share > 0 else math.inf
    return min(intra, shape.nics_per_node * shape.nic_bw_GBps)


def search_channels(c: NcclConstants, shape: GroupShape, arch: str, *, max_channels: int = 32) -> ChannelGraph:
    """The ring/tree channel graph NCCL's search would find (module doc)."""
    inter = shape.n_nodes > 1
    speeds = _speeds(c, "inter" if inter else "intra", arch)
    per_gpu = shape.intra_bw_GBps if shape.ranks_per_node > 1 else math.inf
    max_bw = min(shape.nic_bw_GBps, per_gpu) if inter else shape.link_bw_GBps

    # a ring channel crosses every GPU of the node once; across nodes, the node's last GPU of
    # the channel sends to a NIC instead of over the intra-node fabric
    share = (shape.ranks_per_node - 1) / shape.ranks_per_node if inter else 1.0

    def channels(s: float) -> int:
        n = math.floor(per_gpu / (s * share) + 1e-9) if math.isfinite(per_gpu) and share > 0 else max_channels
        if inter:
            n = min(n, shape.nics_per_node * math.floor(shape.nic_bw_GBps / s + 1e-9))
        return max(0, min(n, max_channels))

    i = 0
    while i < len(speeds) - 1 and speeds[i] > max_bw + 1e-9:
        i += 1
    best_n, best_s = channels(speeds[i]), speeds[i]
    first = best_s
    j = i + 1
    while j < len(speeds) and speeds[j] / first > 0.49:
        n = channels(speeds[j])
        if n * speeds[j] > best_n * best_s + 1e-9:
            best_n, best_s = n, speeds[j]
        j += 1
    if best_n == 0:
        best_n, best_s = 1, speeds[-1]
    # ncclTopoDupChannels
    newer = ARCHES.index(arch) > ARCHES.index("ampere")
    if best_s >= 25.0 and not (newer and best_s < 50.0 and best_n > 4):
        dup = min(best_n * 2, max_channels)
        best_s /= math.ceil(dup / best_n)
        best_n = dup
    return ChannelGraph(n_channels=best_n, bw_intra_GBps=best_s, bw_inter_GBps=best_s)


def _nvls_graph(c: NcclConstants, shape: GroupShape, arch: str) -> ChannelGraph | None:
    """NVLS: one channel per GPU of the node (its head); a channel takes its speed twice from
    its head's NVLink port and once from every other GPU's (``ncclTopoSearchTryNvls``), so the
    speed is the highest with ``(heads + 1) x speed`` within the port.  The second pass raises
    the inter speed up to (below) twice the intra speed, as far as the NICs allow."""
    if not shape.nvswitch or shape.ranks_per_node < 2:
        return None
    heads = min(int(c.get("max_nvls_arity")), shape.ranks_per_node)
    speeds = _speeds(c, "inter" if shape.n_nodes > 1 else "intra", arch)
    speed = next((s for s in speeds if s * (heads + 1) <= shape.intra_bw_GBps + 1e-9), 0.0)
    if speed <= 0:
        return None
    limit = shape.nic_bw_GBps if shape.n_nodes > 1 else math.inf
    inter = max((s for s in speeds if speed <= s < 2 * speed and s <= limit + 1e-9), default=min(speed, limit))
    return ChannelGraph(n_channels=heads, bw_intra_GBps=speed, bw_inter_GBps=inter)


def nccl_system(
    graph: nx.DiGraph,
    devices: Sequence[str],
    settings: Mapping[str, Any],
    c: NcclConstants,
    efficiency: Mapping[str, float],
) -> NcclSystem:
    """The :class:`NcclSystem` of ``devices`` on ``graph``.

    Args:
        settings: the topology's ``collectives`` section (``arch``, ``host_cpu``, ``nvls``,
            ``collnet``, ``collnet_heads``, ``net_latency_us``).
        efficiency: achieved fraction of line rate per link class.
    """
    arch = str(settings.get("arch", "hopper"))
    shape = group_shape(graph, devices, efficiency)
    ring = search_channels(c, shape, arch)
    lat_inter = float(settings.get("net_latency_us", 0.0) or 0.0)
    ring = ChannelGraph(ring.n_channels, ring.bw_intra_GBps, ring.bw_inter_GBps, latency_inter_us=lat_inter)
    graphs: dict[str, ChannelGraph] = {"ring": ring, "tree": ring}
    comm_channels = min(int(c.get("max_channels")), 2 * ring.n_channels)
    newer = ARCHES.index(arch) > ARCHES.index("ampere")
    if newer and shape.n_nodes > 1 and ring.bw_intra_GBps > 45.0 and comm_channels < 16:
        comm_channels *= 2
    nvls_ok = bool(settings.get("nvls", False)) and newer and shape.nvswitch
    nvls_channels = 0
    if nvls_ok:
        ng = _nvls_graph(c, shape, arch)
        if ng is not None:
            ng = ChannelGraph(ng.n_channels, ng.bw_intra_GBps, ng.bw_inter_GBps, latency_inter_us=lat_inter)
            graphs["nvls"] = graphs["nvls_tree"] = ng
            nvls_channels = _NVLS_CHANNELS.get(arch, 16)
        else:
            nvls_ok = False
    collnet = bool(settings.get("collnet", False)) and shape.n_nodes > 1
    heads = int(settings.get("collnet_heads", shape.nics_per_node) or shape.nics_per_node)
    if collnet:
        cg = ChannelGraph(
            max(heads, 1),
            ring.bw_intra_GBps * max(ring.n_channels, 1) / max(heads, 1),
            shape.nic_bw_GBps,
            latency_inter_us=lat_inter,
        )
        graphs["collnet_direct"] = graphs["collnet_chain"] = cg
    if shape.ranks_per_node == 1 and shape.n_nodes > 1:
        graphs["pat"] = ring
    ll128 = shape.intra_hw == "nvlink" and bool(settings.get("ll128", True))
    return NcclSystem(
        n_ranks=shape.n_ranks,
        n_nodes=shape.n_nodes,
        arch=arch,
        cpu=str(settings.get("host_cpu", "intel")),
        intra_hw=shape.intra_hw,
        graphs=graphs,
        n_channels=comm_channels,
        nvls_channels=nvls_channels,
        nvls=nvls_ok,
        collnet=collnet,
        collnet_heads=heads,
        ll128=ll128,
        nvswitch=shape.nvswitch,
    )
