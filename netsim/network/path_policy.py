"""Network path policies: how a flow chooses among equal-cost paths.

A policy is a :class:`PathPolicy` registered in :data:`PATH_POLICIES` under the name used in
specs (``options.path_policy``; :data:`ROUTING_POLICIES` is the tuple of those names).  It is the
composition of two independent things, as on a real cluster:

* a **path choice** (:class:`PathChoice`): what the *switches* do with equal-cost next hops --
  hash a flow onto one (Ethernet ECMP), split it over all (adaptive routing / spraying), or
  follow the forwarding tables a subnet manager installed (InfiniBand d-mod-k);
* a **rail-gateway flag**: whether the *collective library* moves inter-node traffic to the
  NIC on the destination's rail inside the server first (NCCL's PXN, default since NCCL 2.12),
  which is a host-side choice and works with any switch routing.

The router (:mod:`netsim.network.routing`) never compares names: it asks the choice how to key a
flow's hash, which key each fabric hop sees, which of ``n`` candidates a key picks and whether to
split the bytes over all of them instead, and asks the policy whether to leave through the NIC
on the destination's rail.  A new strategy is one small class, passed in as an object (as Ciw's
routing objects are: Palmer et al., "Ciw: an open-source discrete event simulation library",
Journal of Simulation 13(1), 2019).

``shortest``  deterministic: always the first least-cost path (by device id).
``ecmp``      per-flow hash of (flow id, source, destination, seed, hop) over equal-cost next
              hops, as RoCE/Ethernet ECMP does; collisions happen, as on real fabrics.
``ecmp-pair`` as ``ecmp`` but hashed on (source, destination, seed, hop) only: every flow
              between two devices takes the same path, as one NCCL connection (one QP, one UDP
              source port) does for its whole life; exact and stream collectives hash alike.
``spray``     a flow's bytes are split evenly over all equal-cost next hops at every hop
              (InfiniBand adaptive routing / packet spraying): no collisions.
``dmodk``     InfiniBand static destination routing as OpenSM's fat-tree engine (``ftree``)
              installs it: at the ``l``-th hop that has a choice, the up-port is
              ``floor(d / (w_1 ... w_{l-1})) mod w_l`` of the destination's index ``d`` (its
              leaf's rank times the most end ports on a leaf, plus its port on the leaf) and the
              ``w`` candidates there (Zahavi et al., "Optimized InfiniBand fat-tree routing for
              shift all-to-all communication patterns", CCPE 22(2), 2010): every flow to one
              destination shares one path down, and shift permutations load no link twice.
              Deterministic; no hash, no seed.
``pxn``       ``ecmp`` plus NCCL's PXN: inter-node traffic between accelerators on different
              rails first crosses the intra-node fabric to the GPU whose NIC is on the
              destination's rail, so it never crosses rails in the fabric.
``dmodk-pxn`` ``dmodk`` plus PXN.

**Queue pairs per connection.**  Under the hashing choices (``ecmp``, ``ecmp-pair``, ``pxn``) a
connection of the collective library may be several flows to the switches: NCCL's
``NCCL_IB_QPS_PER_CONNECTION`` queue pairs (RoCE: one UDP source port, so one ECMP hash, each),
which Meta's collective library sets to 16 and balances with its Enhanced-ECMP (Llama 3 paper,
arXiv 2407.21783, section 3.3.1: "our collective library creates 16 network flows between two
GPUs, instead of just one").  The router hashes each of the connection's
``collectives.qps_per_connection`` queue pairs on its own path, each carrying an equal share of
the bytes (:class:`netsim.network.routing.Router`); :attr:`PathChoice.hashed` says which
choices that applies to (spraying already splits; static routing sends every queue pair to one
destination down one path).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from netsim.registry import Registry

__all__ = [
    "PATH_POLICIES",
    "ROUTING_POLICIES",
    "DModK",
    "Ecmp",
    "EcmpPair",
    "PathChoice",
    "PathPolicy",
    "Shortest",
    "Spray",
    "mix64",
]

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser, vectorised over uint64 (wraps modulo 2**64)."""
    with np.errstate(over="ignore"):
        z = x.astype(np.uint64, copy=True)
        z ^= z >> np.uint64(30)
        z *= np.uint64(0xBF58476D1CE4E5B9)
        z ^= z >> np.uint64(27)
        z *= np.uint64(0x94D049BB133111EB)
        z ^= z >> np.uint64(31)
    return z


class PathChoice:
    """How switches choose among equal-cost next hops (the base is ECMP's per-flow hash).

    ``splits``: spread a flow's bytes evenly over all equal-cost next hops instead of picking one.
    ``seeded``: the run's seed enters the flow hash (a hash function's seed; a static
    forwarding table has none).  ``by_destination``: :meth:`hop_key` reads the destination's
    index and the product of the candidate counts of the flow's earlier choices (its *stride*).
    :meth:`flow_key` is what the hash sees of a flow besides its endpoints, the seed and the hop;
    :meth:`pick` and :meth:`pick_one` map keys to candidates.
    """

    name: ClassVar[str] = ""
    #: the choice hashes flows onto paths, so each of a connection's queue pairs takes its own
    hashed: ClassVar[bool] = True
    splits: ClassVar[bool] = False
    seeded: ClassVar[bool] = True
    by_destination: ClassVar[bool] = False

    def flow_key(self, flow_ids: np.ndarray) -> np.ndarray:
        """Per-flow hash key (uint64): the flow id, so two flows of one pair may differ."""
        return np.asarray(flow_ids, dtype=np.uint64)

    def hop_key(self, h: np.ndarray, hop: int, dest: np.ndarray | None, stride: np.ndarray | None) -> np.ndarray:
        """The key a fabric hop picks with: the flow hash ``h`` re-mixed per ``hop``."""
        with np.errstate(over="ignore"):
            return mix64(h + np.uint64(hop) * _GOLDEN)

    def pick(self, h: np.ndarray, n: np.ndarray | int) -> np.ndarray:
        """Index of the candidate each key ``h`` takes among ``n`` (scalar or per key)."""
        return (h % np.asarray(n).astype(np.uint64)).astype(np.int64)

    def pick_one(self, h: np.uint64, n: int) -> int:
        """:meth:`pick` for one key."""
        return int(h % np.uint64(n))

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class Shortest(PathChoice):
    """Always the first least-cost candidate (by device id): deterministic, no hashing."""

    name = "shortest"
    hashed = False

    def pick(self, h: np.ndarray, n: np.ndarray | int) -> np.ndarray:
        return np.zeros(h.size, dtype=np.int64)

    def pick_one(self, h: np.uint64, n: int) -> int:
        return 0


class Ecmp(PathChoice):
    """Per-flow hash over equal-cost next hops (RoCE/Ethernet ECMP)."""

    name = "ecmp"


class EcmpPair(PathChoice):
    """ECMP hashed on the endpoints only: one path per device pair (one NCCL connection)."""

    name = "ecmp-pair"

    def flow_key(self, flow_ids: np.ndarray) -> np.ndarray:
        return np.zeros(np.asarray(flow_ids).size, dtype=np.uint64)


class Spray(PathChoice):
    """Packet spraying / adaptive routing: bytes split over every equal-cost next hop."""

    name = "spray"
    hashed = False
    splits = True


class DModK(PathChoice):
    """InfiniBand static destination-mod-k routing (OpenSM ``ftree``): the up-port a hop takes
    is ``floor(d / stride) mod n`` for destination index ``d``, where ``stride`` is the product
    of the candidate counts at the flow's earlier choices.  Where a choice is not in the fabric
    (inside a server, among a server's gateways) the key is a seed-free hash of the endpoints."""

    name = "dmodk"
    hashed = False
    seeded = False
    by_destination = True

    def flow_key(self, flow_ids: np.ndarray) -> np.ndarray:
        return np.zeros(np.asarray(flow_ids).size, dtype=np.uint64)

    def hop_key(self, h: np.ndarray, hop: int, dest: np.ndarray | None, stride: np.ndarray | None) -> np.ndarray:
        if dest is None or stride is None:
            raise ValueError("d-mod-k needs each flow's destination index and stride")
        return (dest // stride).astype(np.uint64)


@dataclass(frozen=True)
class PathPolicy:
    """A path choice in the switches plus, optionally, NCCL's PXN rail gateway in the servers.

    ``rail_gateway``: inter-node traffic leaves through the source server's NIC on the
    destination's rail (PXN).  The other members are the choice's, so the router asks the policy.
    """

    name: str
    choice: PathChoice
    rail_gateway: bool = False

    @property
    def splits(self) -> bool:
        return self.choice.splits

    @property
    def hashed(self) -> bool:
        return self.choice.hashed

    @property
    def seeded(self) -> bool:
        return self.choice.seeded

    @property
    def by_destination(self) -> bool:
        return self.choice.by_destination

    def flow_key(self, flow_ids: np.ndarray) -> np.ndarray:
        return self.choice.flow_key(flow_ids)

    def hop_key(self, h: np.ndarray, hop: int, dest: np.ndarray | None, stride: np.ndarray | None) -> np.ndarray:
        return self.choice.hop_key(h, hop, dest, stride)

    def pick(self, h: np.ndarray, n: np.ndarray | int) -> np.ndarray:
        return self.choice.pick(h, n)

    def pick_one(self, h: np.uint64, n: int) -> int:
        return self.choice.pick_one(h, n)

    def __repr__(self) -> str:
        return f"PathPolicy({self.name!r})"


PATH_POLICIES: Registry[PathPolicy] = Registry("routing policy", field="routing")

for _policy in (
    PathPolicy("shortest", Shortest()),
    PathPolicy("ecmp", Ecmp()),
    PathPolicy("ecmp-pair", EcmpPair()),
    PathPolicy("spray", Spray()),
    PathPolicy("pxn", Ecmp(), rail_gateway=True),
    PathPolicy("dmodk", DModK()),
    PathPolicy("dmodk-pxn", DModK(), rail_gateway=True),
):
    PATH_POLICIES.add(_policy.name, _policy)

#: the registered path policy names, in registration order (what specs and ``--routing`` accept)
ROUTING_POLICIES: tuple[str, ...] = tuple(PATH_POLICIES.names())
