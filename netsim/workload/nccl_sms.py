"""The SMs NCCL's kernels hold while a collective or a transfer is in flight.

NCCL runs every collective and every send/recv as one GPU kernel whose thread blocks are its
channels, one block per channel, each resident on an SM of its own from the kernel's start to its
end (``ncclLaunchKernel``'s grid is the plan's channel count, src/enqueue.cc, NCCL 2.30.7).  Where
a framework overlaps communication with compute (Megatron's gradient reduce-scatter beside the
backward, its pipeline sends and receives beside the next micro-batch, a context-parallel ring
beside the attention), the GEMMs and the attention core that run meanwhile get only the other
SMs (:mod:`netsim.replay`, "SMs held in flight").  NCCL itself documents the trade-off: its
communicator configuration has ``minCTAs`` / ``maxCTAs`` (and ``NCCL_MIN_CTAS`` /
``NCCL_MAX_CTAS``) so that an application can cap the SMs NCCL takes from the compute it
overlaps (NCCL user guide, "ncclConfig_t").

:class:`NcclSms` gives, per traffic class (``tp``, ``dp``, ``pp``, ``cp``), the share of a
member's SMs a call holds:

* a collective (all-reduce, reduce-scatter, all-gather): one SM per channel NCCL's tuner gives
  the call (:meth:`~netsim.collectives.cost.NcclCost.choice`: its algorithm, protocol and
  channel count for the group and the size);
* a point-to-point transfer (a pipeline send/recv, a context-parallel ring step): the blocks of
  NCCL's p2p kernel, from its channel rule for the communicator and the bytes per peer
  (:meth:`~netsim.collectives.nccl.p2p.P2pChannels.kernel_ctas`).

``overlap.nccl_sms`` sets a class's SMs instead (``{dp: 8}``: NCCL capped by ``NCCL_MAX_CTAS``;
0: that class holds none).  Nothing is held on an accelerator whose SM count the topology does
not give (the Ascend presets), unless asked for, which is then an error naming
``accelerator.sms``.  The expert all-to-alls have their own rule (``overlap.ep_comm_sms``,
:mod:`netsim.workload.experts`), which this class's :meth:`p2p_share` computes for NCCL's.

Assumption (*approx.*, as for the other SM holders): a GEMM beside the kernel slows as
``sms / (sms - held)``; the HBM bandwidth the collective's copies take from memory-bound kernels
is not charged.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from netsim.calibration.shared_sms import held_share, kernel_sm_share
from netsim.collectives.cost import NcclCost
from netsim.collectives.nccl.p2p import P2pChannels
from netsim.config.workload import NcclSmClass

__all__ = ["NCCL_SM_CLASSES", "NcclSmClass", "NcclSms"]

#: the traffic classes whose NCCL calls hold SMs by this rule (``overlap.nccl_sms``'s keys)
NCCL_SM_CLASSES: tuple[NcclSmClass, ...] = ("tp", "dp", "pp", "cp")


class NcclSms:
    """The share of a member's SMs each NCCL call holds while in flight (module doc)."""

    def __init__(
        self,
        nccl: NcclCost,
        devices: Sequence[str],
        accelerator: Mapping[str, Any],
        given: Mapping[NcclSmClass, int] | None,
    ) -> None:
        """``nccl``: NCCL's cost model of the topology; ``devices``: rank -> device;
        ``accelerator``: the topology's accelerator (its ``sms`` and ``name``); ``given``:
        ``overlap.nccl_sms``."""
        self.nccl = nccl
        self.devices = devices
        acc = accelerator
        #: the accelerator's SM count (None: the topology does not give it)
        self.sms: int | None = None if acc.get("sms") is None else int(acc["sms"])
        given = dict(given or {})
        #: the classes' shares set by ``overlap.nccl_sms`` (checked against the SM count)
        self.given: dict[str, float] = {
            cls: held_share(n, self.sms, f"overlap.nccl_sms.{cls}", str(acc.get("name") or ""))
            for cls, n in sorted(given.items())
        }
        self._coll: dict[tuple[str, float, tuple[int, ...]], float] = {}
        self._p2p: dict[tuple[int, ...], P2pChannels] = {}
        #: p2p_share per (class, communicator, bytes per peer, peers): every pipeline transfer
        #: of a step asks, millions of times on a large lockstep plan, about a few shapes
        self._p2p_share: dict[tuple[str, tuple[int, ...], float, int], float] = {}

    def holds(self, cls: str) -> bool:
        """Whether ``cls``'s calls may hold SMs (its share set above 0, or NCCL's rule where the
        SM count is known)."""
        if cls in self.given:
            return self.given[cls] > 0.0
        return self.sms is not None

    @property
    def any(self) -> bool:
        """Whether any class's calls hold SMs (the emitter then times every compute op's SM-bound
        share)."""
        return any(self.holds(c) for c in NCCL_SM_CLASSES)

    def collective_share(self, cls: str, op: str, nbytes: float, group: tuple[int, ...]) -> float:
        """The share of a member's SMs NCCL's kernel for ``op`` of ``nbytes`` over the ranks
        ``group`` holds: one SM per channel of the tuner's choice (0 for a group of one)."""
        if len(group) < 2 or not self.holds(cls):
            return 0.0
        if cls in self.given:
            return self.given[cls]
        assert self.sms is not None
        key = (op, float(nbytes), group)
        hit = self._coll.get(key)
        if hit is None:
            ch = self.nccl.choice(op, [self.devices[r] for r in group], nbytes)
            hit = self._coll[key] = 0.0 if ch is None else kernel_sm_share(ch.n_channels, self.sms)
        return hit

    def p2p_share(self, cls: str, comm: tuple[int, ...], per_peer_bytes: float, peers: int) -> float:
        """The share of a member's SMs NCCL's send/recv kernel holds on the communicator of the
        ranks ``comm``, sending ``per_peer_bytes`` to each of ``peers`` peers: the kernel's blocks
        by NCCL's p2p channel rule (0 for no peer)."""
        key = (cls, comm, per_peer_bytes, peers)
        hit = self._p2p_share.get(key)
        if hit is not None:
            return hit
        if peers < 1 or len(comm) < 2 or not self.holds(cls):
            share = 0.0
        elif cls in self.given:
            share = self.given[cls]
        else:
            assert self.sms is not None
            rule = self._p2p.get(comm)
            if rule is None:
                rule = self._p2p[comm] = self.nccl.p2p_rule([self.devices[r] for r in comm])
            share = kernel_sm_share(rule.kernel_ctas(per_peer_bytes, peers), self.sms)
        self._p2p_share[key] = share
        return share
