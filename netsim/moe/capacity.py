"""Expert capacity: how many tokens an expert accepts per batch before it drops the rest.

Token-choice routers with a fixed buffer per expert (Switch, GShard) give every expert room for
``capacity = ceil(T / n * capacity_factor)`` tokens of a batch of ``T`` (``ceil(cf * k T / n)``
for top-k); tokens beyond it are dropped and pass through the residual connection.

LocMoE (Li et al., arXiv 2401.13920, Theorem 1) derives a lower bound for the capacity of its
GrAP router.  For a token direction uniform on the unit sphere in ``d`` dimensions, the squared
cosine with a fixed gating vector follows ``Beta(1/2, (d-1)/2)``, so the probability that the
cosine's magnitude is at least ``delta`` is::

    p_delta = 1 - I_{delta^2}(1/2, (d-1)/2)      (I = regularised incomplete beta)

and, with ``delta`` the smallest cosine between a token and the gating vector of the expert it
should reach, the expert capacity must satisfy::

    ec_min >= 1 / (n * p_delta)

``ec_min`` is a number of *tokens* (paper, appendix A.3: "the minimum amount of tokens that make
at least one class-discriminative token routed to expert i"), independent of the batch size: it is
the floor to which LocMoE may reduce an expert's capacity, not a share of the batch.  At the
paper's ``d = 5120``, ``n = 16`` and ``delta = 0.03`` it is 1.96, so
:func:`locmoe_capacity_tokens` gives 2 tokens.

For large ``d`` the paper gives ``ec_min > (1/n) * exp(delta^2 d / (2 - delta^2))``.  The paper
measured ``delta ~ 0.03``.  Worked values: ``d = 3`` gives ``p_delta = 1 - delta`` (the cosine is
uniform on [-1, 1]); ``d = 2`` gives ``1 - (2/pi) arcsin(delta)``.
"""

from __future__ import annotations

import math

from scipy.special import betainc

from netsim.errors import SpecError

__all__ = [
    "ceil_tokens",
    "locmoe_capacity_tokens",
    "locmoe_min_capacity",
    "locmoe_min_capacity_approx",
    "locmoe_p_delta",
    "token_capacity",
]


def ceil_tokens(x: float) -> int:
    """``ceil`` that ignores floating-point fuzz (``2.0000000000004`` -> 2)."""
    return math.ceil(x - 1e-9)


def token_capacity(tokens: int, n_experts: int, capacity_factor: float, top_k: int = 1) -> int:
    """Per-expert capacity in tokens: ``ceil(capacity_factor * top_k * tokens / n_experts)``."""
    if n_experts < 1:
        raise SpecError(f"experts must be >= 1 (got {n_experts})", field="experts")
    if capacity_factor <= 0:
        raise SpecError(f"capacity_factor must be > 0 (got {capacity_factor})", field="capacity_factor")
    return ceil_tokens(capacity_factor * top_k * tokens / n_experts)


def _check(hidden: int, delta: float) -> None:
    if hidden < 2:
        raise SpecError(f"hidden must be >= 2 for the LocMoE bound (got {hidden})", field="hidden")
    if not 0.0 <= delta < 1.0:
        raise SpecError(f"delta must be in [0, 1) (got {delta})", field="delta")


def locmoe_p_delta(hidden: int, delta: float) -> float:
    """``p_delta = 1 - betainc(1/2, (d-1)/2, delta^2)``: P(|cos(x, w)| >= delta), x uniform.

    Evaluated as the complement ``betainc((d-1)/2, 1/2, 1 - delta^2)``, which is the same
    number without the cancellation of ``1 - I`` in the far tail (large ``d * delta^2``).
    """
    _check(hidden, delta)
    return float(betainc((hidden - 1) / 2.0, 0.5, 1.0 - delta * delta))


def locmoe_min_capacity(n_experts: int, hidden: int, delta: float = 0.03) -> float:
    """Theorem 1 of LocMoE: ``ec_min = 1 / (n * p_delta)`` tokens per expert.

    ``inf`` when ``p_delta`` underflows to 0 (no finite capacity satisfies the bound).
    """
    if n_experts < 1:
        raise SpecError(f"experts must be >= 1 (got {n_experts})", field="experts")
    p = locmoe_p_delta(hidden, delta)
    return math.inf if p == 0.0 else 1.0 / (n_experts * p)


def locmoe_min_capacity_approx(n_experts: int, hidden: int, delta: float = 0.03) -> float:
    """The large-``d`` form ``(1/n) * exp(delta^2 d / (2 - delta^2))``."""
    _check(hidden, delta)
    if n_experts < 1:
        raise SpecError(f"experts must be >= 1 (got {n_experts})", field="experts")
    return math.exp(delta * delta * hidden / (2.0 - delta * delta)) / n_experts


def locmoe_capacity_tokens(n_experts: int, hidden: int, delta: float = 0.03) -> int:
    """The Theorem-1 capacity as a whole number of tokens: ``max(1, ceil(ec_min))``.

    Raises a SpecError when the bound is infinite (``p_delta`` underflows: ``delta`` far above
    ``1/sqrt(d)``), since no finite buffer satisfies it.
    """
    ec = locmoe_min_capacity(n_experts, hidden, delta)
    if not math.isfinite(ec) or ec > 2**62:
        raise SpecError(
            f"the Theorem-1 capacity is unbounded at hidden={hidden}, delta={delta} (p_delta underflows); lower delta",
            field="router.delta",
        )
    return max(1, ceil_tokens(ec))
