"""Router lab: train a small MoE language model on real text and record how it routes.

Routing skew, drops and locality are properties of a *trained* router on *real* data: an
untrained router on random vectors is nearly uniform, while learned routers drift towards a few
favourite experts unless their losses hold them back, and hash routers follow the token
frequencies of the corpus.  The lab measures this on a scale that runs in a minute or two on a
laptop CPU:

* data: byte-level tokens (vocabulary 256) of real text that needs no download; by default the
  Python standard library sources of the running interpreter (``sysconfig`` ``stdlib`` path,
  top-level ``*.py`` files sorted by name, at most ``max_file_bytes`` of each, at most
  ``max_corpus_bytes`` in all; the corpus hash is recorded).  The last ``eval_fraction`` of
  the corpus is held out for an evaluation loss.
* ranks: the batch is split over ``ep`` expert-parallel ranks, each with ``batch`` sequences of
  ``seq_len`` bytes, so every token has a source rank.  With ``sharding="contiguous"`` (the
  default) rank ``r`` reads from its own contiguous shard of the training text, as data-parallel
  ranks read their own shard of a dataset; ``"random"`` lets every rank read anywhere.
* model: a byte embedding, learned positions, ``layers`` pre-norm transformer blocks (causal
  self-attention + a MoE feed-forward with ``experts`` GELU experts of width ``ffn_hidden``,
  plus ``shared_experts`` dense experts for DeepSeek), a tied output head.
* routers: the torch wrappers of :mod:`netsim.moe.torch_routers`; the loss is the next-byte
  cross-entropy plus every auxiliary loss the router defines.  Hash routers hash the byte
  values; RRE treats the ranks' data shards as its domains (``domains`` equal groups of
  consecutive ranks; the default ``domains=1`` is a single domain).  DeepSeek's selection bias is
  updated after every step from the step's expert loads.  The experts live on ranks by the
  ``placement`` (contiguous by default, ``ranks_per_node`` ranks per node), which defines the
  locality that LocMoE's loss rewards and the metrics report.

Outputs (:func:`run_lab`, written atomically): ``routing.parquet`` (routing trace, format in
:mod:`netsim.moe.trace`: tokens and drops per step, layer, source rank and expert),
``losses.csv``/``losses.parquet`` (per-step losses and routing metrics) and ``lab.json``
(configuration, corpus, final losses, load and locality statistics, timing).  Runs are seeded:
the same configuration, corpus and torch build give identical tables.

Torch is optional for netsim; this module raises a :class:`~netsim.errors.NetsimError` naming
``pip install 'moe-netsim[torch]'`` when it is missing.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import platform
import sysconfig
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from netsim.errors import NetsimError, SpecError
from netsim.io import atomic_dir, check_output_dir, write_json, write_table
from netsim.moe.placement import Placement, make_placement, rank_nodes
from netsim.moe.routers import ROUTERS, DeepSeekRouter, make_router, router_names, router_param_names
from netsim.moe.trace import RoutingTrace, TraceMeta, write_routing_trace
from netsim.moe.traffic import routing_metrics

__all__ = ["LabConfig", "LabProgress", "LabResult", "load_corpus", "require_torch", "run_lab", "train_lab"]

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


@dataclass
class LabConfig:
    """Everything that determines a lab run (validated on construction; errors are SpecError)."""

    router: str = "switch"
    experts: int = 16
    ep: int = 16
    ranks_per_node: int = 8
    layers: int = 2
    hidden: int = 64
    heads: int = 4
    ffn_hidden: int = 128
    seq_len: int = 64
    batch: int = 2
    steps: int = 600
    lr: float = 3e-3
    weight_decay: float = 0.01
    seed: int = 0
    placement: str = "contiguous"
    sharding: str = "contiguous"
    router_params: dict[str, Any] = field(default_factory=dict)
    shared_experts: int | None = None
    corpus: list[str] = field(default_factory=list)
    max_corpus_bytes: int = 4 << 20
    max_file_bytes: int = 16 << 10
    eval_fraction: float = 0.05
    eval_batches: int = 4
    threads: int | None = 1

    def __post_init__(self) -> None:
        if self.router not in ROUTERS:
            raise SpecError(f"unknown router {self.router!r}; allowed: {', '.join(router_names())}", field="router")
        for name in (
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
        ):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise SpecError(f"must be an integer >= 1 (got {v!r})", field=name)
        if self.experts % self.ep:
            raise SpecError(f"experts ({self.experts}) must be a multiple of ep ({self.ep})", field="experts")
        if self.ep % self.ranks_per_node and self.ranks_per_node < self.ep:
            raise SpecError(
                f"ep ({self.ep}) must be a multiple of ranks_per_node ({self.ranks_per_node})",
                field="ranks_per_node",
            )
        if self.hidden % self.heads:
            raise SpecError(f"hidden ({self.hidden}) must be a multiple of heads ({self.heads})", field="hidden")
        if self.router == "locmoe" and self.hidden % self.experts:
            raise SpecError(
                f"locmoe (GrAP) needs hidden ({self.hidden}) divisible by experts ({self.experts})",
                field="hidden",
            )
        if self.placement not in ("contiguous", "round_robin"):
            raise SpecError(
                f"lab placement must be contiguous or round_robin (got {self.placement!r})", field="placement"
            )
        if self.sharding not in ("contiguous", "random"):
            raise SpecError(f"sharding must be contiguous or random (got {self.sharding!r})", field="sharding")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise SpecError(f"must be > 0 (got {self.lr})", field="lr")
        if not 0.0 < self.eval_fraction < 0.5:
            raise SpecError(f"must be in (0, 0.5) (got {self.eval_fraction})", field="eval_fraction")
        if self.shared_experts is not None and self.shared_experts < 0:
            raise SpecError(f"must be >= 0 (got {self.shared_experts})", field="shared_experts")
        if self.threads is not None and self.threads < 1:
            raise SpecError(f"must be >= 1 (got {self.threads})", field="threads")
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
            p.setdefault("vocab_size", 256)
        return p

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class LabProgress:
    """Progress report passed to the callback after every training step."""

    step: int  # 1-based, == steps when done
    steps: int
    loss: float  # total loss of the step
    task_loss: float  # next-byte cross-entropy (nats)
    drop_rate: float
    elapsed_s: float


@dataclass
class LabResult:
    """What a lab run produced (also written to disk by :func:`run_lab`)."""

    config: LabConfig
    trace: RoutingTrace
    losses: pd.DataFrame
    summary: dict[str, Any]


# --------------------------------------------------------------------------------------------
# corpus
# --------------------------------------------------------------------------------------------


def _is_text(data: bytes) -> bool:
    return b"\x00" not in data[:4096]


def load_corpus(
    paths: Sequence[str | Path] = (), *, max_bytes: int = 4 << 20, max_file_bytes: int = 16 << 10
) -> tuple[bytes, dict[str, Any]]:
    """The lab's training text and a description (source, files, bytes, sha256).

    With no ``paths``: the top-level ``*.py`` files of the Python standard library, sorted by
    name, the first ``max_file_bytes`` of each, until ``max_bytes``.  Otherwise the given files
    and (recursively, sorted) the text files inside given directories, whole, until
    ``max_bytes``.  Files are joined with a blank line.
    """
    files: list[Path] = []
    per_file: int | None
    if not paths:
        root = Path(sysconfig.get_paths()["stdlib"])
        files = sorted(p for p in root.glob("*.py") if p.is_file())
        source = f"python-stdlib:{root}"
        per_file = max_file_bytes
        if not files:
            raise NetsimError(f"no Python standard library sources found under {root}; pass --corpus PATH")
    else:
        per_file = None
        source = "files"
        for raw in paths:
            p = Path(raw)
            if p.is_dir():
                files.extend(sorted(q for q in p.rglob("*") if q.is_file()))
            elif p.is_file():
                files.append(p)
            else:
                raise SpecError("corpus path not found", source=str(p), field="corpus")
    chunks: list[bytes] = []
    used: list[str] = []
    total = 0
    for f in files:
        try:
            data = f.read_bytes()
        except OSError as exc:
            raise SpecError(f"cannot read corpus file ({exc.strerror})", source=str(f), field="corpus") from None
        if not _is_text(data):
            continue
        if per_file is not None:
            data = data[:per_file]
        data = data[: max_bytes - total]
        if not data:
            break
        chunks.append(data)
        used.append(f.name if not paths else str(f))
        total += len(data) + 2
        if total >= max_bytes:
            break
    text = b"\n\n".join(chunks)[:max_bytes]
    info = {
        "source": source,
        "files": len(used),
        "bytes": len(text),
        "sha256": hashlib.sha256(text).hexdigest(),
        "first_file": used[0] if used else None,
        "last_file": used[-1] if used else None,
    }
    return text, info


# --------------------------------------------------------------------------------------------
# model (torch; built inside functions so the module imports without torch)
# --------------------------------------------------------------------------------------------


def _build_model(cfg: LabConfig, routers: list[Any]) -> Any:
    torch = require_torch()
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

    class Block(nn.Module):
        def __init__(self, router: Any, shared: int) -> None:
            super().__init__()
            d = cfg.hidden
            self.ln1 = nn.LayerNorm(d)
            self.qkv = nn.Linear(d, 3 * d)
            self.proj = nn.Linear(d, d)
            self.ln2 = nn.LayerNorm(d)
            self.moe = MoEFFN(router, shared)

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

    class LabModel(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            shared = cfg.shared_experts if cfg.shared_experts is not None else (1 if cfg.router == "deepseek" else 0)
            self.emb = nn.Embedding(256, cfg.hidden)
            nn.init.normal_(self.emb.weight, std=0.02)
            self.pos = nn.Parameter(torch.randn(cfg.seq_len, cfg.hidden) * 0.02)
            self.blocks = nn.ModuleList(Block(r, shared) for r in routers)
            self.ln = nn.LayerNorm(cfg.hidden)

        def forward(self, tokens: Tensor, ctx: dict[str, Any]) -> tuple[Tensor, list[Any]]:
            x = self.emb(tokens) + self.pos[: tokens.shape[1]]
            routings = []
            for blk in self.blocks:
                x, r = blk(x, ctx)
                routings.append(r)
            return self.ln(x) @ self.emb.weight.T, routings

    return LabModel()


# --------------------------------------------------------------------------------------------
# training
# --------------------------------------------------------------------------------------------


class _Data:
    """Deterministic batches: rank r's sequences come from its shard of the training text."""

    def __init__(self, text: bytes, cfg: LabConfig) -> None:
        arr = np.frombuffer(text, dtype=np.uint8).astype(np.int64)
        n_eval = max(cfg.seq_len + 2, int(len(arr) * cfg.eval_fraction))
        self.train, self.eval = arr[:-n_eval], arr[-n_eval:]
        self.cfg = cfg
        need = cfg.seq_len + 2
        shard = len(self.train) // cfg.ep
        if len(self.eval) < need or (cfg.sharding == "contiguous" and shard < need) or len(self.train) < need:
            raise SpecError(
                f"corpus too small ({len(arr)} bytes) for {cfg.ep} ranks of sequences of {cfg.seq_len}",
                field="corpus",
            )
        self.rng = np.random.default_rng([cfg.seed, 7])

    def batch(self) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.int64]]:
        """``(inputs [ep*batch, S], targets [ep*batch, S], src_rank [ep*batch])``."""
        c = self.cfg
        s = c.seq_len
        src = np.repeat(np.arange(c.ep), c.batch)
        if c.sharding == "contiguous":
            shard = len(self.train) // c.ep
            starts = src * shard + self.rng.integers(0, shard - s - 1, size=src.size)
        else:
            starts = self.rng.integers(0, len(self.train) - s - 1, size=src.size)
        idx = starts[:, None] + np.arange(s + 1)[None, :]
        win = self.train[idx]
        return win[:, :-1], win[:, 1:], src

    def eval_batches(self) -> list[tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.int64]]]:
        c = self.cfg
        s = c.seq_len
        rows = c.ep * c.batch
        span = len(self.eval) - s - 1
        out = []
        for b in range(c.eval_batches):
            starts = (np.arange(rows) * 7919 + b * 104729) % max(span, 1)
            idx = starts[:, None] + np.arange(s + 1)[None, :]
            win = self.eval[idx]
            out.append((win[:, :-1], win[:, 1:], np.repeat(np.arange(c.ep), c.batch)))
        return out


def _lr_factor(i: int, steps: int) -> float:
    """Linear warm-up over the first 5% of steps, then cosine decay to 10% of the peak."""
    warm = min(1.0, (i + 1) / max(1, steps // 20))
    return warm * (0.1 + 0.45 * (1.0 + math.cos(math.pi * min(i, steps) / steps)))


def _context(tokens: NDArray[np.int64], src: NDArray[np.int64], cfg: LabConfig) -> dict[str, Any]:
    """Per-token routing context: token ids, source rank, sequence, and (RRE) data domain."""
    rows, s = tokens.shape
    ctx: dict[str, Any] = {
        "token_ids": tokens.reshape(-1),
        "src_rank": np.repeat(src, s),
        "seq_ids": np.repeat(np.arange(rows), s),
    }
    if cfg.router == "rre":
        domains = int(cfg.router_params.get("domains", 1))
        ctx["domain_ids"] = (ctx["src_rank"] * domains) // cfg.ep
    return ctx


def _summarise(records: list[dict[str, Any]]) -> dict[str, float]:
    keys = (
        "drop_rate",
        "expert_load_max_mean",
        "expert_load_cv",
        "unused_experts",
        "rank_load_max_mean",
        "share_same_rank",
        "share_same_node",
        "share_cross_node",
    )
    out: dict[str, float] = {}
    for k in keys:
        vals = np.array([r[k] for r in records], dtype=np.float64)
        out[k] = float(np.nanmean(vals)) if vals.size else float("nan")
    return out


def train_lab(cfg: LabConfig, progress: Callable[[LabProgress], None] | None = None) -> LabResult:
    """Train the lab model with ``cfg`` and return its routing trace, losses and summary."""
    torch = require_torch()
    from torch.nn import functional as F

    text, corpus_info = load_corpus(cfg.corpus, max_bytes=cfg.max_corpus_bytes, max_file_bytes=cfg.max_file_bytes)
    data = _Data(text, cfg)
    placement: Placement = make_placement(cfg.placement, cfg.experts, cfg.ep)
    node = rank_nodes(cfg.ep, min(cfg.ranks_per_node, cfg.ep))
    params = cfg.resolved_router_params()
    if cfg.router == "locmoe":
        params["local_experts"] = placement.local_experts(node)
    routers = [
        make_router(
            cfg.router,
            n_experts=cfg.experts,
            hidden=cfg.hidden,
            seed=np.random.default_rng([cfg.seed, 11, i]),
            **params,
        )
        for i in range(cfg.layers)
    ]
    top_k = routers[0].top_k

    prev_threads = torch.get_num_threads()
    prev_det = torch.are_deterministic_algorithms_enabled()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.use_deterministic_algorithms(True)
    try:
        torch.manual_seed(cfg.seed)
        model = _build_model(cfg, routers)
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: _lr_factor(i, cfg.steps))
        counts_records: list[tuple[int, int, int, NDArray[np.int64], NDArray[np.int64]]] = []
        rows: list[dict[str, Any]] = []
        metric_rows: list[dict[str, Any]] = []
        t0 = time.perf_counter()
        model.train()
        for step in range(cfg.steps):
            inp, tgt, src = data.batch()
            ctx = _context(inp, src, cfg)
            logits, routings = model(torch.from_numpy(inp), ctx)
            task = F.cross_entropy(logits.reshape(-1, 256), torch.from_numpy(tgt).reshape(-1))
            aux_sum: dict[str, Any] = {}
            for r in routings:
                for k, v in r.losses.items():
                    aux_sum[k] = aux_sum[k] + v if k in aux_sum else v
            loss = task + sum(aux_sum.values(), torch.zeros(()))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            step_metrics = []
            for layer, r in enumerate(routings):
                tok, drp = r.result.by_source(ctx["src_rank"], cfg.ep)
                counts_records.append((step, layer, 0, tok, drp))
                m = routing_metrics(tok, placement, dropped=drp, rank_node=node).to_dict()
                metric_rows.append({"step": step, "layer": layer, **m})
                step_metrics.append(m)
                rt = routers[layer]
                if isinstance(rt, DeepSeekRouter):
                    rt.update_bias(r.result.counts)
            row = {"step": step, "loss": float(loss.detach()), "task_loss": float(task.detach())}
            row.update({k: float(v.detach()) for k, v in sorted(aux_sum.items())})
            row.update(
                {
                    f"{k}": float(np.nanmean([m[k] for m in step_metrics]))
                    for k in ("drop_rate", "expert_load_cv", "share_cross_node")
                }
            )
            rows.append(row)
            if progress is not None:
                progress(
                    LabProgress(
                        step + 1,
                        cfg.steps,
                        row["loss"],
                        row["task_loss"],
                        row["drop_rate"],
                        time.perf_counter() - t0,
                    )
                )
        train_s = time.perf_counter() - t0

        model.eval()
        eval_losses = []
        with torch.no_grad():
            for inp, tgt, src in data.eval_batches():
                logits, _ = model(torch.from_numpy(inp), _context(inp, src, cfg))
                eval_losses.append(float(F.cross_entropy(logits.reshape(-1, 256), torch.from_numpy(tgt).reshape(-1))))
        for blk in model.blocks:
            blk.moe.router.sync_to_numpy()
    finally:
        torch.use_deterministic_algorithms(prev_det)
        torch.set_num_threads(prev_threads)

    meta = TraceMeta(
        experts=cfg.experts,
        ep=cfg.ep,
        ranks_per_node=min(cfg.ranks_per_node, cfg.ep),
        hidden=cfg.hidden,
        top_k=top_k,
        router=cfg.router,
        extra={
            "source": "netsim lab",
            "seed": cfg.seed,
            "placement": cfg.placement,
            "corpus_sha256": corpus_info["sha256"],
        },
        tokens_per_rank=cfg.batch * cfg.seq_len,
    )
    trace = RoutingTrace.from_counts(counts_records, meta)
    losses = pd.DataFrame(rows)
    tail = max(1, cfg.steps // 4)
    final_rows = rows[-tail:]
    loss_cols = [c for c in losses.columns if c not in ("step", "drop_rate", "expert_load_cv", "share_cross_node")]
    summary: dict[str, Any] = {
        "config": {
            **cfg.to_dict(),
            "router_params_resolved": {k: v for k, v in params.items() if k != "local_experts"},
        },
        "corpus": corpus_info,
        "placement": placement.to_dict(),
        "tokens_per_step": cfg.ep * cfg.batch * cfg.seq_len,
        "top_k": top_k,
        "final": {
            "window_steps": tail,
            **{c: float(np.mean([r[c] for r in final_rows])) for c in loss_cols},
            "eval_loss": float(np.mean(eval_losses)),
            "eval_bits_per_byte": float(np.mean(eval_losses) / math.log(2)),
        },
        "load": {
            "all_steps": _summarise(metric_rows),
            "final_window": _summarise([m for m in metric_rows if m["step"] >= cfg.steps - tail]),
            "final_window_by_layer": {
                str(ly): _summarise([m for m in metric_rows if m["step"] >= cfg.steps - tail and m["layer"] == ly])
                for ly in range(cfg.layers)
            },
        },
        "timing": {
            "train_s": train_s,
            "steps_per_s": cfg.steps / train_s if train_s > 0 else float("nan"),
            "torch_threads": cfg.threads or prev_threads,
        },
        "versions": {"torch": str(torch.__version__), "python": platform.python_version()},
    }
    return LabResult(cfg, trace, losses, summary)


def run_lab(
    cfg: LabConfig,
    out_dir: str | Path,
    *,
    progress: Callable[[LabProgress], None] | None = None,
    overwrite: bool = True,
) -> LabResult:
    """Train (:func:`train_lab`) and write ``routing.parquet``, ``losses.*`` and ``lab.json``."""
    require_torch()
    out = Path(out_dir)
    check_output_dir(out, force=overwrite)
    result = train_lab(cfg, progress)
    with atomic_dir(out_dir, force=overwrite, kind="lab") as tmp:
        write_routing_trace(result.trace, tmp / "routing.parquet")
        write_table(result.losses, tmp, "losses")
        write_json(_jsonable(result.summary), tmp / "lab.json")
    return result


def _jsonable(obj: Any) -> Any:
    """Replace non-finite floats with None so lab.json is strict JSON."""
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj
