"""Network path policies: how a flow chooses among equal-cost paths.

A policy is a :class:`PathPolicy` object registered in :data:`PATH_POLICIES` under the name used
in specs (``options.path_policy``; :data:`ROUTING_POLICIES` is the tuple of those names).  The
router (:mod:`netsim.network.routing`) never compares names: it asks its policy how to key a
flow's hash, which of ``n`` equal-cost candidates a hash picks, whether to split the bytes over all
of them instead, and whether to leave through the NIC on the destination's rail.  A new strategy
is one small class, passed in as an object (as Ciw's routing objects are: Palmer et al., "Ciw: an
open-source discrete event simulation library", Journal of Simulation 13(1), 2019):

``shortest``  deterministic: always the first least-cost path (by device id).
``ecmp``      per-flow hash of (flow id, source, destination, seed, hop) over equal-cost next
              hops, as RoCE/Ethernet ECMP does; collisions happen, as on real fabrics.
``ecmp-pair`` as ``ecmp`` but hashed on (source, destination, seed, hop) only: every flow
              between two devices takes the same path, as one NCCL connection (one QP, one UDP
              source port) does for its whole life; exact and stream collectives hash alike.
``spray``     a flow's bytes are split evenly over all equal-cost next hops at every hop
              (InfiniBand adaptive routing / packet spraying): no collisions.
``pxn``       as ``ecmp``, but inter-node traffic between accelerators on different rails
              first crosses the intra-node fabric to the GPU whose NIC is on the destination's
              rail (NCCL's PXN), so it never crosses rails in the fabric.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from netsim.registry import Registry

__all__ = ["PATH_POLICIES", "ROUTING_POLICIES", "Ecmp", "EcmpPair", "PathPolicy", "Pxn", "Shortest", "Spray"]


class PathPolicy:
    """How flows choose among equal-cost paths (the base is ECMP's per-flow hash).

    ``splits``: spread a flow's bytes evenly over all equal-cost next hops instead of picking one.
    ``rail_gateway``: inter-node traffic leaves through the source server's NIC on the
    destination's rail (PXN).  :meth:`flow_key` is what the hash sees of a flow besides its
    endpoints, the seed and the hop; :meth:`pick` and :meth:`pick_one` map hashes to candidates.
    """

    name: ClassVar[str] = ""
    splits: ClassVar[bool] = False
    rail_gateway: ClassVar[bool] = False

    def flow_key(self, flow_ids: np.ndarray) -> np.ndarray:
        """Per-flow hash key (uint64): the flow id, so two flows of one pair may differ."""
        return np.asarray(flow_ids, dtype=np.uint64)

    def pick(self, h: np.ndarray, n: np.ndarray | int) -> np.ndarray:
        """Index of the candidate each hash ``h`` takes among ``n`` (scalar or per hash)."""
        return (h % np.asarray(n).astype(np.uint64)).astype(np.int64)

    def pick_one(self, h: np.uint64, n: int) -> int:
        """:meth:`pick` for one hash."""
        return int(h % np.uint64(n))

    def __repr__(self) -> str:
        return f"PathPolicy({self.name!r})"


PATH_POLICIES: Registry[PathPolicy] = Registry("routing policy", field="routing")


def _register(cls: type[PathPolicy]) -> type[PathPolicy]:
    PATH_POLICIES.add(cls.name, cls())
    return cls


@_register
class Shortest(PathPolicy):
    """Always the first least-cost candidate (by device id): deterministic, no hashing."""

    name = "shortest"

    def pick(self, h: np.ndarray, n: np.ndarray | int) -> np.ndarray:
        return np.zeros(h.size, dtype=np.int64)

    def pick_one(self, h: np.uint64, n: int) -> int:
        return 0


@_register
class Ecmp(PathPolicy):
    """Per-flow hash over equal-cost next hops (RoCE/Ethernet ECMP)."""

    name = "ecmp"


@_register
class EcmpPair(PathPolicy):
    """ECMP hashed on the endpoints only: one path per device pair (one NCCL connection)."""

    name = "ecmp-pair"

    def flow_key(self, flow_ids: np.ndarray) -> np.ndarray:
        return np.zeros(np.asarray(flow_ids).size, dtype=np.uint64)


@_register
class Spray(PathPolicy):
    """Packet spraying / adaptive routing: bytes split over every equal-cost next hop."""

    name = "spray"
    splits = True


@_register
class Pxn(PathPolicy):
    """ECMP plus NCCL's PXN: cross-rail traffic moves to the destination's rail inside the node."""

    name = "pxn"
    rail_gateway = True


#: the registered path policy names, in registration order (what specs and ``--routing`` accept)
ROUTING_POLICIES: tuple[str, ...] = tuple(PATH_POLICIES.names())
