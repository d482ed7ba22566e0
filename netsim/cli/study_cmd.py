"""`netsim study`: multi-run studies that end in a report (see netsim.studies)."""

from __future__ import annotations

from pathlib import Path

import typer

from netsim.cli.common import console, err_console
from netsim.cli.progress import PhaseProgress


def _csv(value: str, cast: type = str) -> tuple:
    items = [v.strip() for v in value.split(",") if v.strip()]
    try:
        return tuple(cast(v) for v in items)
    except ValueError:
        from netsim.errors import NetsimError

        raise NetsimError(f"cannot read {value!r} as a comma-separated list of {cast.__name__}") from None


def register(app: typer.Typer) -> None:
    study = typer.Typer(help="Multi-run studies that end in a report.", no_args_is_help=True)
    app.add_typer(study, name="study")

    @study.command("locmoe")
    def locmoe_cmd(
        out: Path = typer.Option(Path("reports/locmoe"), "--out", "-o", help="Study directory (resumable)."),
        topologies: str = typer.Option("ascend-910a,dgx-h100", "--topologies", help="Comma-separated presets."),
        nodes: str = typer.Option("8,16,32", "--nodes", help="Comma-separated node counts."),
        routers: str = typer.Option("rre,switch,locmoe", "--routers", help="Routers trained in the lab."),
        placements: str = typer.Option("contiguous,eplb", "--placements", help="Expert placements."),
        locality: str = typer.Option("0.125,0.5,0.875", "--locality",
                                     help="Locality fractions of the statistical sensitivity sweep ('' to skip)."),
        lab_steps: int = typer.Option(400, "--lab-steps", min=1, help="Router-lab training steps per router."),
        workload_set: list[str] = typer.Option([], "--set", help="Workload override, e.g. --set steps=2."),
        quick: bool = typer.Option(False, "--quick", help="A small version (one fabric, 2 nodes, short lab)."),
        seed: int = typer.Option(0, "--seed"),
        collective_model: str = typer.Option("exact", "--collective-model",
                                             help="exact, stream (ring phases as one flow per link) or coflow "
                                             "(stream, and all-to-alls as coflows); faster."),
    ) -> None:
        """Hash (RRE) vs Switch vs LocMoE (and EPLB) on Ascend 910A and DGX H100 clusters."""
        from netsim.moe.lab import require_torch
        from netsim.studies.locmoe import StudyConfig, check_config, run_study

        require_torch()
        if quick:
            cfg = StudyConfig.quick()
        else:
            cfg = StudyConfig(topologies=_csv(topologies), nodes=_csv(nodes, int), routers=_csv(routers),
                              placements=_csv(placements), locality=_csv(locality, float), lab_steps=lab_steps,
                              seed=seed)
        if workload_set:
            cfg = StudyConfig(**{**cfg.__dict__, "workload_overrides": (*cfg.workload_overrides, *workload_set)})
        cfg = StudyConfig(**{**cfg.__dict__, "collective_model": collective_model})
        check_config(cfg)
        with PhaseProgress(err_console, "netsim study locmoe") as progress:
            result = run_study(cfg, out, progress=lambda what, f: progress("study", f, what))
        for line in result.conclusion:
            console.print(f"- {line}")
        console.print(f"results: {out}/results.csv")
        console.print(f"report: {out}/report.html")
