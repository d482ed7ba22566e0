"""`netsim study layouts`: search a workload's parallel layouts on a cluster (netsim.studies.layouts)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from netsim.cli.common import (
    check_out_dir,
    console,
    csv_list,
    err_console,
    force_option,
    nodes_option,
    scenario_ref,
    topology_option,
)
from netsim.cli.progress import PhaseProgress

_LISTS = ("tp", "pp", "cp", "ep", "vp", "mbs", "recompute")


def register(study: typer.Typer) -> None:
    @study.command("layouts")
    def layouts_cmd(
        scenario: Path | None = typer.Argument(None, help="Scenario YAML (default: the built-in scenario)."),
        topology: str | None = topology_option(),
        nodes: int | None = nodes_option(),
        workload: str | None = typer.Option(None, "--workload", "-w", help="Workload preset or YAML file."),
        sets: list[str] = typer.Option(
            [], "--set", help="Scenario override before the search, e.g. --set options.lockstep=true (repeatable)."
        ),
        tp: str | None = typer.Option(
            None, "--tp", help="Tensor-parallel sizes (default: powers of 2 to a server's GPUs)."
        ),
        pp: str | None = typer.Option(None, "--pp", help="Pipeline sizes (default: powers of 2 to 16)."),
        cp: str | None = typer.Option(None, "--cp", help="Context-parallel sizes (default: the workload's)."),
        ep: str | None = typer.Option(
            None, "--ep", help="Expert-parallel sizes (MoE; default: 1, 2, 4, ... up to the experts and the GPUs)."
        ),
        vp: str | None = typer.Option(
            None, "--vp", help="Virtual pipeline chunks (>1: interleaved 1F1B; default: the workload's)."
        ),
        mbs: str | None = typer.Option(None, "--mbs", help="Micro-batch sizes (default: 1, 2, 4)."),
        recompute: str | None = typer.Option(
            None,
            "--recompute",
            help="Recomputation modes, least recomputation first (default: none, selective, full); a layout "
            "that fits with an earlier one is not run with a later one.",
        ),
        max_runs: int = typer.Option(64, "--max-runs", help="Refuse to simulate more layouts than this."),
        workers: int | None = typer.Option(None, "--workers", help="Simulation processes (default: the CPUs)."),
        top: int = typer.Option(10, "--top", min=1, help="Layouts shown in the console table."),
        reports: bool = typer.Option(False, "--reports", help="Write each run's HTML report and figures too."),
        allow_oom: bool = typer.Option(
            False, "--allow-oom", help="Simulate layouts that do not fit in memory too (marked *)."
        ),
        out: Path | None = typer.Option(None, "--out", "-o", help="Study folder (resumable; default runs/layouts)."),
        force: bool = force_option(),
    ) -> None:
        """The parallel layouts of a workload on a cluster: screened, simulated and ranked by step time."""
        from netsim.studies.layouts import search_layouts

        out_dir = out or Path("runs/layouts")
        check_out_dir(out_dir, force, resume="study")
        ref, extra = scenario_ref(scenario, topology, nodes, workload)
        given = dict(zip(_LISTS, (tp, pp, cp, ep, vp, mbs, recompute), strict=True))
        lists = {k: csv_list(v, str if k == "recompute" else int, f"--{k}") for k, v in given.items() if v is not None}
        labels = {"screen": "screening layouts", "simulate": "simulating layouts"}
        with PhaseProgress(err_console, "netsim study layouts", labels) as bar:
            result = search_layouts(
                ref,
                [*sets, *extra],
                out_dir,
                space=lists,
                max_runs=max_runs,
                workers=workers,
                reports=reports,
                allow_oom=allow_oom,
                force=force,
                progress=lambda phase, done, total: bar(
                    phase, done / max(total, 1), f"{done}/{total}" if phase == "simulate" else ""
                ),
            )
        _print(result, top)


def _print(result: Any, top: int) -> None:
    from netsim.studies.layouts_report import own_layout_line

    counts = ", ".join(f"{n} {s}" for s, n in result.counts().items())
    console.print(
        f"{len(result.candidates)} layouts on {result.gpus} GPUs at a global batch of "
        f"{result.global_batch_size} sequences: {counts}",
        soft_wrap=True,
    )
    width = max((len(c.layout.label) for c in result.ranked[:top]), default=6)
    console.print(
        f"{'rank':>4}  {'layout':<{width}}  {'DP':>4}  {'step ms':>9}  {'tok/s/GPU':>10}  {'MFU':>6}  "
        f"{'comm':>6}  {'GiB':>5}",
        soft_wrap=True,
        markup=False,
    )
    for c in result.ranked[:top]:
        mfu = "-" if c.mfu is None else f"{100 * c.mfu:.1f}%"
        console.print(
            f"{c.rank:>4}  {c.layout.label:<{width}}  {c.dp:>4}  {1e3 * c.step_time_s:>9.2f}  "
            f"{c.tokens_per_s_per_gpu:>10,.0f}  {mfu:>6}  {100 * (c.exposed_comm_share or 0.0):>5.1f}%  "
            f"{(c.peak_memory_bytes or 0.0) / 2**30:>5.1f}{'*' if c.fits is False else ''}",
            soft_wrap=True,
            markup=False,
        )
    if any(c.fits is False for c in result.ranked[:top]):
        console.print("* does not fit in the accelerator's memory by netsim's tally", soft_wrap=True)
    console.print(own_layout_line(result), soft_wrap=True)
    console.print(f"layouts: {result.out}/layouts.csv, report: {result.out}/report.md", soft_wrap=True, markup=False)
