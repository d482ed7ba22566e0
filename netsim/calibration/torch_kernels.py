"""The catalogue's kernels written in torch, as the profiler times them.

:func:`kernel_closures` builds, for one kernel of :data:`netsim.calibration.kernels.KERNELS` at
one shape, the seeded inputs and a closure per pass: ``fwd`` and ``bwd`` (the backward alone:
``torch.autograd.grad`` on a retained graph) or ``step`` (AdamW).  Where torch offers more than
one implementation (grouped GEMM, AdamW) it also returns which one it took, which the profiler
records with the measurement.  One function per kernel family; :data:`_FAMILIES` maps every
kernel name to its family.  torch itself is passed in (it is optional, imported by the caller).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

import numpy as np

from netsim.errors import SpecError

Closures = dict[str, Callable[[], Any]]


class _Inputs:
    """Seeded random inputs on the device (one CPU generator, seed 0, drawn in call order)."""

    def __init__(self, torch: ModuleType, dtype: Any, dev: str) -> None:
        self.torch = torch
        self.dtype = dtype
        self.dev = dev
        self.gen = torch.Generator(device="cpu").manual_seed(0)

    def rand(self, *shape: int, scale: float = 1.0, grad: bool = True) -> Any:
        """A standard normal tensor times ``scale`` that requires grad (unless ``grad=False``)."""
        t = (self.torch.randn(*shape, generator=self.gen) * scale).to(device=self.dev, dtype=self.dtype)
        return t.requires_grad_(grad)

    def with_bwd(self, fwd: Callable[[], Any], inputs: Sequence[Any]) -> Closures:
        """``fwd`` and the backward of one call of it with respect to ``inputs`` (retained graph)."""
        torch = self.torch
        out = fwd()
        grad_out = torch.randn(out.shape, generator=self.gen).to(device=self.dev, dtype=out.dtype)

        def bwd() -> Any:
            return torch.autograd.grad(out, inputs, grad_out, retain_graph=True)

        return {"fwd": fwd, "bwd": bwd}


def _gemm(z: _Inputs, kernel: str, s: dict[str, int]) -> tuple[Closures, str | None]:
    # weights stored [n, k] and used transposed, as torch.nn.Linear does
    x, w = z.rand(s["m"], s["k"]), z.rand(s["n"], s["k"], scale=s["k"] ** -0.5)
    return z.with_bwd(lambda: x @ w.t(), (x, w)), None


def _grouped_gemm(z: _Inputs, kernel: str, s: dict[str, int]) -> tuple[Closures, str | None]:
    torch, dev = z.torch, z.dev
    t, e = s["tokens"], s["experts"]
    x, w = z.rand(t, s["k"]), z.rand(e, s["n"], s["k"], scale=s["k"] ** -0.5)
    splits = [t // e + (1 if i < t % e else 0) for i in range(e)]

    def loop() -> Any:
        return torch.cat([xs @ w[i].t() for i, xs in enumerate(x.split(splits))])

    grouped_mm = getattr(torch, "_grouped_mm", None)
    if dev == "cuda" and grouped_mm is not None:
        offs = torch.tensor(np.cumsum(splits), device=dev, dtype=torch.int32)

        def fused() -> Any:
            return grouped_mm(x, w.transpose(-2, -1), offs=offs)

        try:
            fused().sum().backward()
            x.grad = w.grad = None
            return z.with_bwd(fused, (x, w)), "torch._grouped_mm"
        except (RuntimeError, TypeError, NotImplementedError):
            x.grad = w.grad = None
    return z.with_bwd(loop, (x, w)), "loop over experts"


def _attention(z: _Inputs, kernel: str, s: dict[str, int]) -> tuple[Closures, str | None]:
    F = z.torch.nn.functional
    b, h, sq, d = s["batch"], s["heads"], s["seq"], s["head_dim"]
    q, k, v = z.rand(b, h, sq, d), z.rand(b, h, sq, d), z.rand(b, h, sq, d)
    return z.with_bwd(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True), (q, k, v)), None


def _router(z: _Inputs, kernel: str, s: dict[str, int]) -> tuple[Closures, str | None]:
    torch = z.torch
    t, hid, e, topk = s["tokens"], s["hidden"], s["experts"], s["topk"]
    x = z.rand(t, hid)
    if kernel == "router_linear":
        wg = z.rand(hid, e, scale=hid**-0.5)

        def route() -> Any:
            p = torch.softmax((x @ wg).float(), dim=-1)
            vals, _ = torch.topk(p, topk, dim=-1)
            return vals / vals.sum(dim=-1, keepdim=True) if topk > 1 else vals

        return z.with_bwd(route, (x, wg)), None
    if hid % e:
        raise SpecError(f"router_grap needs hidden divisible by experts (got {hid}, {e})")

    def grap() -> Any:
        logits = torch.relu(x.view(t, e, hid // e).mean(dim=-1))
        p = torch.softmax(logits.float(), dim=-1)
        vals, _ = torch.topk(p, topk, dim=-1)
        return vals / vals.sum(dim=-1, keepdim=True) if topk > 1 else vals

    return z.with_bwd(grap, (x,)), None


def _permutation(z: _Inputs, kernel: str, s: dict[str, int]) -> tuple[Closures, str | None]:
    torch, dev = z.torch, z.dev
    t, hid, topk = s["tokens"], s["hidden"], s["topk"]
    experts = max(8, topk)
    expert_ids = torch.randint(0, experts, (t * topk,), generator=z.gen)
    token_of_row = (torch.argsort(expert_ids, stable=True) // topk).to(dev)
    if kernel == "permute":
        x = z.rand(t, hid)
        return z.with_bwd(lambda: x.index_select(0, token_of_row), (x,)), None
    y = z.rand(t * topk, hid)
    probs = torch.rand(t * topk, generator=z.gen).to(device=dev, dtype=z.dtype).requires_grad_(True)

    def unpermute() -> Any:
        out = torch.zeros(t, hid, device=dev, dtype=z.dtype)
        return out.index_add(0, token_of_row, y * probs.unsqueeze(1))

    return z.with_bwd(unpermute, (y, probs)), None


def _norm(z: _Inputs, kernel: str, s: dict[str, int]) -> tuple[Closures, str | None]:
    F = z.torch.nn.functional
    t, hid = s["tokens"], s["hidden"]
    x, wn = z.rand(t, hid), z.rand(hid)
    if kernel == "layernorm":
        bn = z.rand(hid)
        return z.with_bwd(lambda: F.layer_norm(x, (hid,), wn, bn), (x, wn, bn)), None
    return z.with_bwd(lambda: F.rms_norm(x, (hid,), wn), (x, wn)), None


def _eager(z: _Inputs, kernel: str, s: dict[str, int]) -> tuple[Closures, str | None]:
    """The eager fp32 op sequences of IBM fms's Llama (netsim.calibration.eager_counts)."""
    torch = z.torch
    t, hid = s["tokens"], s["hidden"]
    x = z.rand(t, hid)
    if kernel == "rmsnorm_eager":
        wn = z.rand(hid)

        def rmsnorm() -> Any:
            xf = x.float()
            return wn * (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + 1e-6)).type_as(x)

        return z.with_bwd(rmsnorm, (x, wn)), None
    if hid % 2:
        raise SpecError(f"rope_eager needs an even hidden (got {hid})")
    # the rotation table per position: [t, hid/2, 2, 2] of cos/sin (fp32, no gradient)
    angle = torch.rand(t, hid // 2, generator=z.gen).to(z.dev)
    cos, sin = angle.cos(), angle.sin()
    table = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)

    def rope() -> Any:
        pairs = x.float().view(t, hid // 2, 1, 2)
        return table.mul(pairs).sum(-1).flatten(1).type_as(x)

    return z.with_bwd(rope, (x,)), None


def _swiglu(z: _Inputs, kernel: str, s: dict[str, int]) -> tuple[Closures, str | None]:
    F = z.torch.nn.functional
    t, hid = s["tokens"], s["hidden"]
    x = z.rand(t, 2 * hid)

    def swiglu() -> Any:
        a, b = x.chunk(2, dim=-1)
        return F.silu(a) * b

    # PyTorch has no fused SwiGLU: both kernels time the eager sequence (Megatron's jit-fused one
    # is Liger-Kernel's measurement in liger-megatron-h100.csv)
    return z.with_bwd(swiglu, (x,)), ("eager (chunk, silu, product)" if kernel == "swiglu" else None)


def _prob_weight(z: _Inputs, kernel: str, s: dict[str, int]) -> tuple[Closures, str | None]:
    """Megatron-Core's unfused weighting in the grouped experts: the activation times the fp32
    router probabilities of its rows, cast back to the activation's dtype."""
    torch = z.torch
    t, hid = s["tokens"], s["hidden"]
    x = z.rand(t, hid)
    probs = torch.rand(t, 1, generator=z.gen).to(device=z.dev, dtype=torch.float32).requires_grad_(True)
    return z.with_bwd(lambda: (x * probs).to(x.dtype), (x, probs)), None


def _elementwise(z: _Inputs, kernel: str, s: dict[str, int]) -> tuple[Closures, str | None]:
    torch = z.torch
    F = torch.nn.functional
    t, hid = s["tokens"], s["hidden"]
    x = z.rand(t, hid)
    if kernel == "residual":  # out = x + bias + residual
        bias, res = z.rand(hid), z.rand(t, hid)
        return z.with_bwd(lambda: x + bias + res, (x, bias, res)), None
    if kernel == "gelu":  # Megatron's fused bias + GELU (tanh approximation)
        bias = z.rand(hid)
        return z.with_bwd(lambda: F.gelu(x + bias, approximate="tanh"), (x, bias)), None
    if kernel == "gelu_eager":  # PyTorch's GELU, no bias (Megatron without bias_activation_fusion)
        return z.with_bwd(lambda: F.gelu(x), (x,)), None
    if kernel == "softmax":  # scaled softmax over each row (the attention scores)
        scale = hid**-0.5
        return z.with_bwd(lambda: torch.softmax(x * scale, dim=-1), (x,)), None
    return z.with_bwd(lambda: F.dropout(x, p=0.1, training=True), (x,)), None


def _cross_entropy(z: _Inputs, kernel: str, s: dict[str, int]) -> tuple[Closures, str | None]:
    """The loss over ``[tokens, vocab]`` logits in the model's dtype, per token (as Megatron
    returns it).  ``cross_entropy``: Megatron's unfused sequence (fp32 copy, max, subtract, exp,
    sum, softmax kept for the backward); ``cross_entropy_fused``: PyTorch's fused log-softmax and
    NLL on the fp32 copy, standing in for Megatron's TorchScript fusion; ``cross_entropy_online``:
    PyTorch's kernel on the 16-bit logits (no fp32 copy), the nearest torch has to a one-pass
    kernel."""
    torch = z.torch
    F = torch.nn.functional
    t, v = s["tokens"], s["vocab"]
    logits = z.rand(t, v)
    target = torch.randint(0, v, (t,), generator=z.gen).to(z.dev)
    if kernel == "cross_entropy":

        def unfused() -> Any:
            x = logits.float()
            x = x - x.max(dim=-1, keepdim=True).values
            predicted = x.gather(1, target.unsqueeze(1)).squeeze(1)
            exp = x.exp()
            total = exp.sum(dim=-1)
            return total.log() - predicted

        return z.with_bwd(unfused, (logits,)), "unfused (Megatron's op sequence)"
    if kernel == "cross_entropy_fused":
        return z.with_bwd(lambda: F.cross_entropy(logits.float(), target, reduction="none"), (logits,)), (
            "torch.nn.functional.cross_entropy on an fp32 copy"
        )
    return z.with_bwd(lambda: F.cross_entropy(logits, target, reduction="none"), (logits,)), (
        "torch.nn.functional.cross_entropy on the 16-bit logits"
    )


def _adamw(z: _Inputs, kernel: str, s: dict[str, int]) -> tuple[Closures, str | None]:
    torch, dev = z.torch, z.dev
    p = torch.nn.Parameter(torch.zeros(s["params"], device=dev, dtype=torch.float32))
    p.grad = torch.randn(s["params"], generator=z.gen).to(dev)
    opt = torch.optim.AdamW([p], lr=1e-4, fused=True) if dev == "cuda" else torch.optim.AdamW([p], lr=1e-4)
    return {"step": opt.step}, ("fused" if dev == "cuda" else "for-loop")


_FAMILIES: dict[str, Callable[[_Inputs, str, dict[str, int]], tuple[Closures, str | None]]] = {
    "gemm": _gemm,
    "grouped_gemm": _grouped_gemm,
    "attention": _attention,
    "router_linear": _router,
    "router_grap": _router,
    "permute": _permutation,
    "unpermute": _permutation,
    "layernorm": _norm,
    "rmsnorm": _norm,
    "rmsnorm_eager": _eager,
    "rope_eager": _eager,
    "swiglu": _swiglu,
    "swiglu_eager": _swiglu,
    "prob_weight": _prob_weight,
    "gelu": _elementwise,
    "gelu_eager": _elementwise,
    "residual": _elementwise,
    "softmax": _elementwise,
    "dropout": _elementwise,
    "cross_entropy": _cross_entropy,
    "cross_entropy_fused": _cross_entropy,
    "cross_entropy_online": _cross_entropy,
    "adamw": _adamw,
}


def kernel_closures(
    torch: ModuleType, kernel: str, s: dict[str, int], dtype: Any, dev: str
) -> tuple[Closures, str | None]:
    """Inputs and closures for every pass of ``kernel`` at shape ``s`` (see the catalogue), and
    a note on the implementation where there is a choice (grouped GEMM, AdamW)."""
    family = _FAMILIES.get(kernel)
    if family is None:
        raise SpecError(f"no profiler for kernel {kernel!r}")  # catalogue and profiler out of sync
    return family(_Inputs(torch, dtype, dev), kernel, s)


__all__ = ["Closures", "kernel_closures"]
