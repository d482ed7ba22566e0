"""The LocMoE study's findings: plain-language lines computed from its tables.

:func:`conclude` turns the results table (one row per replayed configuration) into the
conclusion the study prints and its report opens with; :func:`convergence_table` and
:func:`convergence_lines` say how each router's lab run converged.  No line is fixed text about
an outcome: every number and every comparison comes from the tables.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import pandas as pd

from netsim.studies.lab_traces import LabTrace
from netsim.studies.locmoe_report import ROUTER_LABELS

if TYPE_CHECKING:
    from netsim.studies.locmoe import StudyConfig


def convergence_table(traces: dict[str, LabTrace]) -> pd.DataFrame:
    """One row per router: the convergence verdict of its lab run and the final window's statistics."""
    rows = []
    for router, t in traces.items():
        c = t.convergence
        rows.append(
            {
                "router": router,
                "converged": bool(c.get("converged")),
                "window": f"{c['window'][0]}-{c['window'][1]}",
                "task_loss_change": float((c.get("task_loss") or {}).get("relative_change", math.nan)),
                "drop_rate": float((c.get("drop_rate") or {}).get("final", math.nan)),
                "expert_load_cv": float((c.get("expert_load_cv") or {}).get("final", math.nan)),
                "share_cross_node": float((c.get("share_cross_node") or {}).get("final", math.nan)),
                "reasons": "; ".join(c.get("reasons") or []),
            }
        )
    return pd.DataFrame(rows)


def convergence_lines(conv: pd.DataFrame) -> list[str]:
    """What the conclusion says about the routers' lab runs."""
    if conv.empty:
        return []
    parts = [
        f"{ROUTER_LABELS.get(r.router, r.router)} {'converged' if r.converged else 'NOT converged'} "
        f"(steps {r.window}: load CV {r.expert_load_cv:.2f}, {r.drop_rate:.1%} dropped in the lab, "
        f"{r.share_cross_node:.0%} cross-node)"
        for r in conv.itertuples()
    ]
    return ["Routing comes from the converged window of each router's lab run only: " + "; ".join(parts) + "."]


def conclude(results: pd.DataFrame, cfg: StudyConfig) -> list[str]:
    """Plain-language findings computed from the results table (no fixed text about outcomes)."""
    lines: list[str] = []
    lab = results[results["routing"] == "lab trace"]
    for (topology, placement), grp in lab.groupby(["topology", "placement"], sort=False):
        for nodes, g in grp.groupby("nodes", sort=True):
            g = g.set_index("router")
            best = g["step_time_s"].idxmin()
            worst = g["step_time_s"].idxmax()
            gap = (g.loc[worst, "step_time_s"] / g.loc[best, "step_time_s"] - 1) * 100
            a2a = g["alltoall_share"] * 100
            lines.append(
                f"{topology}, {nodes} nodes, {placement} placement: {ROUTER_LABELS.get(best, best)} has the "
                f"shortest step ({g.loc[best, 'step_time_s'] * 1e3:.1f} ms), {gap:.1f}% faster than "
                f"{ROUTER_LABELS.get(worst, worst)}; the expert all-to-all takes {a2a.min():.1f}-{a2a.max():.1f}% "
                f"of the step and {g['ep_inter_node_share'].min() * 100:.0f}-"
                f"{g['ep_inter_node_share'].max() * 100:.0f}% of the dispatch bytes cross nodes."
            )
        if "locmoe" in set(grp["router"]):
            for other in [r for r in cfg.routers if r != "locmoe"]:
                a = grp[grp["router"] == "locmoe"].set_index("nodes")
                b = grp[grp["router"] == other].set_index("nodes")
                common = a.index.intersection(b.index)
                if not len(common):
                    continue
                saved = (1 - a.loc[common, "ep_bytes_inter_node"] / b.loc[common, "ep_bytes_inter_node"]) * 100
                a2a = (1 - a.loc[common, "alltoall_s"] / b.loc[common, "alltoall_s"]) * 100
                where = (
                    f"at {common[0]} nodes"
                    if len(common) == 1
                    else f"on average over {', '.join(str(n) for n in common)} nodes"
                )
                lines.append(
                    f"{topology} ({placement}): LocMoE vs {ROUTER_LABELS.get(other, other)} changes cross-node "
                    f"EP bytes by {-saved.mean():+.1f}% and all-to-all time by {-a2a.mean():+.1f}% {where} "
                    f"(drop rate {a.loc[common, 'drop_rate'].mean() * 100:.1f}% vs "
                    f"{b.loc[common, 'drop_rate'].mean() * 100:.1f}%: dropped tokens are not sent)."
                )
    stat = results[results["routing"] == "statistical"]
    if stat["router"].nunique() >= 2:
        for (topology, nodes), g in stat.groupby(["topology", "nodes"], sort=True):
            g = g.sort_values("ep_inter_node_share")
            lo, hi = g.iloc[0], g.iloc[-1]
            lines.append(
                f"{topology}, {nodes} nodes: keeping {lo['router'].split()[-1]} instead of "
                f"{hi['router'].split()[-1]} of tokens on their node changes cross-node EP bytes from "
                f"{hi['ep_bytes_inter_node'] / 2**30:.2f} to {lo['ep_bytes_inter_node'] / 2**30:.2f} GiB per step and "
                f"the all-to-all from {hi['alltoall_s'] * 1e3:.2f} to {lo['alltoall_s'] * 1e3:.2f} ms, the room a "
                f"locality-aware router has on this fabric; the step goes from {hi['step_time_s'] * 1e3:.1f} to "
                f"{lo['step_time_s'] * 1e3:.1f} ms"
                + (
                    f" (expert load CV {hi['expert_load_cv']:.2f} -> {lo['expert_load_cv']:.2f}: local tokens also "
                    "load the local experts unevenly)."
                    if lo["expert_load_cv"] > 1.1 * hi["expert_load_cv"]
                    else "."
                )
            )
    if len(lab):
        moe = lab.groupby("router")["expert_load_cv"].mean()
        lines.append(
            "Expert load imbalance (coefficient of variation across experts, mean over configurations): "
            + ", ".join(f"{ROUTER_LABELS.get(r, r)} {v:.2f}" for r, v in moe.items())
            + "."
        )
    return lines
