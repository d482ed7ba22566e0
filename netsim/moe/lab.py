"""Router lab: train a small MoE language model on real text and record how it routes.

Routing skew, drops and locality are properties of a *trained* router on *real* data: an
untrained router on random vectors is nearly uniform, an untrained softmax gate in a real model
sends nearly every token to one expert (all hidden states look alike at initialisation), and
learned routers drift towards a few favourite experts unless their losses hold them back; hash
routers follow the token frequencies of the corpus.  The lab measures this on a scale that runs
in minutes on one CPU core:

* data (:mod:`netsim.moe.lab_data`): several distinct text sources that need no download
  (Python code, C headers, English documentation, German manual pages by default), tokenised
  with a byte-level BPE trained locally (``tokenizer="bpe"``, ``vocab`` tokens; ``"byte"`` for
  raw bytes).  The last ``eval_fraction`` of every source is held out for an evaluation loss.
  ``corpus`` paths replace the sources by one text (sharded ``contiguous`` or ``random``).
* ranks: the batch is split over ``ep`` expert-parallel ranks, each with ``batch`` sequences of
  ``seq_len`` tokens, so every token has a source rank.  ``domain_sort`` sets how far each node's
  ranks read their own sources: 0 = every rank reads the same i.i.d. mixture, 1 = fully
  domain-sorted (:class:`~netsim.moe.lab_data.DomainSampler`).
* model: a token embedding, learned positions, ``layers`` pre-norm transformer blocks (causal
  self-attention + a MoE feed-forward with ``experts`` GELU experts of width ``ffn_hidden``,
  plus ``shared_experts`` dense experts for DeepSeek), a tied output head.
* routers: the torch wrappers of :mod:`netsim.moe.torch_routers`; the loss is the next-token
  cross-entropy plus every auxiliary loss the router defines.  Hash routers hash the token ids;
  RRE's domains are the text sources (expert group ``g`` serves source ``g``; with one text,
  ``domains`` equal groups of consecutive ranks).  DeepSeek's selection bias is updated after
  every step from the step's expert loads.  The experts live on ranks by the ``placement``
  (contiguous by default, ``ranks_per_node`` ranks per node), which defines the locality that
  LocMoE's loss rewards and the metrics report.
* convergence (:mod:`netsim.moe.lab_check`): the summary says whether the final quarter of the
  run (the *converged window*, the part of the trace a study replays) has stopped moving and is
  not collapsed, and :meth:`LabConfig.convergence_problem` names what makes a configuration
  unable to converge (too few steps, capacity groups too small to balance).

Outputs (:func:`run_lab`, written atomically): ``routing.parquet`` (routing trace, format in
:mod:`netsim.moe.trace`: tokens and drops per step, layer, source rank and expert),
``losses.csv``/``losses.parquet`` (per-step losses and routing metrics) and ``lab.json``
(configuration, corpus, tokenizer, final losses, load and locality statistics, convergence,
timing).  Runs are seeded: the same configuration, corpus and torch build give identical tables.

The configuration, progress report and result types live in :mod:`netsim.moe.lab_config`
(re-exported here); this module holds the data batches, the training loop and the outputs.
Torch is optional for netsim; this module raises a :class:`~netsim.errors.NetsimError` naming
``pip install 'moe-netsim[torch]'`` when it is missing.
"""

from __future__ import annotations

import json
import math
import platform
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from netsim.errors import SpecError
from netsim.io import atomic_dir, check_output_dir, write_json, write_table
from netsim.moe.lab_check import convergence_report, final_window
from netsim.moe.lab_config import TORCH_HINT as TORCH_HINT  # re-exported: the lab's public names
from netsim.moe.lab_config import LabConfig, LabProgress, LabResult, require_torch
from netsim.moe.lab_data import DomainSampler, Tokenizer, load_corpus, load_domains, make_tokenizer
from netsim.moe.lab_model import build_model
from netsim.moe.placement import Placement, make_placement, rank_nodes
from netsim.moe.routers import DeepSeekRouter, make_router
from netsim.moe.trace import RoutingTrace, TraceMeta, read_routing_trace, write_routing_trace
from netsim.moe.traffic import routing_metrics

__all__ = [
    "LabConfig",
    "LabProgress",
    "LabResult",
    "lab_convergence",
    "load_corpus",
    "require_torch",
    "run_lab",
    "train_lab",
]

# --------------------------------------------------------------------------------------------
# training
# --------------------------------------------------------------------------------------------


Batch = tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.int64], NDArray[np.int64]]


class _Data:
    """Deterministic batches ``(inputs, targets, src_rank, domain)`` from the lab's text.

    With sources (no ``corpus`` paths) every source is split into train and eval tokens and
    each sequence's source is drawn by the :class:`DomainSampler`; with one text the legacy
    contiguous (rank shards) or random sharding applies.
    """

    def __init__(self, cfg: LabConfig, node: NDArray[np.int64]) -> None:
        self.cfg = cfg
        self.rng = np.random.default_rng([cfg.seed, 7])
        if cfg.corpus:
            text, self.info = load_corpus(cfg.corpus, max_bytes=cfg.max_corpus_bytes, max_file_bytes=cfg.max_file_bytes)
            texts = [text]
        else:
            domains, self.info = load_domains(
                cfg.domains, max_bytes=cfg.max_corpus_bytes // len(cfg.domains), max_file_bytes=cfg.max_file_bytes
            )
            texts = [d.text for d in domains]
        cut = [len(t) - max(cfg.seq_len * 8, int(len(t) * cfg.eval_fraction)) for t in texts]
        heads = [t[:c] for t, c in zip(texts, cut, strict=True)]
        self.tokenizer: Tokenizer = make_tokenizer(cfg.tokenizer, cfg.vocab, heads)
        self.train = [self.tokenizer.encode(t[:c]) for t, c in zip(texts, cut, strict=True)]
        self.eval = [self.tokenizer.encode(t[c:]) for t, c in zip(texts, cut, strict=True)]
        need = cfg.seq_len + 2
        shard = len(self.train[0]) // cfg.ep
        if (
            min(len(e) for e in self.eval) < need
            or min(len(t) for t in self.train) < need
            or (cfg.corpus and cfg.sharding == "contiguous" and shard < need)
        ):
            raise SpecError(
                f"corpus too small ({sum(len(t) for t in texts)} bytes) for {cfg.ep} ranks of "
                f"sequences of {cfg.seq_len} tokens",
                field="corpus",
            )
        self.sampler = None if cfg.corpus else DomainSampler(len(texts), node, cfg.domain_sort)
        self.info["tokens"] = {
            "train": int(sum(len(t) for t in self.train)),
            "eval": int(sum(len(e) for e in self.eval)),
        }

    def batch(self) -> Batch:
        """``(inputs [ep*batch, S], targets [ep*batch, S], src_rank [ep*batch], domain [ep*batch])``."""
        c = self.cfg
        s = c.seq_len
        src = np.repeat(np.arange(c.ep), c.batch)
        if self.sampler is None:
            dom = np.zeros(src.size, dtype=np.int64)
            n = len(self.train[0])
            if c.sharding == "contiguous":
                shard = n // c.ep
                starts = src * shard + self.rng.integers(0, shard - s - 1, size=src.size)
            else:
                starts = self.rng.integers(0, n - s - 1, size=src.size)
            win = self.train[0][starts[:, None] + np.arange(s + 1)[None, :]]
        else:
            dom = self.sampler.draw(src, self.rng)
            u = self.rng.random(src.size)
            win = np.empty((src.size, s + 1), dtype=np.int64)
            for i, d in enumerate(dom):
                arr = self.train[int(d)]
                start = int(u[i] * (len(arr) - s - 1))
                win[i] = arr[start : start + s + 1]
        return win[:, :-1], win[:, 1:], src, dom

    def eval_batches(self) -> list[Batch]:
        """Fixed evaluation batches; with sources, each rank reads every source in turn."""
        c = self.cfg
        s = c.seq_len
        rows = c.ep * c.batch
        src = np.repeat(np.arange(c.ep), c.batch)
        out = []
        for b in range(c.eval_batches):
            dom = (np.arange(rows) + b) % len(self.eval)
            win = np.empty((rows, s + 1), dtype=np.int64)
            for i, d in enumerate(dom):
                arr = self.eval[int(d)]
                start = (i * 7919 + b * 104729) % max(len(arr) - s - 1, 1)
                win[i] = arr[start : start + s + 1]
            out.append((win[:, :-1], win[:, 1:], src, dom.astype(np.int64)))
        return out


def _lr_factor(i: int, steps: int) -> float:
    """Linear warm-up over the first 5% of steps, then cosine decay to 10% of the peak."""
    warm = min(1.0, (i + 1) / max(1, steps // 20))
    return warm * (0.1 + 0.45 * (1.0 + math.cos(math.pi * min(i, steps) / steps)))


def _context(
    tokens: NDArray[np.int64], src: NDArray[np.int64], dom: NDArray[np.int64], cfg: LabConfig, params: Mapping[str, Any]
) -> dict[str, Any]:
    """Per-token routing context: token ids, source rank, sequence, and (RRE) data domain.

    RRE's ``domains`` groups of experts serve the text sources (source ``j`` of ``D`` -> group
    ``j * domains // D``); with one text, groups of consecutive ranks stand for the domains.
    """
    rows, s = tokens.shape
    ctx: dict[str, Any] = {
        "token_ids": tokens.reshape(-1),
        "src_rank": np.repeat(src, s),
        "seq_ids": np.repeat(np.arange(rows), s),
    }
    if cfg.router == "rre":
        domains = int(params.get("domains", 1))
        if cfg.num_domains > 1:
            ctx["domain_ids"] = np.repeat(dom * domains // cfg.num_domains, s)
        else:
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


@dataclass
class _Run:
    """What one training run accumulates step by step."""

    counts: list[tuple[int, int, int, NDArray[np.int64], NDArray[np.int64]]] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)
    metrics: list[dict[str, Any]] = field(default_factory=list)


def _routers(cfg: LabConfig, placement: Placement, node: NDArray[np.int64]) -> tuple[list[Any], dict[str, Any]]:
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
    return routers, params


def _record(
    run: _Run,
    step: int,
    routings: list[Any],
    ctx: dict[str, Any],
    cfg: LabConfig,
    routers: list[Any],
    placement: Placement,
    node: NDArray[np.int64],
) -> list[dict[str, Any]]:
    """Store the step's routing counts and metrics per layer (and update DeepSeek's bias)."""
    out = []
    for layer, r in enumerate(routings):
        tok, drp = r.result.by_source(ctx["src_rank"], cfg.ep)
        run.counts.append((step, layer, 0, tok, drp))
        m = routing_metrics(tok, placement, dropped=drp, rank_node=node).to_dict()
        run.metrics.append({"step": step, "layer": layer, **m})
        out.append(m)
        if isinstance(routers[layer], DeepSeekRouter):
            routers[layer].update_bias(r.result.counts)
    return out


def train_lab(cfg: LabConfig, progress: Callable[[LabProgress], None] | None = None) -> LabResult:
    """Train the lab model with ``cfg`` and return its routing trace, losses and summary."""
    torch = require_torch()
    placement: Placement = make_placement(cfg.placement, cfg.experts, cfg.ep)
    node = rank_nodes(cfg.ep, min(cfg.ranks_per_node, cfg.ep))
    data = _Data(cfg, node)
    routers, params = _routers(cfg, placement, node)
    run = _Run()
    prev_threads = torch.get_num_threads()
    prev_det = torch.are_deterministic_algorithms_enabled()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.use_deterministic_algorithms(True)
    try:
        torch.manual_seed(cfg.seed)
        model = build_model(cfg, routers, data.tokenizer.vocab_size)
        train_s = _train(torch, model, run, data, cfg, params, routers, placement, node, progress)
        eval_losses = _evaluate(torch, model, data, cfg, params)
        for blk in model.blocks:
            blk.moe.router.sync_to_numpy()
    finally:
        torch.use_deterministic_algorithms(prev_det)
        torch.set_num_threads(prev_threads)
    trace = RoutingTrace.from_counts(run.counts, _trace_meta(cfg, routers[0].top_k, data))
    summary = _summary(
        cfg,
        run,
        data,
        placement,
        params,
        routers[0].top_k,
        eval_losses,
        train_s,
        cfg.threads or prev_threads,
        str(torch.__version__),
    )
    return LabResult(cfg, trace, pd.DataFrame(run.rows), summary)


def _train(
    torch: Any,
    model: Any,
    run: _Run,
    data: _Data,
    cfg: LabConfig,
    params: dict[str, Any],
    routers: list[Any],
    placement: Placement,
    node: NDArray[np.int64],
    progress: Callable[[LabProgress], None] | None,
) -> float:
    """The training loop: ``cfg.steps`` optimiser steps recorded into ``run``; returns seconds."""
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: _lr_factor(i, cfg.steps))
    t0 = time.perf_counter()
    model.train()
    for step in range(cfg.steps):
        inp, tgt, src, dom = data.batch()
        ctx = _context(inp, src, dom, cfg, params)
        loss, task, aux_sum, routings = _losses(torch, model, inp, tgt, ctx, data.tokenizer.vocab_size)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        step_metrics = _record(run, step, routings, ctx, cfg, routers, placement, node)
        row = _loss_row(step, loss, task, aux_sum, step_metrics)
        run.rows.append(row)
        if progress is not None:
            progress(
                LabProgress(
                    step + 1, cfg.steps, row["loss"], row["task_loss"], row["drop_rate"], time.perf_counter() - t0
                )
            )
    return time.perf_counter() - t0


def _losses(
    torch: Any, model: Any, inp: NDArray[np.int64], tgt: NDArray[np.int64], ctx: dict[str, Any], vocab: int
) -> tuple[Any, Any, dict[str, Any], list[Any]]:
    """Forward one batch: ``(total loss, task loss, auxiliary losses summed over layers, routings)``."""
    from torch.nn import functional as F

    logits, routings = model(torch.from_numpy(inp), ctx)
    task = F.cross_entropy(logits.reshape(-1, vocab), torch.from_numpy(tgt).reshape(-1))
    aux_sum: dict[str, Any] = {}
    for r in routings:
        for k, v in r.losses.items():
            aux_sum[k] = aux_sum[k] + v if k in aux_sum else v
    loss = task + sum(aux_sum.values(), torch.zeros(()))
    return loss, task, aux_sum, routings


def _loss_row(
    step: int, loss: Any, task: Any, aux_sum: dict[str, Any], step_metrics: list[dict[str, Any]]
) -> dict[str, Any]:
    """One row of ``losses.*``: the step's losses and its routing metrics averaged over layers."""
    row = {"step": step, "loss": float(loss.detach()), "task_loss": float(task.detach())}
    row.update({k: float(v.detach()) for k, v in sorted(aux_sum.items())})
    row.update(
        {
            k: float(np.nanmean([m[k] for m in step_metrics]))
            for k in ("drop_rate", "expert_load_cv", "share_cross_node")
        }
    )
    return row


def _evaluate(torch: Any, model: Any, data: _Data, cfg: LabConfig, params: dict[str, Any]) -> list[float]:
    """Task loss of the trained model on every fixed evaluation batch."""
    from torch.nn import functional as F

    vocab = data.tokenizer.vocab_size
    model.eval()
    eval_losses = []
    with torch.no_grad():
        for inp, tgt, src, dom in data.eval_batches():
            logits, _ = model(torch.from_numpy(inp), _context(inp, src, dom, cfg, params))
            eval_losses.append(float(F.cross_entropy(logits.reshape(-1, vocab), torch.from_numpy(tgt).reshape(-1))))
    return eval_losses


def _trace_meta(cfg: LabConfig, top_k: int, data: _Data) -> TraceMeta:
    """Metadata of the routing trace: sizes, router, seed, corpus hash, converged window."""
    return TraceMeta(
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
            "corpus_sha256": data.info["sha256"],
            "converged_window": list(final_window(cfg.steps)),
        },
        tokens_per_rank=cfg.batch * cfg.seq_len,
    )


def _summary(
    cfg: LabConfig,
    run: _Run,
    data: _Data,
    placement: Placement,
    params: dict[str, Any],
    top_k: int,
    eval_losses: list[float],
    train_s: float,
    threads: int,
    torch_version: str,
) -> dict[str, Any]:
    """``lab.json``: configuration, corpus, final losses, load, convergence, timing."""
    lo, hi = final_window(cfg.steps)
    rows = run.rows
    final_rows = rows[lo:hi]
    loss_cols = [c for c in rows[0] if c not in ("step", "drop_rate", "expert_load_cv", "share_cross_node")]
    last = [m for m in run.metrics if m["step"] >= lo]
    eval_loss = float(np.mean(eval_losses))
    return {
        "config": {
            **cfg.to_dict(),
            "router_params_resolved": {k: v for k, v in params.items() if k != "local_experts"},
        },
        "corpus": data.info,
        "tokenizer": data.tokenizer.describe(),
        "placement": placement.to_dict(),
        "tokens_per_step": cfg.ep * cfg.batch * cfg.seq_len,
        "top_k": top_k,
        "final": {
            "window_steps": hi - lo,
            **{c: float(np.mean([r[c] for r in final_rows])) for c in loss_cols},
            "eval_loss": eval_loss,
            "eval_bits_per_token": eval_loss / math.log(2),
        },
        "load": {
            "all_steps": _summarise(run.metrics),
            "final_window": _summarise(last),
            "final_window_by_layer": {
                str(ly): _summarise([m for m in last if m["layer"] == ly]) for ly in range(cfg.layers)
            },
        },
        "convergence": convergence_report(rows, run.metrics, experts=cfg.experts),
        "timing": {
            "train_s": train_s,
            "steps_per_s": cfg.steps / train_s if train_s > 0 else float("nan"),
            "torch_threads": threads,
        },
        "versions": {"torch": torch_version, "python": platform.python_version()},
    }


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


def lab_convergence(lab_dir: str | Path) -> dict[str, Any]:
    """The convergence verdict of a finished lab run, recomputed from its outputs.

    Reads ``lab.json`` (configuration), ``losses.parquet`` (task loss per step) and
    ``routing.parquet`` (tokens and drops per step, layer, source rank and expert), recomputes
    the per-(step, layer) routing metrics exactly as the training loop records them and applies
    the current :func:`~netsim.moe.lab_check.convergence_report` (as ``lab.json`` stores it:
    non-finite numbers are None).  A study that reuses a run
    trained under an earlier criterion thereby judges it by today's; no torch needed.
    """
    d = Path(lab_dir)
    c = json.loads((d / "lab.json").read_text())["config"]
    ep, experts = int(c["ep"]), int(c["experts"])
    placement = make_placement(c["placement"], experts, ep)
    node = rank_nodes(ep, min(int(c["ranks_per_node"]), ep))
    metrics = [
        {"step": step, "layer": layer, **routing_metrics(tok, placement, dropped=drp, rank_node=node).to_dict()}
        for step, layer, _, tok, drp in read_routing_trace(d / "routing.parquet").iter_counts()
    ]
    losses = pd.read_parquet(d / "losses.parquet", columns=["step", "task_loss"]).to_dict("records")
    return dict(_jsonable(convergence_report(losses, metrics, experts=experts)))


def _jsonable(obj: Any) -> Any:
    """Replace non-finite floats with None so lab.json is strict JSON."""
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj
