"""The LocMoE study's report: figures, tables and text, one named writer per section.

:func:`write_report` turns what :func:`netsim.studies.locmoe.run_study` computed (the results
table, the router lab's expert loads, the convergence and capacity tables, the check of the
collective model against exact) into ``figures/*.png``, ``report.md`` and a self-contained
``report.html``.  Every number in the text comes from those tables; the only fixed text
describes the method and what a column means.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from netsim.studies.locmoe_paper import paper_comparison

if TYPE_CHECKING:
    from netsim.report.render import Document, Section
    from netsim.studies.locmoe import StudyConfig

ROUTER_LABELS = {"rre": "Hash (RRE)", "hash": "Hash", "switch": "Switch", "locmoe": "LocMoE"}

FIGURE_CAPTIONS = {
    "breakdown": "Per-rank time breakdown (compute, communication, overlap, idle) by configuration.",
    "alltoall": "All-to-all share of the step and cross-node EP bytes against cluster size.",
    "expert_load": "Expert load imbalance over the router lab's training steps.",
    "locality": "All-to-all time against the share of tokens kept on their node (statistical).",
}


def label(router: str) -> str:
    """The router's name as the report prints it."""
    return ROUTER_LABELS.get(router, router)


# ---------------------------------------------------------------------- figures


def _breakdown_figure(lab: pd.DataFrame) -> Any:
    from netsim.report.figures import new_figure

    fig, (ax,) = new_figure(max(7.0, 0.45 * len(lab) + 2), 4.2)
    labels = [f"{r.topology}\n{r.nodes}n {label(r.router)}\n{r.placement}" for r in lab.itertuples()]
    bottom = np.zeros(len(lab))
    for part, color in (
        ("compute_s", "#4c72b0"),
        ("communication_s", "#dd8452"),
        ("overlap_s", "#55a868"),
        ("idle_s", "#c7c7c7"),
    ):
        vals = lab[part].to_numpy() * 1e3
        ax.bar(range(len(lab)), vals, bottom=bottom, color=color, label=part[:-2])
        bottom += vals
    ax.set_xticks(range(len(lab)), labels, fontsize=6)
    ax.set_ylabel("time per step (ms), mean over ranks")
    ax.set_title("Per-rank time breakdown by configuration")
    ax.legend(fontsize=8)
    return fig


def _alltoall_figure(lab: pd.DataFrame) -> Any:
    from netsim.report.figures import new_figure

    fig, axes = new_figure(10.0, 3.8, ncols=2)
    for (topology, router, placement), g in lab.groupby(["topology", "router", "placement"], sort=True):
        g = g.sort_values("npus")
        name = f"{topology} {label(router)} {placement}"
        axes[0].plot(g["npus"], g["alltoall_share"] * 100, marker="o", label=name)
        axes[1].plot(g["npus"], g["ep_bytes_inter_node"] / 2**30, marker="o", label=name)
    axes[0].set_xlabel("accelerators")
    axes[0].set_ylabel("all-to-all share of the step (%)")
    axes[1].set_xlabel("accelerators")
    axes[1].set_ylabel("cross-node EP bytes per step (GiB)")
    axes[0].legend(fontsize=6)
    return fig


def _expert_load_figure(loads: dict[str, pd.DataFrame]) -> Any:
    from netsim.report.figures import new_figure

    fig, (ax,) = new_figure(7.0, 3.6)
    for router, df in loads.items():
        ax.plot(df["step"], df["cv"], label=label(router))
    ax.set_xlabel("router-lab training step")
    ax.set_ylabel("expert load CV (std / mean)")
    ax.set_title("Expert load across training steps")
    ax.legend(fontsize=8)
    return fig


def _locality_figure(stat: pd.DataFrame) -> Any:
    from netsim.report.figures import new_figure

    fig, (ax,) = new_figure(7.0, 3.6)
    for (topology, nodes), g in stat.groupby(["topology", "nodes"], sort=True):
        frac = g["router"].str.split().str[-1].astype(float)
        ax.plot(frac, g["alltoall_s"] * 1e3, marker="o", label=f"{topology} {nodes} nodes")
    ax.set_xlabel("share of a rank's tokens routed to experts on its own node")
    ax.set_ylabel("all-to-all time per step (ms)")
    ax.set_title("What locality can save")
    ax.legend(fontsize=8)
    return fig


def study_figures(results: pd.DataFrame, loads: dict[str, pd.DataFrame]) -> dict[str, bytes]:
    """The study's figures as PNG bytes, by file name (only those with data)."""
    import matplotlib

    matplotlib.use("Agg")
    from netsim.report.figures import render_all

    lab = results[results["routing"] == "lab trace"]
    stat = results[results["routing"] == "statistical"]
    figs: dict[str, Any] = {}
    if len(lab):
        figs["breakdown"] = _breakdown_figure(lab)
        figs["alltoall"] = _alltoall_figure(lab)
    if loads:
        figs["expert_load"] = _expert_load_figure(loads)
    if len(stat):
        figs["locality"] = _locality_figure(stat)
    return render_all({f"{name}.png": fig for name, fig in figs.items()})


# ---------------------------------------------------------------------- sections


def model_choices(results: pd.DataFrame) -> str:
    """How the runs were simulated: each distinct ``model_choice`` line with the node counts that got it."""
    if "model_choice" not in results:
        return ""
    parts = []
    for choice, g in results.groupby("model_choice", sort=False):
        nodes = ", ".join(str(n) for n in sorted(set(g["nodes"])))
        parts.append(f"{choice} at {nodes} nodes")
    return "; ".join(parts)


def _paper_section(results: pd.DataFrame) -> Section | None:
    from netsim.report.render import Paragraph, Section

    against = paper_comparison(results, experts=16)
    if not against:
        return None
    s = Section("Against the paper")
    s.add(
        Paragraph(
            "Li et al. (arXiv 2401.13920) report 12.68-22.24% shorter epochs with LocMoE on 64-256 "
            "Ascend 910A NPUs and a gain that needs experts >= nodes; per fabric, contiguous placement, "
            "LocMoE against Hash (RRE) (netsim.studies.locmoe_paper):"
        )
    )
    for line in against:
        s.add(Paragraph(line))
    return s


def _method_section(cfg: StudyConfig, results: pd.DataFrame) -> Section:
    from netsim.report.render import Paragraph, Section

    cap_text = ", ".join(f"{label(r)} {cfg.capacity.get(r, 'none')}" for r in cfg.routers)
    slices = ", ".join(f"{label(r)} {cfg.overlap.get(r, 1)}" for r in cfg.routers)
    s = Section("Method")
    s.add(
        Paragraph(
            "Each router trains a small MoE language model on real text in the router lab (16 experts on 16 EP "
            f"ranks, 8 per node, {cfg.lab_steps} steps); the token->expert counts of the converged window (the final "
            "quarter of the steps, checked for convergence) drive the expert all-to-all of the "
            f"`{cfg.workload}` workload replayed on every cluster, rescaled to the workload's tokens per rank and cut "
            f"at each router's capacity ({cap_text}; theorem1 = LocMoE's Theorem-1 token count at the replayed hidden "
            f"size). All-to-all/expert overlap slices per router: {slices}. EPLB placement is computed "
            "from the trace's expert loads. The `locality` rows use a statistical model instead of a router: a "
            "fixed share of each rank's tokens goes to experts on its own node."
            + (
                f" EPLB places {cfg.eplb_redundant} redundant expert slots (replicas of the most loaded experts) "
                "next to the 16 experts."
                if any(p.startswith("eplb") for p in cfg.placements)
                else ""
            )
        )
    )
    choices = model_choices(results)
    if choices:
        s.add(Paragraph(f"Collective model (`--collective-model {cfg.collective_model}`): {choices}."))
    return s


def _results_section(results: pd.DataFrame) -> Section:
    from netsim.report.render import Section, Table

    rows = [
        [
            r.topology,
            str(r.nodes),
            label(r.router),
            r.placement,
            f"{r.step_time_s * 1e3:.2f}",
            f"{r.compute_s * 1e3:.2f}",
            f"{r.communication_s * 1e3:.2f}",
            f"{r.overlap_s * 1e3:.2f}",
            f"{r.idle_s * 1e3:.2f}",
            f"{r.alltoall_share * 100:.2f}",
            f"{r.ep_bytes_inter_node / 2**30:.3f}",
            f"{r.expert_load_cv:.3f}",
            f"{r.drop_rate * 100:.2f}",
        ]
        for r in results.itertuples()
    ]
    s = Section("Results")
    s.add(
        Table(
            [
                "fabric",
                "nodes",
                "router",
                "placement",
                "step ms",
                "compute ms",
                "comm ms",
                "overlap ms",
                "idle ms",
                "a2a %",
                "x-node EP GiB",
                "load CV",
                "drop %",
            ],
            rows,
            align="lrllrrrrrrrrr",
            caption="per configuration (times are means over ranks of one step)",
        )
    )
    return s


def _convergence_section(conv: pd.DataFrame) -> Section:
    from netsim.report.render import Section, Table

    s = Section("Router convergence")
    s.add(
        Table(
            ["router", "converged", "window", "loss change", "load CV", "drop %", "cross-node %", "reasons"],
            [
                [
                    label(r.router),
                    "yes" if r.converged else "no",
                    r.window,
                    f"{r.task_loss_change * 100:+.1f}%",
                    f"{r.expert_load_cv:.3f}",
                    f"{r.drop_rate * 100:.2f}",
                    f"{r.share_cross_node * 100:.1f}",
                    r.reasons or "-",
                ]
                for r in conv.itertuples()
            ],
            align="llllrrrl",
            caption="router lab, final window vs the window before it",
        )
    )
    return s


def _capacity_section(caps: pd.DataFrame) -> Section | None:
    from netsim.report.render import Paragraph, Section, Table

    if not len(caps):
        return None
    s = Section("Expert capacity")
    s.add(
        Paragraph(
            "What each capacity does to the converged routing of one MoE layer at the replayed "
            "workload's tokens per rank: tokens the busiest expert computes (summed over the source "
            "ranks), dispatch bytes of the kept tokens (dropless all-to-all) and of capacity-sized "
            "buffers (padded, as fixed-capacity frameworks send), and the drop rate. theorem1 is "
            "LocMoE's Theorem-1 token count at the replayed hidden size."
        )
    )
    s.add(
        Table(
            [
                "router",
                "capacity",
                "tokens/expert",
                "busiest expert tokens",
                "dispatch MiB dropless",
                "dispatch MiB padded",
                "drop %",
            ],
            [
                [
                    label(r.router),
                    r.capacity,
                    "-" if pd.isna(r.capacity_tokens) else str(int(r.capacity_tokens)),
                    f"{r.busiest_expert_tokens:.0f}",
                    f"{r.dispatch_bytes_dropless / 2**20:.1f}",
                    f"{r.dispatch_bytes_padded / 2**20:.1f}",
                    f"{r.drop_rate * 100:.1f}",
                ]
                for r in caps.itertuples()
            ],
            align="llrrrrr",
        )
    )
    return s


def model_check_lines(check: pd.DataFrame) -> list[str]:
    """What the check against the exact collective model found (computed from ``check``)."""
    if check.empty:
        return []
    err = check["step_error"].abs() * 100
    a2a = check["alltoall_error"].abs() * 100
    models = ", ".join(sorted(set(check["collective_model"])))
    routers = ", ".join(label(r) for r in check["router"])
    order_same = (
        check.sort_values("step_time_s")["router"].tolist() == check.sort_values("exact_step_time_s")["router"].tolist()
    )
    order = (
        ""
        if len(check) < 2
        else "; the routers' order by step time "
        + ("is the same." if order_same else "differs, so the ranking is within the model's error.")
    )
    return [
        f"The {models} model against exact on the same configurations ({routers}; "
        f"{', '.join(str(n) for n in sorted(set(check['nodes'])))} nodes): step time within {err.max():.2f}% "
        f"(mean {err.mean():.2f}%), all-to-all time within {a2a.max():.1f}%" + (order or ".")
    ]


def _model_check_section(check: pd.DataFrame) -> Section | None:
    from netsim.report.render import Paragraph, Section, Table

    if check.empty:
        return None
    s = Section("Collective model against exact")
    for line in model_check_lines(check):
        s.add(Paragraph(line))
    s.add(
        Table(
            [
                "fabric",
                "nodes",
                "router",
                "model",
                "step ms",
                "exact step ms",
                "step error %",
                "a2a ms",
                "exact a2a ms",
            ],
            [
                [
                    r.topology,
                    str(r.nodes),
                    label(r.router),
                    r.collective_model,
                    f"{r.step_time_s * 1e3:.2f}",
                    f"{r.exact_step_time_s * 1e3:.2f}",
                    f"{r.step_error * 100:+.2f}",
                    f"{r.alltoall_s * 1e3:.2f}",
                    f"{r.exact_alltoall_s * 1e3:.2f}",
                ]
                for r in check.itertuples()
            ],
            align="lrllrrrrr",
            caption="lab-trace rows, contiguous placement, replayed again with the exact model",
        )
    )
    return s


def _figures_section(pngs: dict[str, bytes]) -> Section:
    from netsim.report.render import Figure, Section

    s = Section("Figures")
    for name in pngs:
        s.add(Figure(name, FIGURE_CAPTIONS[name.removesuffix(".png")]))
    return s


def _document(cfg: StudyConfig, results: pd.DataFrame, conclusion: list[str]) -> Document:
    from netsim.report.render import Document, Paragraph, Section

    doc = Document(
        title="LocMoE study: Hash vs Switch vs LocMoE routing",
        header=[
            ("workload", cfg.workload),
            ("fabrics", ", ".join(cfg.topologies)),
            ("nodes", ", ".join(str(n) for n in cfg.nodes)),
            ("routers", ", ".join(label(r) for r in cfg.routers)),
            ("placements", ", ".join(cfg.placements)),
            ("seed", str(cfg.seed)),
            ("collective model", cfg.collective_model),
        ],
    )
    s = Section("Conclusion")
    for line in conclusion:
        s.add(Paragraph(line))
    doc.sections.append(s)
    return doc


def write_report(
    out: Path,
    cfg: StudyConfig,
    results: pd.DataFrame,
    loads: dict[str, pd.DataFrame],
    conclusion: list[str],
    conv: pd.DataFrame,
    caps: pd.DataFrame,
    check: pd.DataFrame,
) -> None:
    """Write ``figures/``, ``report.md`` and ``report.html`` of the study into ``out``."""
    from netsim.report.files import write_figures, write_text
    from netsim.report.render import Paragraph, Section, render_html, render_markdown

    pngs = study_figures(results, loads)
    doc = _document(cfg, results, conclusion)
    runs = Section("Runs")
    runs.add(
        Paragraph(
            (
                "Every configuration has a full run directory with its own report under `runs/`; "
                if cfg.run_reports
                else "Every configuration has a run directory (summary and tables) under `runs/`; "
                "`--quick` writes no run reports (`netsim report runs/<config>` makes one); "
            )
            + "`results.csv` holds the table above with all columns."
        )
    )
    for section in (
        _paper_section(results),
        _method_section(cfg, results),
        _model_check_section(check),
        _results_section(results),
        _convergence_section(conv),
        _capacity_section(caps),
        _figures_section(pngs),
        runs,
    ):
        if section is not None:
            doc.sections.append(section)
    write_figures(out / "figures", pngs)
    write_text(out / "report.md", render_markdown(doc))
    write_text(out / "report.html", render_html(doc, pngs))
