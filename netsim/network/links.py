"""The link table: the directed links of a topology as flat numpy arrays.

The flow engine never touches networkx in its hot path.  :class:`LinkTable` numbers the devices
and the directed links of a topology graph once and keeps, per link, its capacity (bytes/s,
already scaled by the per-link-class efficiency), its latency (seconds, including the forwarding
latency of the device it enters, when that device forwards), its routing cost (see
:mod:`netsim.network.fabric`) and integer codes for its class, tier and network, so that
per-link quantities are vector operations.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import networkx as nx
import numpy as np

from netsim.errors import SpecError, TopologyError
from netsim.topology.model import link_name

#: the bandwidth of a link of routing cost 1 when the topology gives no ``cost`` (bytes/s):
#: 100 Gb/s, a common OSPF reference bandwidth (cost = reference / bandwidth)
COST_REFERENCE_Bps = 100e9 / 8


@dataclass(frozen=True)
class LinkTable:
    """Devices and directed links of a topology, as arrays indexed by integer ids.

    Attributes:
        names: device name per device id.
        index: device name -> device id.
        src, dst: device ids of each link's ends.
        capacity_Bps: effective capacity per link (nominal x efficiency of its class).
        nominal_Bps: nominal capacity per link.
        latency_s: per-link latency including the entered device's forwarding latency.
        cost: routing cost per link (the edge's ``cost``, else ``COST_REFERENCE_Bps / nominal``).
        link_class, tier, network: integer codes into ``class_names`` / ``tier_names`` /
            ``network_names``.
        edge_id: (src id, dst id) -> link id.
    """

    names: tuple[str, ...]
    index: dict[str, int]
    src: np.ndarray
    dst: np.ndarray
    capacity_Bps: np.ndarray
    nominal_Bps: np.ndarray
    latency_s: np.ndarray
    cost: np.ndarray
    link_class: np.ndarray
    tier: np.ndarray
    network: np.ndarray
    class_names: tuple[str, ...]
    tier_names: tuple[str, ...]
    network_names: tuple[str, ...]
    edge_id: dict[tuple[int, int], int]

    @property
    def num_links(self) -> int:
        return int(self.src.shape[0])

    @property
    def num_devices(self) -> int:
        return len(self.names)

    def link_names(self) -> list[str]:
        return [link_name(self.names[s], self.names[d]) for s, d in zip(self.src, self.dst, strict=True)]

    @classmethod
    def from_graph(cls, graph: nx.DiGraph, efficiency: Mapping[str, float] | None = None) -> LinkTable:
        """Number the graph's devices (in graph order) and links (in edge order).

        Args:
            graph: a topology following :mod:`netsim.topology.model`.
            efficiency: per link class, the fraction of nominal capacity that payload gets
                (protocol overhead, calibrated); classes not named keep 1.0.
        """
        names = tuple(str(n) for n in graph.nodes)
        index = {n: i for i, n in enumerate(names)}
        eff = dict(efficiency or {})
        for cls_name, value in eff.items():
            if not (isinstance(value, int | float) and 0.0 < float(value) <= 1.0):
                raise SpecError(
                    f"efficiency of link class {cls_name!r} must be in (0, 1], got {value!r}",
                    field=f"link_efficiency.{cls_name}",
                )
        node_latency = np.array([float(graph.nodes[n].get("latency_s", 0.0) or 0.0) for n in graph.nodes])
        m = graph.number_of_edges()
        src = np.empty(m, dtype=np.int64)
        dst = np.empty(m, dtype=np.int64)
        cap = np.empty(m, dtype=np.float64)
        degrade = np.empty(m, dtype=np.float64)
        lat = np.empty(m, dtype=np.float64)
        cost = np.empty(m, dtype=np.float64)
        classes: dict[str, int] = {}
        tiers: dict[str, int] = {}
        networks: dict[str, int] = {}
        cls_code = np.empty(m, dtype=np.int32)
        tier_code = np.empty(m, dtype=np.int32)
        net_code = np.empty(m, dtype=np.int32)
        edge_id: dict[tuple[int, int], int] = {}
        for k, (u, v, data) in enumerate(graph.edges(data=True)):
            iu, iv = index[str(u)], index[str(v)]
            src[k], dst[k] = iu, iv
            c = data.get("capacity_Bps")
            if c is None or not np.isfinite(c) or c <= 0:
                raise TopologyError(
                    f"link {u}->{v} has capacity_Bps={c!r}; it must be a finite number > 0", field="capacity_Bps"
                )
            cap[k] = float(c)
            # a degraded link (netsim.topology.faults) keeps that fraction of its rate; its nominal
            # rate (routing, records) stays, as a routing table's would
            degrade[k] = float(data.get("degrade", 1.0))
            lt = float(data.get("latency_s", 0.0) or 0.0)
            if lt < 0 or not np.isfinite(lt):
                raise TopologyError(f"link {u}->{v} has latency_s={lt!r}; it must be >= 0", field="latency_s")
            lat[k] = lt
            w = data.get("cost")
            w = COST_REFERENCE_Bps / float(c) if w is None else w
            if not isinstance(w, int | float) or not np.isfinite(w) or w <= 0:
                raise TopologyError(f"link {u}->{v} has cost={w!r}; it must be a finite number > 0", field="cost")
            cost[k] = float(w)
            cls_code[k] = classes.setdefault(str(data.get("link_class", "generic")), len(classes))
            tier_code[k] = tiers.setdefault(str(data.get("tier", data.get("link_class", "generic"))), len(tiers))
            net_code[k] = networks.setdefault(str(data.get("network", "backend")), len(networks))
            edge_id[(iu, iv)] = k
        class_names = tuple(classes)
        scale = np.array([float(eff.get(c, 1.0)) for c in class_names] or [1.0])
        capacity = cap * scale[cls_code] * degrade if m else cap
        # A device that forwards (switch, NIC in the middle of a path) adds its latency when
        # entered; the destination of a flow is an endpoint, whose latency_s is 0 by contract.
        latency = lat + node_latency[dst] if m else lat
        return cls(
            names=names,
            index=index,
            src=src,
            dst=dst,
            capacity_Bps=capacity,
            nominal_Bps=cap,
            latency_s=latency,
            cost=cost,
            link_class=cls_code,
            tier=tier_code,
            network=net_code,
            class_names=class_names,
            tier_names=tuple(tiers),
            network_names=tuple(networks),
            edge_id=edge_id,
        )
