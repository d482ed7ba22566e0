"""Router-lab sweeps: locality along the domain-sorting knob, routing statistics along model size.

Two studies over grids of router-lab runs (:mod:`netsim.moe.lab`), each run trained once under
``DIR/lab/<name>/`` and reused when the study is resumed:

* :func:`locality_sweep` (``netsim study lab-locality``): routers x ``domain_sort`` values.  For
  each run, the final-window share of dispatched assignments that stay on the source rank, stay
  on its node, or cross nodes (:func:`netsim.moe.traffic.routing_metrics`), the drop rate, the
  expert-load CV and whether the run converged.  The figure plots the cross-node share against
  the knob, one line per router, with the uniform baseline ``1 - 1/nodes``.
* :func:`scaling_sweep` (``netsim study lab-scaling``): one router at several hidden sizes; the
  table follows the routing statistics through the run in windows of ``steps / windows`` steps,
  so it shows how load CV, drop rate and locality move with model size *and* training steps.

Both write ``results.csv/.parquet``, ``figures/*.png`` and ``report.md``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from netsim.io import claim_dir, write_table

__all__ = ["locality_sweep", "scaling_sweep"]

Progress = Callable[[str, float], None]


def _train(cfgs: dict[str, Any], out: Path, note: Progress) -> dict[str, dict[str, Any]]:
    """Run (or reuse) every lab configuration; return ``{name: lab.json}``."""
    from netsim.moe.lab import run_lab

    done: dict[str, dict[str, Any]] = {}
    for i, (name, cfg) in enumerate(cfgs.items()):
        lab_dir = out / "lab" / name
        summary = lab_dir / "lab.json"
        if summary.is_file():
            saved = json.loads(summary.read_text())
            if {k: v for k, v in saved["config"].items() if k != "router_params_resolved"} == json.loads(
                json.dumps(cfg.to_dict())
            ):
                done[name] = saved
                continue
        note(f"router lab: {name}", i / len(cfgs))
        run_lab(cfg, lab_dir)
        done[name] = json.loads(summary.read_text())
    return done


def _row(name: str, s: dict[str, Any]) -> dict[str, Any]:
    load = s["load"]["final_window"]
    conv = s["convergence"]
    c = s["config"]
    return {
        "run": name,
        "router": c["router"],
        "domain_sort": c["domain_sort"],
        "hidden": c["hidden"],
        "steps": c["steps"],
        "converged": bool(conv["converged"]),
        "share_same_rank": load["share_same_rank"],
        "share_same_node": load["share_same_node"],
        "share_cross_node": load["share_cross_node"],
        "drop_rate": load["drop_rate"],
        "expert_load_cv": load["expert_load_cv"],
        "task_loss": s["final"]["task_loss"],
        "eval_loss": s["final"]["eval_loss"],
        "train_s": s["timing"]["train_s"],
        "reasons": "; ".join(conv["reasons"]),
    }


def locality_sweep(
    base: Any,
    routers: Sequence[str],
    sorts: Sequence[float],
    out: str | Path,
    progress: Progress | None = None,
    force: bool = False,
) -> pd.DataFrame:
    """Train ``base`` (a LabConfig) with every router at every ``domain_sort``; tabulate locality.
    ``out`` is a study folder (resumed when it is one; ``force`` replaces another netsim output)."""
    import dataclasses

    note = progress or (lambda _w, _f: None)
    out_path = claim_dir(out, kind="study", force=force)
    cfgs = {
        f"{r}-sort{round(x * 100):03d}": dataclasses.replace(base, router=r, domain_sort=float(x))
        for r in routers
        for x in sorts
    }
    results = pd.DataFrame([_row(n, s) for n, s in _train(cfgs, out_path, note).items()])
    nodes = base.num_nodes
    _report(
        out_path,
        "Locality along the domain-sorting knob",
        results,
        [
            "router",
            "domain_sort",
            "converged",
            "share_same_rank",
            "share_same_node",
            "share_cross_node",
            "drop_rate",
            "expert_load_cv",
            "task_loss",
        ],
        _locality_figure(results, nodes),
        base,
    )
    note("done", 1.0)
    return results


def _trajectory(name: str, s: dict[str, Any], losses: pd.DataFrame, windows: int) -> list[dict[str, Any]]:
    steps = int(s["config"]["steps"])
    w = max(1, steps // windows)
    rows = []
    for lo in range(0, steps, w):
        g = losses[(losses["step"] >= lo) & (losses["step"] < lo + w)]
        rows.append(
            {
                "run": name,
                "hidden": s["config"]["hidden"],
                "steps": f"{lo}-{lo + len(g)}",
                "task_loss": float(g["task_loss"].mean()),
                "drop_rate": float(g["drop_rate"].mean()),
                "expert_load_cv": float(g["expert_load_cv"].mean()),
                "share_cross_node": float(g["share_cross_node"].mean()),
                "converged": bool(s["convergence"]["converged"]) if lo + w >= steps else None,
            }
        )
    return rows


def scaling_sweep(
    base: Any,
    hiddens: Sequence[int],
    out: str | Path,
    *,
    windows: int = 4,
    progress: Progress | None = None,
    force: bool = False,
) -> pd.DataFrame:
    """Train ``base`` at every hidden size (FFN width 2x, heads of 64 or fewer dims); follow it in windows.
    ``out`` is a study folder (resumed when it is one; ``force`` replaces another netsim output)."""
    import dataclasses

    note = progress or (lambda _w, _f: None)
    out_path = claim_dir(out, kind="study", force=force)
    cfgs = {
        f"{base.router}-d{h}": dataclasses.replace(
            base, hidden=int(h), ffn_hidden=2 * int(h), heads=max(1, int(h) // 64)
        )
        for h in hiddens
    }
    rows: list[dict[str, Any]] = []
    for name, s in _train(cfgs, out_path, note).items():
        losses = pd.read_csv(out_path / "lab" / name / "losses.csv")
        rows += _trajectory(name, s, losses, windows)
    results = pd.DataFrame(rows)
    _report(
        out_path,
        f"Routing statistics along model size and training steps ({base.router})",
        results,
        ["hidden", "steps", "task_loss", "drop_rate", "expert_load_cv", "share_cross_node", "converged"],
        _scaling_figure(results),
        base,
    )
    note("done", 1.0)
    return results


def _locality_figure(results: pd.DataFrame, nodes: int) -> Any:
    from netsim.report.figures import new_figure
    from netsim.studies.locmoe import ROUTER_LABELS

    fig, (ax,) = new_figure(6.5, 3.8)
    for router, g in results.groupby("router", sort=False):
        g = g.sort_values("domain_sort")
        ax.plot(g["domain_sort"], g["share_cross_node"], marker="o", label=ROUTER_LABELS.get(str(router), router))
    ax.axhline(1 - 1 / nodes, color="grey", linestyle=":", label="uniform (1 - 1/nodes)")
    ax.set_xlabel("domain_sort (0 = i.i.d. data on every rank, 1 = each node reads only its own sources)")
    ax.set_ylabel("cross-node share of dispatches")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    return fig


def _scaling_figure(results: pd.DataFrame) -> Any:
    from netsim.report.figures import new_figure

    fig, axes = new_figure(10.0, 3.6, ncols=2)
    for hidden, g in results.groupby("hidden", sort=True):
        x = np.arange(len(g))
        axes[0].plot(x, g["expert_load_cv"], marker="o", label=f"d={hidden}")
        axes[1].plot(x, g["drop_rate"] * 100, marker="o", label=f"d={hidden}")
    for ax, label in zip(axes, ("expert load CV", "drop rate (%)"), strict=True):
        ax.set_xlabel("training window (quarters of the run)")
        ax.set_ylabel(label)
        ax.legend(fontsize=8)
    return fig


def _report(out: Path, title: str, results: pd.DataFrame, cols: list[str], fig: Any, base: Any) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from netsim.report.figures import render_all
    from netsim.report.files import write_figures, write_text
    from netsim.report.render import Document, Figure, Paragraph, Section, Table, render_markdown

    pngs = render_all({"sweep.png": fig})
    doc = Document(
        title=title,
        header=[
            ("experts", str(base.experts)),
            ("ep", str(base.ep)),
            ("ranks per node", str(base.ranks_per_node)),
            ("tokens per rank and step", str(base.batch * base.seq_len)),
            ("tokenizer", f"{base.tokenizer} {base.vocab}"),
            ("sources", ", ".join(base.domains)),
        ],
    )
    s = Section("Results")
    fmt = {float: lambda v: f"{v:.3f}"}
    s.add(
        Table(
            cols,
            [
                [fmt[type(v)](v) if type(v) in fmt else str(v) for v in row]
                for row in results[cols].itertuples(index=False)
            ],
            align="l" * len(cols),
        )
    )
    doc.sections.append(s)
    s = Section("Figure")
    s.add(Figure("sweep.png", title))
    s.add(Paragraph("Every run's lab.json, losses and routing trace are under `lab/`."))
    doc.sections.append(s)
    write_table(results, out, "results")
    write_figures(out / "figures", pngs)
    write_text(out / "report.md", render_markdown(doc))
