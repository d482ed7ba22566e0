"""Router lab configuration and results: what determines a lab run and what it returns.

:class:`LabConfig` holds everything that determines a run of the router lab
(:mod:`netsim.moe.lab`) and validates it on construction (errors are
:class:`~netsim.errors.SpecError`); it also resolves the router's scaled-down defaults and names
what keeps a configuration from converging (:mod:`netsim.moe.lab_check`).
:class:`LabProgress` is the per-step progress report, :class:`LabResult` what a run produced.
:func:`require_torch` imports torch or raises a :class:`~netsim.errors.NetsimError` with the
install hint.  This module needs no torch; the training loop lives in :mod:`netsim.moe.lab`,
which re-exports these names.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from netsim.errors import NetsimError, SpecError
from netsim.moe.lab_check import convergence_problem
from netsim.moe.lab_data import DEFAULT_DOMAINS, SOURCES
from netsim.moe.routers import ROUTERS, router_param_names
from netsim.moe.trace import RoutingTrace

__all__ = ["TORCH_HINT", "LabConfig", "LabProgress", "LabResult", "require_torch"]

TORCH_HINT = "the router lab needs torch: pip install 'moe-netsim[torch]'"


def require_torch() -> Any:
    """Import torch or raise a NetsimError with the install hint."""
    try:
        import torch
    except ImportError:
        raise NetsimError(TORCH_HINT) from None
    return torch


# --------------------------------------------------------------------------------------------
# configuration
# --------------------------------------------------------------------------------------------


#: LabConfig fields that must be integers >= 1, checked in this order
_POSITIVE_INTS = (
    "experts",
    "ep",
    "ranks_per_node",
    "layers",
    "hidden",
    "heads",
    "ffn_hidden",
    "seq_len",
    "batch",
    "steps",
    "max_corpus_bytes",
    "max_file_bytes",
    "eval_batches",
    "vocab",
)


@dataclass
class LabConfig:
    """Everything that determines a lab run (validated on construction; errors are SpecError)."""

    router: str = "switch"
    experts: int = 16
    ep: int = 16
    ranks_per_node: int = 8
    layers: int = 2
    hidden: int = 256
    heads: int = 4
    ffn_hidden: int = 512
    seq_len: int = 128
    batch: int = 2
    steps: int = 600
    lr: float = 2e-3
    weight_decay: float = 0.01
    seed: int = 0
    placement: str = "contiguous"
    sharding: str = "contiguous"
    router_params: dict[str, Any] = field(default_factory=dict)
    shared_experts: int | None = None
    corpus: list[str] = field(default_factory=list)
    domains: list[str] = field(default_factory=lambda: list(DEFAULT_DOMAINS))
    domain_sort: float = 0.0
    tokenizer: str = "bpe"
    vocab: int = 2048
    max_corpus_bytes: int = 4 << 20
    max_file_bytes: int = 16 << 10
    eval_fraction: float = 0.05
    eval_batches: int = 4
    threads: int | None = 1

    def __post_init__(self) -> None:
        ROUTERS.get(self.router)  # a one-line SpecError naming the allowed routers
        self._check_sizes()
        self._check_layout()
        self._check_data()
        self._check_training()
        self._check_router_params()

    def _check_sizes(self) -> None:
        for name in _POSITIVE_INTS:
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise SpecError(f"must be an integer >= 1 (got {v!r})", field=name)

    def _check_layout(self) -> None:
        """Experts over ranks over nodes, heads, GrAP's slices, placement and sharding names."""
        if self.experts % self.ep:
            raise SpecError(f"experts ({self.experts}) must be a multiple of ep ({self.ep})", field="experts")
        if self.ep % self.ranks_per_node and self.ranks_per_node < self.ep:
            raise SpecError(
                f"ep ({self.ep}) must be a multiple of ranks_per_node ({self.ranks_per_node})", field="ranks_per_node"
            )
        if self.hidden % self.heads:
            raise SpecError(f"hidden ({self.hidden}) must be a multiple of heads ({self.heads})", field="hidden")
        if self.router == "locmoe" and self.hidden % self.experts:
            raise SpecError(
                f"locmoe (GrAP) needs hidden ({self.hidden}) divisible by experts ({self.experts})", field="hidden"
            )
        if self.placement not in ("contiguous", "round_robin"):
            raise SpecError(
                f"lab placement must be contiguous or round_robin (got {self.placement!r})", field="placement"
            )
        if self.sharding not in ("contiguous", "random"):
            raise SpecError(f"sharding must be contiguous or random (got {self.sharding!r})", field="sharding")

    def _check_data(self) -> None:
        """Tokenizer, domain sorting and the corpus sources."""
        if self.tokenizer not in ("byte", "bpe"):
            raise SpecError(f"tokenizer must be byte or bpe (got {self.tokenizer!r})", field="tokenizer")
        if self.tokenizer == "bpe" and self.vocab < 257:
            raise SpecError(f"a byte-level BPE needs vocab > 256 (got {self.vocab})", field="vocab")
        if not 0.0 <= self.domain_sort <= 1.0:
            raise SpecError(f"must be in [0, 1] (got {self.domain_sort})", field="domain_sort")
        if self.corpus:
            return
        if not self.domains:
            raise SpecError("give at least one corpus source", field="domains")
        for name in self.domains:
            SOURCES.canonical(name)
        if len(set(self.domains)) != len(self.domains):
            raise SpecError(f"corpus sources repeat: {', '.join(self.domains)}", field="domains")

    def _check_training(self) -> None:
        """Learning rate, evaluation split, shared experts and threads."""
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise SpecError(f"must be > 0 (got {self.lr})", field="lr")
        if not 0.0 < self.eval_fraction < 0.5:
            raise SpecError(f"must be in (0, 0.5) (got {self.eval_fraction})", field="eval_fraction")
        if self.shared_experts is not None and self.shared_experts < 0:
            raise SpecError(f"must be >= 0 (got {self.shared_experts})", field="shared_experts")
        if self.threads is not None and self.threads < 1:
            raise SpecError(f"must be >= 1 (got {self.threads})", field="threads")

    def _check_router_params(self) -> None:
        allowed = set(router_param_names(self.router)) - {"local_experts"}
        for key in self.router_params:
            if key not in allowed:
                raise SpecError(
                    f"router {self.router!r} has no parameter {key!r}; allowed: {', '.join(sorted(allowed))}",
                    field=f"router.{key}",
                )

    @property
    def num_nodes(self) -> int:
        return max(1, self.ep // self.ranks_per_node)

    @property
    def num_domains(self) -> int:
        """Text sources the data is drawn from (1 with ``corpus`` paths)."""
        return 1 if self.corpus else len(self.domains)

    def convergence_problem(self) -> tuple[str, str] | None:
        """``(field, message)`` when this configuration cannot converge (:mod:`netsim.moe.lab_check`)."""
        import inspect

        params = self.resolved_router_params()
        defaults = {k: v.default for k, v in inspect.signature(ROUTERS.get(self.router)).parameters.items()}
        cf = params.get("capacity_factor", defaults.get("capacity_factor"))
        if self.router == "expert_choice":
            cf = None  # experts pick tokens: no overflow by construction
        k = int(params.get("top_k", 2 if self.router == "gshard" else defaults.get("top_k", 1)))
        return convergence_problem(
            steps=self.steps,
            tokens_per_group=self.batch * self.seq_len,
            experts=self.experts,
            capacity_factor=cf,
            top_k=k,
        )

    def resolved_router_params(self) -> dict[str, Any]:
        """Router parameters with the lab's scaled-down defaults filled in.

        DeepSeek-V3's own defaults (top-8 of 256 in 8 groups, 4 nodes per token) do not fit a
        16-expert model; unless given, the lab uses one group per node, ``topk_groups`` = half
        the nodes (at least 1) and ``top_k = 2``.  Hash routers get ``vocab_size = 256``.
        """
        p = dict(self.router_params)
        if self.router == "deepseek":
            p.setdefault("n_groups", self.num_nodes if self.experts % self.num_nodes == 0 else 1)
            p.setdefault("topk_groups", max(1, p["n_groups"] // 2))
            p.setdefault("top_k", min(2, self.experts))
        if self.router in ("hash", "rre"):
            p.setdefault("vocab_size", 256 if self.tokenizer == "byte" else self.vocab)
        if self.router == "rre" and self.num_domains > 1 and self.experts % self.num_domains == 0:
            p.setdefault("domains", self.num_domains)
        return p

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class LabProgress:
    """Progress report passed to the callback after every training step."""

    step: int  # 1-based, == steps when done
    steps: int
    loss: float  # total loss of the step
    task_loss: float  # next-token cross-entropy (nats)
    drop_rate: float
    elapsed_s: float


@dataclass
class LabResult:
    """What a lab run produced (also written to disk by :func:`run_lab`)."""

    config: LabConfig
    trace: RoutingTrace
    losses: pd.DataFrame
    summary: dict[str, Any]
