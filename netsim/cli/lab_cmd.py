"""``netsim lab``: train a small MoE language model with a router and record its routing trace.

See :mod:`netsim.moe.lab` for what is trained and what is written.  Progress is rendered with
rich on stderr; the summary table goes to stdout.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from netsim.cli.common import check_out_dir, force_option
from netsim.errors import SpecError

if TYPE_CHECKING:
    from netsim.moe.lab import LabConfig


def _parse_params(items: list[str]) -> dict[str, Any]:
    """``key=value`` strings -> dict; values are read as YAML data (``0.01``, ``true``, ``[1, 2]``)
    with the checks of ``--set`` (no anchors, aliases or tags; nesting and int64 limits)."""
    from netsim.config.common import parse_override

    out: dict[str, Any] = {}
    for item in items:
        key, sep, _ = item.partition("=")
        if not sep or not key.strip():
            raise SpecError(f"expected key=value (got {item!r})", field="--param")
        try:
            parts, value = parse_override(item)
        except SpecError as exc:
            raise SpecError(exc.message, field="--param") from None
        out[".".join(parts)] = value
    return out


def _fmt(x: Any, digits: int = 4) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.{digits}g}"
    return str(x)


def summary_table(summary: dict[str, Any]) -> Any:
    """A rich table of a lab summary (``lab.json``): final losses, load and locality, time."""
    from rich.table import Table

    final = summary["final"]
    load = summary["load"]["final_window"]
    steps = summary["config"]["steps"]
    table = Table(
        title=f"netsim lab: {summary['config']['router']}",
        caption=f"means over the last {final['window_steps']} of {steps} steps",
    )
    table.add_column("metric")
    table.add_column("value", justify="right")
    skip = ("window_steps", "loss", "task_loss", "eval_loss", "eval_bits_per_byte", "eval_bits_per_token")
    conv = summary.get("convergence") or {}
    rows = [
        ("task loss (nats/token)", final["task_loss"]),
        ("eval loss (nats/token)", final["eval_loss"]),
        *((f"{k} loss", v) for k, v in final.items() if k not in skip),
        ("drop rate", load["drop_rate"]),
        ("expert load max/mean", load["expert_load_max_mean"]),
        ("expert load cv", load["expert_load_cv"]),
        ("unused experts", load["unused_experts"]),
        ("dispatch share same rank", load["share_same_rank"]),
        ("dispatch share same node", load["share_same_node"]),
        ("dispatch share cross node", load["share_cross_node"]),
        ("train time (s)", summary["timing"]["train_s"]),
        ("converged", "yes" if conv.get("converged") else "no: " + "; ".join(conv.get("reasons") or ["-"])),
    ]
    for name, value in rows:
        table.add_row(name, _fmt(value))
    return table


def register(app: typer.Typer) -> None:
    """Add the ``lab`` command to ``app``."""

    @app.command("lab")
    def lab(
        router: str = typer.Option(
            ..., "--router", help="Router: hash, rre, switch, gshard, mixtral, deepseek, expert_choice, locmoe."
        ),
        out: Path = typer.Option(..., "--out", help="Output directory (routing.parquet, losses.*, lab.json)."),
        experts: int = typer.Option(16, "--experts", help="Experts per MoE layer."),
        ep: int = typer.Option(16, "--ep", help="Expert-parallel ranks (each gets its own slice of the batch)."),
        ranks_per_node: int = typer.Option(8, "--ranks-per-node", help="EP ranks per node (defines locality)."),
        layers: int = typer.Option(2, "--layers", help="Transformer blocks (each with a MoE FFN)."),
        hidden: int = typer.Option(256, "--hidden", help="Hidden size d."),
        heads: int = typer.Option(4, "--heads", help="Attention heads."),
        ffn_hidden: int = typer.Option(512, "--ffn-hidden", help="Hidden width of every expert."),
        steps: int = typer.Option(600, "--steps", help="Training steps."),
        seq_len: int = typer.Option(128, "--seq-len", help="Sequence length in tokens."),
        batch: int = typer.Option(2, "--batch", help="Sequences per rank per step."),
        lr: float = typer.Option(2e-3, "--lr", help="Peak learning rate (AdamW, warm-up + cosine)."),
        tokenizer: str = typer.Option("bpe", "--tokenizer", help="bpe (byte-level BPE trained locally) or byte."),
        vocab: int = typer.Option(2048, "--vocab", help="BPE vocabulary size."),
        domains: str = typer.Option(
            "",
            "--domains",
            help="Comma-separated text sources: python, c, docs, man-de, man-fr (default python,c,docs,man-de); "
            "ignored with --corpus.",
        ),
        domain_sort: float = typer.Option(
            0.0,
            "--domain-sort",
            help="0 = every rank reads the same i.i.d. mix, 1 = each node reads only its own sources.",
        ),
        convergence_check: bool = typer.Option(
            True,
            "--convergence-check/--no-convergence-check",
            help="Refuse configurations that cannot converge (too few steps, capacity groups too small).",
        ),
        seed: int = typer.Option(0, "--seed", help="Seed for weights, data order and routing."),
        placement: str = typer.Option("contiguous", "--placement", help="contiguous or round_robin."),
        sharding: str = typer.Option("contiguous", "--sharding", help="contiguous (rank shards) or random."),
        param: list[str] = typer.Option(
            [], "--param", help="Router parameter key=value (repeatable), e.g. capacity_factor=1.0, mu=0.05."
        ),
        corpus: list[Path] = typer.Option(
            [], "--corpus", help="Text file or directory (repeatable), one text instead of the --domains sources."
        ),
        threads: int = typer.Option(1, "--threads", help="torch intra-op threads."),
        force: bool = force_option(),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    ) -> None:
        """Train a small MoE language model on real text with ROUTER and record its routing."""
        from netsim.moe.lab import LabConfig
        from netsim.moe.lab_data import DEFAULT_DOMAINS

        cfg = LabConfig(
            router=router,
            experts=experts,
            ep=ep,
            ranks_per_node=ranks_per_node,
            layers=layers,
            hidden=hidden,
            heads=heads,
            ffn_hidden=ffn_hidden,
            steps=steps,
            seq_len=seq_len,
            batch=batch,
            lr=lr,
            seed=seed,
            placement=placement,
            sharding=sharding,
            router_params=_parse_params(param),
            corpus=[str(c) for c in corpus],
            domains=[d.strip() for d in domains.split(",") if d.strip()] or list(DEFAULT_DOMAINS),
            domain_sort=domain_sort,
            tokenizer=tokenizer,
            vocab=vocab,
            threads=threads,
        )
        _train(cfg, out, force, convergence_check, quiet)


def _train(cfg: LabConfig, out: Path, force: bool, convergence_check: bool, quiet: bool) -> None:
    """Check the output and the configuration, train (with a progress bar unless ``quiet``) and
    print the summary."""
    from rich.console import Console

    from netsim.moe.lab import require_torch, run_lab

    check_out_dir(out, force)
    if convergence_check:
        problem = cfg.convergence_problem()
        if problem is not None:
            raise SpecError(problem[1] + " (or pass --no-convergence-check)", field=f"--{problem[0]}")
    require_torch()
    result = run_lab(cfg, out, overwrite=force) if quiet else _train_with_bar(cfg, out, force)
    Console().print(summary_table(result.summary))
    typer.echo(f"wrote {out}/routing.parquet, {out}/losses.csv, {out}/lab.json")


def _train_with_bar(cfg: LabConfig, out: Path, force: bool) -> Any:
    """:func:`~netsim.moe.lab.run_lab` with a rich progress bar (step, loss, drops) on stderr."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from netsim.moe.lab import LabProgress, run_lab

    with Progress(
        TextColumn(f"lab {cfg.router}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]}  drops {task.fields[drops]}"),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as bar:
        task = bar.add_task("train", total=cfg.steps, loss="-", drops="-")

        def on_step(p: LabProgress) -> None:
            bar.update(task, completed=p.step, loss=f"{p.task_loss:.3f}", drops=f"{p.drop_rate:.1%}")

        return run_lab(cfg, out, progress=on_step, overwrite=force)
