"""Torch versions of the routers: differentiable gates and losses, numpy routing decisions.

Each :class:`TorchRouter` wraps a numpy :class:`~netsim.moe.routers.Router`.  It computes the
router scores in torch (so gradients reach the router weights and the hidden states), hands the
detached scores, in a :class:`~netsim.moe.routers.TokenBatch`, to the numpy router's ``assign`` for
the discrete part (top-k, node-limited groups, capacity, drops, GShard's random second expert),
then gathers the gates from the torch scores and recomputes the auxiliary losses in torch with
the hard statistics (``f_i``, loads) taken from the numpy result.  Numpy and torch therefore
always route identically, and the torch loss values equal the numpy ones (tests check both).

As the numpy routers (:mod:`netsim.moe.routers.base`), the gate logits are a float32 matrix
product whatever the module's dtype (Switch Transformer's selective precision, Fedus et al., JMLR
2022, section 2.4); the normaliser and everything after it run in the module's dtype, so a
``.double()`` module reproduces the numpy router's float64 softmax on the same float32 logits.

This module imports torch at import time; import it only where torch is available
(``pip install 'moe-netsim[torch]'``).
"""

from __future__ import annotations

from typing import Any, NamedTuple, cast

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor, nn

from netsim.errors import SpecError
from netsim.moe.routers import (
    DeepSeekRouter,
    ExpertChoiceRouter,
    GShardRouter,
    HashRouter,
    LocMoERouter,
    MixtralRouter,
    Router,
    RoutingResult,
    SwitchRouter,
    TokenBatch,
    _groups,
    _top_k,
    grouped_balance,
)

__all__ = ["TorchRouter", "TorchRouting", "torch_router"]


class TorchRouting(NamedTuple):
    """Routing of a batch in torch: numpy decisions + differentiable gates and losses."""

    result: RoutingResult
    gates: Tensor  # [T, k], 0 in empty slots
    losses: dict[str, Tensor]


def _np(t: Tensor) -> NDArray[np.float64]:
    return np.asarray(t.detach().cpu().to(torch.float64).numpy())


def _gather(scores: Tensor, experts: NDArray[np.int64]) -> Tensor:
    idx = torch.from_numpy(np.maximum(experts, 0)).to(scores.device)
    mask = torch.from_numpy(experts >= 0).to(scores.device, scores.dtype)
    return scores.gather(1, idx) * mask


def _switch_aux(scores: Tensor, f: NDArray[np.float64], alpha: float) -> Tensor:
    n = scores.shape[1]
    ft = torch.from_numpy(f).to(scores.device, scores.dtype)
    return alpha * n * (ft * scores.mean(dim=0)).sum()


def _grouped_aux(scores: Tensor, requested: NDArray[np.int64], src_rank: NDArray[Any] | None, alpha: float) -> Tensor:
    """:func:`netsim.moe.routers.grouped_switch_aux` in torch (``P`` differentiable, ``f`` constant)."""
    t, n = scores.shape
    group, sizes = _groups(src_rank, t)
    f, _ = grouped_balance(requested, np.zeros((t, n)), group, n)
    gi = torch.from_numpy(group).to(scores.device)
    p = scores.new_zeros((sizes.size, n)).index_add(0, gi, scores)
    p = p / torch.from_numpy(np.maximum(sizes, 1).astype(np.float64)).to(scores.device, scores.dtype)[:, None]
    ft = torch.from_numpy(f).to(scores.device, scores.dtype)
    return alpha * n * (ft * p).sum(dim=-1).mean()


class TorchRouter(nn.Module):
    """Base wrapper; subclasses define :meth:`scores` and :meth:`finish`."""

    def __init__(self, router: Router) -> None:
        super().__init__()
        self.router = router

    def scores(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def finish(self, scores: Tensor, result: RoutingResult, batch: TokenBatch) -> tuple[Tensor, dict[str, Tensor]]:
        raise NotImplementedError

    def forward(
        self,
        x: Tensor,
        *,
        token_ids: NDArray[np.integer[Any]] | None = None,
        src_rank: NDArray[np.integer[Any]] | None = None,
        seq_ids: NDArray[np.integer[Any]] | None = None,
        domain_ids: NDArray[np.integer[Any]] | None = None,
    ) -> TorchRouting:
        """Route ``x [T, d]``; the keyword arrays are numpy, as for the numpy routers."""
        if x.ndim != 2 or x.shape[1] != self.router.hidden:
            raise SpecError(f"hidden states must have shape [T, {self.router.hidden}], got {tuple(x.shape)}")
        s = self.scores(x)
        batch = TokenBatch(_np(s), token_ids, src_rank, seq_ids, domain_ids)
        result = self.router.assign(batch)
        gates, losses = self.finish(s, result, batch)
        return TorchRouting(result, gates, losses)

    def sync_to_numpy(self) -> None:
        """Copy the trained parameters back into the numpy router."""


class _Linear(TorchRouter):
    def __init__(self, router: Router) -> None:
        super().__init__(router)
        w = router.params()["weight"]
        self.weight = nn.Parameter(torch.tensor(w, dtype=torch.float32))

    def logits(self, x: Tensor) -> Tensor:
        """``x @ W`` as a float32 product, returned in ``x``'s dtype (module docstring)."""
        return (x.to(torch.float32) @ self.weight.to(torch.float32)).to(x.dtype)

    def scores(self, x: Tensor) -> Tensor:
        return torch.softmax(self.logits(x), dim=-1)

    def sync_to_numpy(self) -> None:
        # a copy: a float64 module's weight would otherwise share memory with the numpy array
        # and change under the router's cached float32 copy of it
        self.router.weight = _np(self.weight).copy()  # type: ignore[attr-defined]


class _HashT(TorchRouter):
    def scores(self, x: Tensor) -> Tensor:
        return x.new_zeros((x.shape[0], 0))

    def finish(self, scores: Tensor, result: RoutingResult, batch: TokenBatch) -> tuple[Tensor, dict[str, Tensor]]:
        return torch.from_numpy(result.gates).to(scores.device, torch.float32), {}


class _SwitchT(_Linear):
    def finish(self, scores: Tensor, result: RoutingResult, batch: TokenBatch) -> tuple[Tensor, dict[str, Tensor]]:
        r = self.router
        return _gather(scores, result.experts), {"aux": _grouped_aux(scores, result.requested, batch.src_rank, r.alpha)}  # type: ignore[attr-defined]


class _GShardT(_Linear):
    def finish(self, scores: Tensor, result: RoutingResult, batch: TokenBatch) -> tuple[Tensor, dict[str, Tensor]]:
        r = self.router
        top = _top_k(_np(scores), 2)
        g = scores.gather(1, torch.from_numpy(top).to(scores.device))
        g = g / g.sum(dim=-1, keepdim=True).clamp_min(1e-30)
        gates = g * torch.from_numpy(result.experts >= 0).to(scores.device, scores.dtype)
        return gates, {"aux": _grouped_aux(scores, result.requested, batch.src_rank, r.alpha)}  # type: ignore[attr-defined]


class _MixtralT(_Linear):
    def finish(self, scores: Tensor, result: RoutingResult, batch: TokenBatch) -> tuple[Tensor, dict[str, Tensor]]:
        r = self.router
        g = _gather(scores, result.experts)
        g = g / g.sum(dim=-1, keepdim=True).clamp_min(1e-30)
        c = result.counts / max(result.num_tokens, 1)
        return g, {"aux": _switch_aux(scores, c, r.alpha)}  # type: ignore[attr-defined]


class _ExpertChoiceT(_Linear):
    def finish(self, scores: Tensor, result: RoutingResult, batch: TokenBatch) -> tuple[Tensor, dict[str, Tensor]]:
        return _gather(scores, result.experts), {}


class _DeepSeekT(_Linear):
    router: DeepSeekRouter

    def scores(self, x: Tensor) -> Tensor:
        return torch.sigmoid(self.logits(x))

    def finish(self, scores: Tensor, result: RoutingResult, batch: TokenBatch) -> tuple[Tensor, dict[str, Tensor]]:
        r = self.router
        s = _gather(scores, result.experts)
        gates = r.route_scale * s / s.sum(dim=-1, keepdim=True).clamp_min(1e-30)
        t, n = scores.shape
        seq = np.zeros(t, dtype=np.int64) if batch.seq_ids is None else batch.seq_ids
        _, inv = np.unique(seq, return_inverse=True)
        inv = inv.reshape(t)
        n_seq = int(inv.max()) + 1 if t else 1
        length = np.bincount(inv, minlength=n_seq).astype(np.float64)
        sel = np.zeros((n_seq, n))
        np.add.at(sel, (np.repeat(inv, r.top_k), result.experts.reshape(-1)), 1.0)
        f = torch.from_numpy(sel * n / (r.top_k * np.maximum(length, 1.0)[:, None])).to(scores.device, scores.dtype)
        norm = scores / scores.sum(dim=-1, keepdim=True).clamp_min(1e-30)
        p = scores.new_zeros((n_seq, n)).index_add(0, torch.from_numpy(inv).to(scores.device), norm)
        p = p / torch.from_numpy(np.maximum(length, 1.0)[:, None]).to(scores.device, scores.dtype)
        return gates, {"seq_balance": r.alpha * (f * p).sum(dim=-1).mean()}


class _LocMoET(TorchRouter):
    router: LocMoERouter

    def __init__(self, router: LocMoERouter) -> None:
        super().__init__(router)
        self.register_buffer("grap", torch.tensor(router.grap, dtype=torch.float32))
        self.gate_bias = nn.Parameter(torch.tensor(router.gate_bias, dtype=torch.float32))

    def scores(self, x: Tensor) -> Tensor:
        grap = cast(Tensor, self.grap)
        z = (x.to(torch.float32) @ grap.to(torch.float32).T).to(x.dtype)  # float32 product
        return torch.softmax(torch.relu(z + self.gate_bias.to(x.dtype)), dim=-1)

    def finish(self, scores: Tensor, result: RoutingResult, batch: TokenBatch) -> tuple[Tensor, dict[str, Tensor]]:
        r = self.router
        losses = {"aux": _grouped_aux(scores, result.requested, batch.src_rank, r.alpha)}
        src = batch.src_rank
        if src is not None and r.local_experts is not None and result.num_tokens:
            present = np.unique(src)
            d_l = torch.from_numpy(r.target(int(present.max()) + 1)[present]).to(scores.device, scores.dtype)
            _, inv = np.unique(src, return_inverse=True)
            inv_t = torch.from_numpy(inv.reshape(-1)).to(scores.device)
            sums = scores.new_zeros((present.size, scores.shape[1])).index_add(0, inv_t, scores)
            cnt = torch.from_numpy(np.bincount(inv.reshape(-1)).astype(np.float64)).to(scores.device, scores.dtype)
            d_c = sums / cnt[:, None]
            kl = torch.where(d_c > 0, d_c * (torch.log(d_c.clamp_min(1e-30)) - torch.log(d_l)), 0.0).sum(dim=-1)
            losses["loc"] = r.mu * kl.mean()
        return _gather(scores, result.experts), losses

    def sync_to_numpy(self) -> None:
        self.router.gate_bias = _np(self.gate_bias).copy()


_WRAPPERS: list[tuple[type[Router], type[TorchRouter]]] = [
    (HashRouter, _HashT),  # also RRE (a subclass)
    (SwitchRouter, _SwitchT),
    (GShardRouter, _GShardT),
    (MixtralRouter, _MixtralT),
    (DeepSeekRouter, _DeepSeekT),
    (ExpertChoiceRouter, _ExpertChoiceT),
    (LocMoERouter, _LocMoET),
]


def torch_router(router: Router) -> TorchRouter:
    """Wrap a numpy router in its torch module (weights copied as float32 parameters)."""
    for cls, wrapper in _WRAPPERS:
        if isinstance(router, cls):
            return wrapper(router)
    raise SpecError(f"router {router.name!r} has no torch implementation")
