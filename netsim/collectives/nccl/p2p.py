"""How many channels NCCL gives a point-to-point transfer, and what that caps its rate at.

NCCL moves a send/recv (and each peer's share of an all-to-all, which is grouped send/recv) on
*channels*: one thread block each, copying the message through the peer's buffer.  How many
channels a transfer gets is decided per communicator and per message (NCCL 2.30.7, master
5067397c):

* **channels per peer** (``ncclTopoGetNchannels`` / ``ncclTopoComputeP2pChannelsPerPeer`` /
  ``ncclTopoComputeP2pChannels``, ``src/graph/paths.cc``): the least over the communicator's
  peers of 2 per NVLink (NVLink peers), 2 (PCIe peers) or, for peers across the network,
  ``max(local NICs, ceil(NIC GB/s / P2P_PER_CHANNEL_NET_BW))``; rounded up to a power of two
  and capped at the communicator's p2p channels (its channel count rounded up to a power of
  two).  Across servers it is halved while ``channels x ceil(ranks / 8)`` exceeds them;
* **channels of one transfer** (``scheduleP2pTasksToPlan`` and ``addP2pToPlan``,
  ``src/enqueue.cc``): start from the channels per peer, halved while ``channels x ranks``
  exceeds the communicator's p2p channels (so that every peer of an all-to-all gets a
  channel), but no more than ``bytes / minimum part``; then doubled while a part is larger than
  the maximum part, up to the channels per peer.  The parts come from the p2p chunk
  (``P2P_NVL_CHUNKSIZE`` 512 KiB inside an NVLink server, ``P2P_NET_CHUNKSIZE`` 128 KiB once
  the communicator spans servers, ``src/init.cc``): a part is between chunk / 8 and
  chunk x 32 inside a server, chunk / 2 and chunk across servers;
* **protocol**: LL when the message is at most ``channels x P2P_LL_THRESHOLD`` bytes.

* **the kernel's thread blocks** (``ncclLaunchKernel``'s grid is the plan's channel count,
  ``countOneBits(plan->channelMask)``, ``src/enqueue.cc``): a round of an all-to-all (one send
  peer, one receive peer) puts its parts on channels ``(base + part) mod p2pnChannels``
  (``ncclP2pChannelForPart``, ``src/include/device.h``) from a bit-reversed base per round
  (``ncclP2pChannelBaseForRound``, ``src/include/channel.h``), so the rounds spread over the
  communicator's p2p channels: the kernel runs on ``min(p2p channels, peers x channels of one
  transfer)`` blocks, each resident on one SM for as long as the all-to-all is in flight
  (:meth:`P2pChannels.kernel_ctas`; what compute beside it loses: ``netsim.replay``, "SMs held in
  flight").

A channel is one thread block, and one thread block copies at a bounded rate: the transfer's
flow is capped at ``channels x p2p_channel_bw_GBps[arch]``.  That per-channel rate is not in
NCCL's source (its tuner does not model send/recv); it is *measured*: nccl-tests
``sendrecv_perf`` on one DGX H100 (8 ranks, NCCL 2.29.2, xxrjun/nccl-tests-cluster) reaches
79.5-81.8 GB/s at 32-64 MiB, where the rule above gives 4 channels: 20.2 GB/s per channel.
The same rule then predicts the 4-rank run (8 channels: 149-163 GB/s measured) and the
doublings at 128 and 256 MiB (see ``netsim validate``, docs "The NCCL cost model").

This module is pure arithmetic on an :class:`~netsim.collectives.nccl.tuner.NcclSystem` and its
:class:`~netsim.collectives.nccl.system.GroupShape`; the cost model puts the result on the
call (:class:`P2pChannels`) and :mod:`netsim.collectives.transfer_costs` caps the flows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from netsim.collectives.nccl.constants import NcclConstants
from netsim.collectives.nccl.system import GroupShape
from netsim.collectives.nccl.tuner import NcclSystem

__all__ = ["P2pChannels", "p2p_channels"]


def _pow2_up(x: int) -> int:
    return 1 if x <= 1 else 1 << (int(x) - 1).bit_length()


@dataclass(frozen=True)
class P2pChannels:
    """NCCL's channel rule for the point-to-point transfers of one communicator (module doc).

    Attributes:
        min_channels: channels a transfer starts from (``nChannelsMin``).
        max_channels: the most channels one transfer gets (``nChannelsMax``, per peer).
        min_part_bytes, max_part_bytes: the bounds of a channel's part of a transfer.
        channel_bw_Bps: what one channel (thread block) moves per second.
        ll_threshold_bytes: LL up to this many bytes per channel.
        pool_channels: the communicator's p2p channels (``p2pnChannels``), which the transfers
            of a grouped call share.
    """

    min_channels: int
    max_channels: int
    min_part_bytes: int
    max_part_bytes: int
    channel_bw_Bps: float
    ll_threshold_bytes: float
    pool_channels: int

    def channels(self, nbytes: float) -> int:
        """The channels NCCL splits a transfer of ``nbytes`` over (``addP2pToPlan``)."""
        b = max(math.ceil(nbytes), 0)
        if b == 0:
            return 1
        n = min(self.min_channels, -(-b // self.min_part_bytes))
        part = max(self.min_part_bytes, -(-b // n))
        while part > self.max_part_bytes and n <= self.max_channels // 2:
            n *= 2
            part = -(-b // n)
        return n

    def rate_cap_Bps(self, nbytes: float) -> float:
        """The highest rate a transfer of ``nbytes`` reaches on its channels."""
        return self.channels(nbytes) * self.channel_bw_Bps

    def rate_caps_Bps(self, nbytes: ArrayLike) -> np.ndarray:
        """:meth:`rate_cap_Bps` of every transfer in ``nbytes`` at once (an all-to-all's pairs):
        the same rule on arrays, a few doublings at most instead of a Python call per transfer."""
        b = np.maximum(np.ceil(np.asarray(nbytes, dtype=np.float64)), 0.0)
        n = np.minimum(float(self.min_channels), np.ceil(b / self.min_part_bytes))
        n = np.where(b > 0, n, 1.0)
        part = np.maximum(float(self.min_part_bytes), np.ceil(b / n))
        while True:
            grow = (b > 0) & (part > self.max_part_bytes) & (n <= self.max_channels // 2)
            if not grow.any():
                return n * self.channel_bw_Bps
            n = np.where(grow, n * 2.0, n)
            part = np.where(grow, np.ceil(b / n), part)

    def kernel_ctas(self, per_peer_bytes: float, peers: int) -> int:
        """Thread blocks of the kernel of a grouped call (an all-to-all) with ``peers`` peers of
        ``per_peer_bytes`` each: one per channel that carries a part, at most the communicator's
        p2p channels (module doc); 0 without peers."""
        if peers <= 0:
            return 0
        return min(self.pool_channels, peers * self.channels(per_peer_bytes))

    def protocol(self, nbytes: float) -> str:
        """``LL`` for a transfer of at most ``channels x P2P_LL_THRESHOLD`` bytes, else ``Simple``."""
        return "LL" if nbytes <= self.channels(nbytes) * self.ll_threshold_bytes else "Simple"


def p2p_channels(c: NcclConstants, sys: NcclSystem, shape: GroupShape) -> P2pChannels:
    """The channel rule of a communicator over ``shape`` (module doc)."""
    multi_node = sys.n_nodes > 1
    p2p_total = min(_pow2_up(max(sys.n_channels, 1)), int(c.get("max_channels")))
    per_peer = 1 << 30
    if shape.ranks_per_node > 1:  # peers in the same server
        if shape.intra_hw == "nvlink":
            links = int(shape.intra_bw_GBps / float(c.get("nvlink_link_bw_GBps", sys.arch)) + 1e-9)
            per_peer = min(per_peer, 2 * max(1, links))
        else:
            per_peer = min(per_peer, 2)
    if multi_node:  # peers across the network
        nics = max(1, shape.nics_per_node // max(shape.ranks_per_node, 1))
        need = math.ceil(shape.nic_bw_GBps * nics / float(c.get("p2p_per_channel_net_bw_GBps")) - 1e-9)
        per_peer = min(per_peer, max(nics, need))
    per_peer = _pow2_up(per_peer)
    batch = int(c.get("max_p2p_per_batch"))
    if multi_node:
        while per_peer * -(-sys.n_ranks // batch) > p2p_total and per_peer > 1:
            per_peer //= 2
    else:
        per_peer = min(per_peer, p2p_total)
    n_min = per_peer
    while n_min * sys.n_ranks > p2p_total and n_min > 1:
        n_min //= 2
    hw = "net" if multi_node else ("nvlink" if shape.intra_hw == "nvlink" else "pcie")
    chunk = int(c.get("p2p_chunk_bytes", hw))
    lo, hi = (chunk // 2, chunk) if multi_node else (chunk // 8, chunk * 32)
    return P2pChannels(
        min_channels=n_min,
        max_channels=per_peer,
        min_part_bytes=max(lo, 1),
        max_part_bytes=max(hi, 1),
        channel_bw_Bps=float(c.get("p2p_channel_bw_GBps", sys.arch)) * 1e9,
        ll_threshold_bytes=float(c.get("p2p_ll_threshold_bytes")),
        pool_channels=p2p_total,
    )
