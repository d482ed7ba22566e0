"""Expert-parallel traffic of MoE layers: the token matrices of the router + placement, the four
all-to-all(v)s per layer and micro-batch, and the accounting of where their bytes go.

Per (step, MoE layer, micro-batch, EP group) the router (:class:`~netsim.workload.moe_traffic.
EPRouting`) gives the token matrix ``[ep, ep]`` (tokens from rank i for experts on rank j),
cut into ``ep_overlap_slices`` slices.  The all-to-alls send ``tokens * hidden * bytes`` per
entry: ``fwd-dispatch`` (FP8 dispatch where ``moe.dispatch_bytes_per_element`` says), and
``fwd-combine``, ``bwd-dispatch`` (gradient of the combine), ``bwd-combine`` (gradient of the
dispatch) in the model's bytes per element; the combines send the matrix back, transposed.
Bytes on the matrix diagonal stay on their rank (counted as ``local_rank``); the others cross
the intra-node fabric or the nodes (``ep_bytes``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from netsim.workload.context import BuildContext
from netsim.workload.emit import OpEmitter
from netsim.workload.moe_traffic import EPRouting
from netsim.workload.plan import Collective, Deps

__all__ = ["ExpertTraffic"]


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
        self.n_ep_groups = L.pp * (L.stage_size // L.ep)
        self.tok_cache: dict[tuple[int, int, int, int], list[np.ndarray]] = {}
        #: tokens kept and dropped per (step, layer, expert)
        self.load_acc: dict[tuple[int, int, int], list[int]] = {}
        #: EP bytes (all four phases, all steps) that stay on the rank / cross the node fabric /
        #: cross nodes
        self.ep_bytes = {"local_rank": 0.0, "intra_node": 0.0, "inter_node": 0.0}

    def tokens(self, step: int, layer: int, mb: int, rank: int) -> list[np.ndarray]:
        """Token matrices ``[ep, ep]`` of the EP group of ``rank``, one per slice (cached)."""
        L = self.ctx.layout
        gid = L.group_index("ep", rank)
        key = (step, layer, mb, gid)
        hit = self.tok_cache.get(key)
        if hit is not None:
            return hit
        assert self.routing is not None
        group = L.ep_group(rank)
        tok, kept, dropped = self.routing.tokens(
            step, self.moe_index[layer], mb * self.n_ep_groups + gid, [L.nodes[r] for r in group]
        )
        for e in range(kept.size):
            acc = self.load_acc.setdefault((step, layer, e), [0, 0])
            acc[0] += int(kept[e])
            acc[1] += int(dropped[e])
        n = self.slices
        parts = [tok // n + (tok % n > k).astype(tok.dtype) for k in range(n)]
        self.tok_cache[key] = parts
        return parts

    def received(self, step: int, layer: int, mb: int, rank: int) -> list[list[int]]:
        """Tokens the experts of ``rank`` receive, ``[slice][lane]``: one lane (``rank``), or in
        a lockstep plan every rank of the unit (whose slowest sets the expert time)."""
        lanes = self.emit.lanes
        if not lanes.lockstep:
            _, e_rank = self.ctx.layout.ep_coords(rank)
            return [[int(tk[:, e_rank].sum())] for tk in self.tokens(step, layer, mb, rank)]
        per_group = [self.tokens(step, layer, mb, g) for g in lanes.lanes(rank, "ep")]
        return [np.concatenate([tks[k].sum(axis=0) for tks in per_group]).tolist() for k in range(self.slices)]

    def all_to_all(self, rank: int, step: int, mb: int, layer: int, k: int, phase: str, deps: Deps) -> Deps:
        """Slice ``k`` of an EP all-to-all(v) of ``phase`` (the combines send the dispatch's
        token matrix back, transposed)."""
        L = self.ctx.layout
        if L.ep <= 1:
            return deps
        bpe = self.dispatch_bpe if phase.endswith("fwd-dispatch") else self.ctx.bpe
        back = phase.endswith("combine")
        h = self.ctx.hidden

        def instance(r: int) -> tuple[tuple[Any, ...], Callable[[], Collective]]:
            key = ("ep", step, phase, mb, layer, k, L.group_index("ep", r))

            def make() -> Collective:
                group = L.ep_group(r)
                tk = self.tokens(step, layer, mb, r)[k]
                mat = (tk.T if back else tk).astype(np.float64) * float(h * bpe)
                self._account(mat, group)
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
                )

            return key, make

        stream = "ep.dispatch" if phase.endswith("dispatch") else "ep.combine"
        key, make = instance(rank)
        return self.emit.comm(rank, step, stream, deps, key, make, lanes=("ep", instance))

    def _account(self, mat: np.ndarray, group: tuple[int, ...]) -> None:
        nodes = self.ctx.layout.nodes
        node = np.array([nodes[r] for r in group])
        same = node[:, None] == node[None, :]
        local = float(np.trace(mat))
        intra = float(mat[same].sum()) - local
        self.ep_bytes["local_rank"] += local
        self.ep_bytes["intra_node"] += intra
        self.ep_bytes["inter_node"] += float(mat.sum()) - local - intra

    def expert_load(self) -> list[tuple[int, int, int, int, int]]:
        """``(step, layer, expert, tokens kept, tokens dropped)`` rows, sorted."""
        return [(s, ly, e, v[0], v[1]) for (s, ly, e), v in sorted(self.load_acc.items())]
