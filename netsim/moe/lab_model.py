"""The router lab's model: a small causal transformer whose feed-forward layers are MoE layers.

Token embedding + learned positions, ``layers`` pre-norm blocks (causal self-attention, then a
MoE feed-forward: ``experts`` GELU experts of width ``ffn_hidden`` behind the router's torch
wrapper, plus ``shared_experts`` dense experts), a final norm and an output head tied to the
embedding.  Experts are initialised N(0, 1/d) in, N(0, 1/f) / sqrt(2 layers) out (GPT-2's
residual scaling).  Torch is imported inside the functions that build the module classes, so this
module imports without it.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from netsim.moe.lab import LabConfig

__all__ = ["build_model"]


def build_model(cfg: LabConfig, routers: list[Any], vocab: int) -> Any:
    """The lab model for ``cfg`` with one router per layer and a vocabulary of ``vocab`` tokens."""
    import torch
    from torch import Tensor, nn

    block = _block_type(cfg, _moe_ffn_type(cfg))

    class LabModel(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            shared = cfg.shared_experts if cfg.shared_experts is not None else (1 if cfg.router == "deepseek" else 0)
            self.emb = nn.Embedding(vocab, cfg.hidden)
            nn.init.normal_(self.emb.weight, std=0.02)
            self.pos = nn.Parameter(torch.randn(cfg.seq_len, cfg.hidden) * 0.02)
            self.blocks = nn.ModuleList(block(r, shared) for r in routers)
            self.ln = nn.LayerNorm(cfg.hidden)

        def forward(self, tokens: Tensor, ctx: dict[str, Any]) -> tuple[Tensor, list[Any]]:
            x = self.emb(tokens) + self.pos[: tokens.shape[1]]
            routings = []
            for blk in self.blocks:
                x, r = blk(x, ctx)
                routings.append(r)
            return self.ln(x) @ self.emb.weight.T, routings

    return LabModel()


def _moe_ffn_type(cfg: LabConfig) -> Any:
    """The MoE feed-forward module class: the router's torch wrapper, ``experts`` GELU experts
    (each token's output is the gate-weighted sum of its experts'), plus ``shared`` dense ones."""
    import torch
    from torch import Tensor, nn
    from torch.nn import functional as F

    from netsim.moe.torch_routers import torch_router

    class MoEFFN(nn.Module):
        def __init__(self, router: Any, shared: int) -> None:
            super().__init__()
            n, d, f = cfg.experts, cfg.hidden, cfg.ffn_hidden
            self.router = torch_router(router)
            self.w1 = nn.Parameter(torch.randn(n, d, f) * d**-0.5)
            self.b1 = nn.Parameter(torch.zeros(n, f))
            self.w2 = nn.Parameter(torch.randn(n, f, d) * f**-0.5 / math.sqrt(2 * cfg.layers))
            self.shared = nn.ModuleList(
                nn.Sequential(nn.Linear(d, f), nn.GELU(), nn.Linear(f, d)) for _ in range(shared)
            )

        def forward(self, x: Tensor, ctx: dict[str, Any]) -> tuple[Tensor, Any]:
            routing = self.router(x, **ctx)
            experts = routing.result.experts
            k = experts.shape[1]
            flat = experts.reshape(-1)
            order = np.argsort(flat, kind="stable")
            sorted_e = flat[order]
            bounds = np.searchsorted(sorted_e, np.arange(cfg.experts + 1))
            tok = torch.from_numpy(order // k)
            gate = routing.gates.reshape(-1)[torch.from_numpy(order)]
            y = torch.zeros_like(x)
            for e in range(cfg.experts):
                lo, hi = int(bounds[e]), int(bounds[e + 1])
                if lo == hi:
                    continue
                idx = tok[lo:hi]
                h = F.gelu(x[idx] @ self.w1[e] + self.b1[e]) @ self.w2[e]
                y = y.index_add(0, idx, h * gate[lo:hi, None])
            for s in self.shared:
                y = y + s(x)
            return y, routing

    return MoEFFN


def _block_type(cfg: LabConfig, moe_ffn: Any) -> Any:
    """The pre-norm transformer block class: causal self-attention, then the MoE feed-forward."""
    from torch import Tensor, nn
    from torch.nn import functional as F

    class Block(nn.Module):
        def __init__(self, router: Any, shared: int) -> None:
            super().__init__()
            d = cfg.hidden
            self.ln1 = nn.LayerNorm(d)
            self.qkv = nn.Linear(d, 3 * d)
            self.proj = nn.Linear(d, d)
            self.ln2 = nn.LayerNorm(d)
            self.moe = moe_ffn(router, shared)

        def forward(self, x: Tensor, ctx: dict[str, Any]) -> tuple[Tensor, Any]:
            b, s, d = x.shape
            q, kk, v = self.qkv(self.ln1(x)).split(d, dim=-1)
            h = cfg.heads

            def heads(z: Tensor) -> Tensor:
                return z.view(b, s, h, d // h).transpose(1, 2)

            a = F.scaled_dot_product_attention(heads(q), heads(kk), heads(v), is_causal=True)
            x = x + self.proj(a.transpose(1, 2).reshape(b, s, d))
            y, routing = self.moe(self.ln2(x).reshape(b * s, d), ctx)
            return x + y.view(b, s, d), routing

    return Block
