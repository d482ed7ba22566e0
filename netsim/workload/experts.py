"""Expert-parallel traffic of MoE layers: the token matrices of the router + placement, the four
all-to-all(v)s per layer and micro-batch, the expert tensor-parallel collectives around them,
and the accounting of where their bytes go.

Per (step, MoE layer, micro-batch, all-to-all group) the router (:class:`~netsim.workload.
moe_traffic.EPRouting`) gives a :class:`~netsim.workload.moe_traffic.GroupDispatch`: the token
rows each EP rank's experts compute from each other, and the token copies the dispatcher sends
(one per (token, expert), or de-duplicated per destination rank or node), cut into
``ep_overlap_slices`` slices.  The all-to-alls send ``copies * hidden * bytes``:
``fwd-dispatch`` (FP8 dispatch where ``moe.dispatch_bytes_per_element`` says), and
``fwd-combine``, ``bwd-dispatch`` (gradient of the combine), ``bwd-combine`` (gradient of the
dispatch) in the model's bytes per element; the combines send the matrix back, transposed.
Bytes on the matrix diagonal stay on their rank (counted as ``local_rank``); the others cross
the intra-node fabric or the nodes (``ep_bytes``).

The expert layout (:mod:`netsim.workload.expert_layout`) shapes the collectives:

* ``megatron``: one all-to-all per EP group; with ``expert_tp > 1`` the ETP group all-gathers
  the tokens its members received after the dispatch and reduce-scatters the expert outputs
  before the combine (phases ``*-etp-ag`` / ``*-etp-rs``, class ``tp``), and each member's
  experts compute the whole ETP group's tokens on their ``1/expert_tp`` shard;
* ``deepspeed`` / ``mindspore``: the TP group's ``tp`` EP groups share one all-to-all over
  ``ep * tp`` ranks whose matrix is the EP group's copies between ranks of the same TP rank
  (block-diagonal).  ``expert_alltoall: replicated`` sends every TP rank's own copy;
  ``groupwise`` runs the collective algorithm ``groupwise`` (each rank's ``1/tp`` share over
  the network, then an all-gather in the destination TP group, all counted as ``ep``).
  DeepSpeed's group-wise dispatch is its "drop" (each TP rank sends and computes its share,
  no all-gather) and its combine the group-wise one (DeepSpeed PR 5626).  MindSpore's experts
  are split over the TP group: their partial outputs are reduced over it after the experts
  (``all_reduce``, or ``reduce_scatter`` before a group-wise combine; phases ``*-experts-ar`` /
  ``*-experts-rs``, class ``tp``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from netsim.calibration.shared_sms import held_share
from netsim.config.workload import WorkloadSpec
from netsim.moe.dispatchers import DISPATCHERS
from netsim.workload.context import BuildContext
from netsim.workload.emit import OpEmitter
from netsim.workload.moe_traffic import EPRouting, GroupDispatch
from netsim.workload.plan import Collective, Deps

__all__ = ["ExpertTraffic", "ep_sm_share"]

GROUPWISE = "groupwise"


def ep_sm_share(spec: WorkloadSpec, accelerator: Mapping[str, Any], default_sms: int | None = None) -> float:
    """``overlap.ep_comm_sms`` as a share of the accelerator's SMs (0 when 0; unset: the
    dispatcher library's ``default_sms`` unless the whole-step ``overlap.comm_sms`` already
    accounts for the communication kernels, else 0; the checks:
    :func:`netsim.calibration.shared_sms.held_share`)."""
    sms = accelerator.get("sms")
    name = str(accelerator.get("name") or "")
    n = spec.overlap.ep_comm_sms
    if n is None:
        n = default_sms if default_sms and not spec.overlap.comm_sms and sms is not None else 0
    return held_share(n, None if sms is None else int(sms), "overlap.ep_comm_sms", name)


class ExpertTraffic:
    """Token matrices and all-to-alls of the MoE layers (``routing`` None: a dense model)."""

    def __init__(self, ctx: BuildContext, emit: OpEmitter, routing: EPRouting | None) -> None:
        self.ctx = ctx
        self.emit = emit
        self.routing = routing
        spec, L = ctx.spec, ctx.layout
        moe = spec.model.moe
        self.slices = spec.overlap.ep_overlap_slices
        self.dispatch_bpe = (moe.dispatch_bytes_per_element or ctx.bpe) if moe is not None else ctx.bpe
        self.moe_index = {ly: i for i, ly in enumerate(spec.model.moe_layers())}
        self.n_groups = L.pp * L.a2a_groups_per_stage
        self.replicated = L.experts.replicated and L.tp > 1
        self.groupwise = self.replicated and spec.parallelism.expert_alltoall == GROUPWISE
        self.cache: dict[tuple[int, int, int, int], list[GroupDispatch]] = {}
        #: tokens kept and dropped per (step, layer, expert)
        self.load_acc: dict[tuple[int, int, int], list[int]] = {}
        #: EP bytes (all four phases, all steps) that stay on the rank / cross the node fabric /
        #: cross nodes
        self.ep_bytes = {"local_rank": 0.0, "intra_node": 0.0, "inter_node": 0.0}
        #: token rows (token, expert) and token copies of the dispatch all-to-alls, all steps
        self.dispatch_rows = {"pairs": 0.0, "copies": 0.0}
        self.inexact = False
        dispatcher = DISPATCHERS.get(moe.dispatcher if moe is not None else "alltoall")
        #: bytes one rank adds to the dispatcher's metadata all-gather before a forward dispatch
        self.meta_bytes = (
            dispatcher().metadata_bytes(ctx.costs.route_tokens, moe.experts, padded=moe.padding == "capacity")
            if moe is not None and L.ep > 1
            else 0.0
        )
        #: the dispatcher kernel's fixed time per all-to-all call (netsim.moe.dispatchers)
        self.call_latency_s = (
            dispatcher.call_latency_s
            if moe is None or moe.dispatch_latency_us is None
            else moe.dispatch_latency_us * 1e-6
        )
        #: the host's time per forward dispatch after its synchronisation (netsim.moe.dispatchers,
        #: "Host synchronisation"); 0 with capacity padding (the splits are known) or without EP
        self.host_sync_s = (
            0.0
            if moe is None or L.ep <= 1 or moe.padding == "capacity"
            else dispatcher.host_sync_s
            if moe.host_sync_us is None
            else moe.host_sync_us * 1e-6
        )
        #: the share of the SMs the all-to-all kernels hold while in flight (``overlap.ep_comm_sms``)
        acc = dict(ctx.graph.graph.get("accelerator") or {})
        #: (unset: the dispatcher library's default SMs, e.g. DeepEP's 20)
        self.sm_share = ep_sm_share(spec, acc, dispatcher.default_sms if moe is not None and L.ep > 1 else None)
        #: unset for an NCCL dispatcher on an accelerator whose SM count the topology gives:
        #: NCCL's kernel holds one SM per thread block (:meth:`nccl_sm_share`), from its channel
        #: rule per EP group
        nccl = spec.overlap.ep_comm_sms is None and moe is not None and L.ep > 1 and dispatcher.nccl
        self.nccl = nccl and ctx.nccl_sms.sms is not None

    @property
    def holds_sms(self) -> bool:
        """Whether the all-to-alls hold SMs while in flight (the emitter then gives every compute
        op its SM-bound share)."""
        return self.sm_share > 0 or self.nccl

    # ------------------------------------------------------------------ tokens

    def dispatch(self, step: int, layer: int, mb: int, rank: int) -> list[GroupDispatch]:
        """The all-to-all of ``rank``'s group, one :class:`GroupDispatch` per slice (cached)."""
        L = self.ctx.layout
        gid = L.a2a_index(rank)
        key = (step, layer, mb, gid)
        hit = self.cache.get(key)
        if hit is not None:
            return hit
        assert self.routing is not None
        group = L.ep_group(L.a2a_group(rank)[0])
        got = self.routing.tokens(step, self.moe_index[layer], mb * self.n_groups + gid, [L.nodes[r] for r in group])
        for e in range(got.kept.size):
            acc = self.load_acc.setdefault((step, layer, e), [0, 0])
            acc[0] += int(got.kept[e])
            acc[1] += int(got.dropped[e])
        self.inexact |= not got.exact
        n = self.slices
        parts = [
            GroupDispatch(_slice(got.tokens, n, k), _slice(got.copies, n, k), got.kept, got.dropped, got.exact)
            for k in range(n)
        ]
        self.cache[key] = parts
        return parts

    def _rank_rows(self, step: int, layer: int, mb: int, rank: int) -> list[int]:
        """Token rows ``rank``'s experts compute per slice: its EP position's column, summed over
        its expert-TP group (whose members all-gather their tokens); a DeepSpeed TP rank under
        the group-wise all-to-all computes its ``1/tp`` share."""
        L = self.ctx.layout
        members = (rank,) if self.replicated else L.expert_tp_group(rank)
        out = [0] * self.slices
        for r in members:
            _, pos = L.ep_coords(r)
            for k, d in enumerate(self.dispatch(step, layer, mb, r)):
                out[k] += int(d.tokens[:, pos].sum())
        if self.groupwise and L.experts.etp == 1:
            t = L.coords(rank)[2]
            out = [v // L.tp + int(t < v % L.tp) for v in out]
        return out

    def received(self, step: int, layer: int, mb: int, rank: int) -> list[list[int]]:
        """Token rows the experts of ``rank`` compute, ``[slice][lane]``: one lane (``rank``), or
        in a lockstep plan every rank of the unit (whose slowest sets the expert time)."""
        lanes = self.emit.lanes
        ranks = lanes.lanes(rank, "rank") if lanes.lockstep else [rank]
        per = [self._rank_rows(step, layer, mb, r) for r in ranks]
        return [[p[k] for p in per] for k in range(self.slices)]

    # ------------------------------------------------------------------ all-to-alls

    def _matrix(self, rank: int, step: int, mb: int, layer: int, k: int, phase: str) -> np.ndarray:
        """Bytes ``[i][j]`` of the all-to-all of ``phase`` over ``rank``'s all-to-all group."""
        L = self.ctx.layout
        bpe = self.dispatch_bpe if phase.endswith("fwd-dispatch") else self.ctx.bpe
        copies = self.dispatch(step, layer, mb, rank)[k].copies
        if phase.endswith("combine"):
            copies = copies.T
        mat = copies.astype(np.float64) * float(self.ctx.hidden * bpe)
        return np.asarray(np.kron(mat, np.eye(L.tp)), dtype=np.float64) if self.replicated else mat

    def nccl_sm_share(self, group: tuple[int, ...], mat: np.ndarray) -> float:
        """The share of a member's SMs NCCL's all-to-all(v) kernel holds over ``group`` with the
        off-diagonal bytes ``mat``: one SM per thread block, the blocks NCCL's channel rule gives
        the EP communicator at the call's mean bytes per peer
        (:meth:`netsim.workload.nccl_sms.NcclSms.p2p_share`, class ``ep``)."""
        n = len(group)
        if n < 2:
            return 0.0
        return self.ctx.nccl_sms.p2p_share("ep", group, float(mat.sum()) / (n * (n - 1)), n - 1)

    def _algo(self, phase: str) -> tuple[str | None, float]:
        """The collective algorithm of ``phase`` (None: the scenario's) and the share of the
        matrix each rank sends directly (DeepSpeed's group-wise dispatch: its 1/tp)."""
        if not self.groupwise:
            return None, 1.0
        if self.ctx.layout.experts.etp == 1 and phase.endswith("dispatch"):
            return None, 1.0 / self.ctx.layout.tp
        return GROUPWISE, 1.0

    def all_to_all(self, rank: int, step: int, mb: int, layer: int, k: int, phase: str, deps: Deps) -> Deps:
        """Slice ``k`` of the expert all-to-all(v) of ``phase`` (the combines send the dispatch's
        matrix back, transposed); then the expert-TP collective that follows it."""
        L = self.ctx.layout
        if L.ep <= 1:
            return deps
        algo, share = self._algo(phase)

        def instance(r: int) -> tuple[tuple[Any, ...], Callable[[], Collective]]:
            key = ("ep", step, phase, mb, layer, k, L.group_index("a2a", r))

            def make() -> Collective:
                group = L.a2a_group(r)
                mat = self._matrix(r, step, mb, layer, k, phase) * share
                self._account(mat, group, algo)
                if phase.endswith("dispatch"):
                    d = self.dispatch(step, layer, mb, r)[k]
                    rep = L.tp if self.replicated else 1
                    self.dispatch_rows["pairs"] += float(d.tokens.sum()) * rep
                    self.dispatch_rows["copies"] += float(d.copies.sum()) * rep
                local = float(np.trace(mat))
                np.fill_diagonal(mat, 0.0)
                return Collective(
                    key,
                    "all_to_allv",
                    group,
                    float(mat.sum()),
                    "ep",
                    f"ep.{phase}",
                    matrix=mat,
                    phase=phase,
                    layer=layer,
                    microbatch=mb,
                    step=step,
                    slice=k,
                    local_bytes=local,
                    algo=algo,
                    latency_s=self.call_latency_s,
                    sm_share=self.nccl_sm_share(group, mat) if self.nccl else self.sm_share,
                )

            return key, make

        stream = "ep.dispatch" if phase.endswith("dispatch") else "ep.combine"
        key, make = instance(rank)
        out = self.emit.comm(rank, step, stream, deps, key, make, lanes=("a2a", instance))
        if phase.endswith("dispatch"):
            out = self._etp(rank, step, mb, layer, k, phase, out, "all_gather")
        return out

    def metadata(self, rank: int, step: int, mb: int, layer: int, phase: str, deps: Deps) -> Deps:
        """The dispatcher's metadata all-gather over the all-to-all group before a forward
        dispatch (``phase``: ``fwd-dispatch`` or its recomputation): HybridEP's routing maps, one
        byte per (token, expert) from every rank; Megatron's ``alltoall`` token counts, one int64
        per expert (:meth:`netsim.moe.dispatchers.Dispatcher.metadata_bytes`); nothing for the
        other dispatchers, with capacity padding or without expert parallelism."""
        L = self.ctx.layout
        if L.ep <= 1 or self.meta_bytes <= 0:
            return deps
        ph = f"{phase}-meta"

        def nbytes(r: int) -> float:  # the gathered output: every member's routing map
            return self.meta_bytes * len(L.a2a_group(r))

        def group_key(r: int) -> tuple[tuple[int, ...], tuple[Any, ...]]:
            return L.a2a_group(r), ("ep-meta", step, ph, mb, layer, L.group_index("a2a", r))

        return self.emit.group_collective(
            rank, step, "ep.dispatch", "ep", "all_gather", nbytes, deps, "a2a", group_key, layer=layer, mb=mb, phase=ph
        )

    def host_sync(self, rank: int, step: int, mb: int, layer: int, phase: str, deps: Deps) -> Deps:
        """The host's wait for the received token counts before a forward dispatch (``phase``:
        ``fwd-dispatch`` or its recomputation), after ``deps`` (the metadata all-gather or the
        router): a host op of :attr:`host_sync_s` that gates what the rank issues next."""
        return self.emit.host_wait(rank, step, f"host.{phase}-sync", self.host_sync_s, deps, layer, mb)

    def before_combine(self, rank: int, step: int, mb: int, layer: int, k: int, phase: str, deps: Deps) -> Deps:
        """The expert-TP reduction of the experts' partial outputs before the combine of
        ``phase``: Megatron's ETP reduce-scatter, MindSpore's TP all-reduce (reduce-scatter
        before a group-wise combine); nothing for whole experts."""
        return self._etp(rank, step, mb, layer, k, phase, deps, "reduce")

    def _etp(self, rank: int, step: int, mb: int, layer: int, k: int, phase: str, deps: Deps, what: str) -> Deps:
        L = self.ctx.layout
        if L.experts.etp <= 1:
            return deps

        def nbytes(r: int) -> float:
            return float(self._rank_rows(step, layer, mb, r)[k] * self.ctx.hidden * self.ctx.bpe)

        if self.replicated:  # MindSpore: every TP rank has every token; reduce the partial outputs
            if what != "reduce":
                return deps
            op = "reduce_scatter" if self.groupwise else "all_reduce"
            tag, kind, group_of = ("experts-rs" if self.groupwise else "experts-ar"), "tp", L.tp_group
        else:  # Megatron's ETP: all-gather the tokens, reduce-scatter the outputs
            op = "all_gather" if what != "reduce" else "reduce_scatter"
            tag, kind, group_of = ("etp-ag" if what != "reduce" else "etp-rs"), "etp", L.expert_tp_group
        ph = f"{phase}-{tag}"

        def group_key(r: int) -> tuple[tuple[int, ...], tuple[Any, ...]]:
            return group_of(r), ("etp", step, ph, mb, layer, k, L.group_index(kind, r))

        return self.emit.group_collective(
            rank, step, "tp", "tp", op, nbytes, deps, kind, group_key, layer=layer, mb=mb, phase=ph
        )

    # ------------------------------------------------------------------ accounting

    def _account(self, mat: np.ndarray, group: tuple[int, ...], algo: str | None) -> None:
        """Add ``mat``'s bytes to ``ep_bytes`` as its collective moves them (the group-wise
        algorithm: ``1/tp`` over the pairs, then the destination TP group's all-gather)."""
        nodes = self.ctx.layout.nodes
        node = np.array([nodes[r] for r in group])
        if algo == GROUPWISE:
            g = self.ctx.layout.tp
            cross = node[:, None] != node[None, :]
            wire: np.ndarray = np.where(cross, mat / g, mat)
            gathered = float(wire[cross].sum()) * (g - 1)  # each receiver to its g-1 peers
            self._add(wire, node, extra_intra=gathered)
            return
        self._add(mat, node)

    def _add(self, mat: np.ndarray, node: np.ndarray, extra_intra: float = 0.0) -> None:
        same = node[:, None] == node[None, :]
        local = float(np.trace(mat))
        intra = float(mat[same].sum()) - local
        self.ep_bytes["local_rank"] += local
        self.ep_bytes["intra_node"] += intra + extra_intra
        self.ep_bytes["inter_node"] += float(mat.sum()) - local - intra

    def expert_load(self) -> list[tuple[int, int, int, int, int]]:
        """``(step, layer, expert, tokens kept, tokens dropped)`` rows, sorted."""
        return [(s, ly, e, v[0], v[1]) for (s, ly, e), v in sorted(self.load_acc.items())]


def _slice(mat: np.ndarray, n: int, k: int) -> np.ndarray:
    """Slice ``k`` of ``n`` of an integer matrix (the remainders to the first slices)."""
    return mat // n + (mat % n > k).astype(mat.dtype)
