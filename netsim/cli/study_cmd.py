"""`netsim study`: multi-run studies that end in a report (see netsim.studies)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from netsim.cli.common import check_out_dir, console, csv_list, err_console, force_option
from netsim.cli.progress import PhaseProgress

if TYPE_CHECKING:
    from netsim.studies.locmoe import StudyConfig


def _pairs(items: list[str], option: str) -> dict[str, str]:
    """``ROUTER=VALUE`` strings -> dict."""
    from netsim.errors import NetsimError

    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise NetsimError(f"expected ROUTER=VALUE (got {item!r})", field=option)
        out[key.strip()] = value.strip()
    return out


def _int(value: str, option: str) -> int:
    from netsim.errors import NetsimError

    try:
        return int(value)
    except ValueError:
        raise NetsimError(f"expected an integer (got {value!r})", field=option) from None


def register(app: typer.Typer) -> None:
    study = typer.Typer(help="Multi-run studies that end in a report.", no_args_is_help=True)
    app.add_typer(study, name="study")
    _register_locmoe(study)
    _register_lab_sweeps(study)
    from netsim.cli import study_layouts_cmd

    study_layouts_cmd.register(study)


def _register_locmoe(study: typer.Typer) -> None:
    """``netsim study locmoe``: its options, then the study (``_locmoe_config``, ``_locmoe``)."""

    @study.command("locmoe")
    def locmoe_cmd(
        out: Path = typer.Option(Path("reports/locmoe"), "--out", "-o", help="Study directory (resumable)."),
        topologies: str = typer.Option("ascend-910a,dgx-h100", "--topologies", help="Comma-separated presets."),
        nodes: str = typer.Option("8,16,32", "--nodes", help="Comma-separated node counts."),
        routers: str = typer.Option("rre,switch,locmoe", "--routers", help="Routers trained in the lab."),
        placements: str = typer.Option("contiguous,eplb", "--placements", help="Expert placements."),
        locality: str = typer.Option(
            "0.125,0.5,0.875",
            "--locality",
            help="Locality fractions of the statistical sensitivity sweep ('' to skip).",
        ),
        lab_steps: int = typer.Option(600, "--lab-steps", min=1, help="Router-lab training steps per router."),
        capacity: list[str] = typer.Option(
            [],
            "--capacity",
            help="Per-router replay capacity ROUTER=none|theorem1|FACTOR (repeatable; default "
            "switch=1.25, locmoe=1.25, others none).",
        ),
        overlap: list[str] = typer.Option(
            [],
            "--overlap",
            help="Per-router all-to-all/expert overlap slices ROUTER=N (repeatable; default locmoe=2, others 1).",
        ),
        allow_unconverged: bool = typer.Option(
            False,
            "--allow-unconverged",
            help="Go on from routers whose lab run has not converged (results are "
            "then not evidence about the routers).",
        ),
        workload_set: list[str] = typer.Option([], "--set", help="Workload override, e.g. --set steps=2."),
        quick: bool = typer.Option(False, "--quick", help="A small version (one fabric, 2 nodes, short lab)."),
        seed: int = typer.Option(0, "--seed"),
        collective_model: str = typer.Option(
            "auto",
            "--collective-model",
            help="auto (chosen from each run's size, as netsim run does), exact, "
            "stream (ring phases as one flow per link) or coflow (stream, and "
            "all-to-alls as coflows).",
        ),
        exact_check: str | None = typer.Option(
            None,
            "--exact-check",
            help="Node counts at which the lab-trace rows (contiguous) are replayed again "
            "with the exact model to measure the faster model's error ('' to skip; default 8, --quick 2).",
        ),
        force: bool = force_option(),
    ) -> None:
        """Hash (RRE) vs Switch vs LocMoE (and EPLB) on Ascend 910A and DGX H100 clusters."""
        cfg = _locmoe_config(
            quick=quick,
            topologies=topologies,
            nodes=nodes,
            routers=routers,
            placements=placements,
            locality=locality,
            lab_steps=lab_steps,
            seed=seed,
            workload_set=workload_set,
            exact_check=exact_check,
            collective_model=collective_model,
            capacity=capacity,
            overlap=overlap,
            allow_unconverged=allow_unconverged,
        )
        _locmoe(cfg, out, force)


def _register_lab_sweeps(study: typer.Typer) -> None:
    """``netsim study lab-locality`` and ``lab-scaling``: router-lab sweeps (``_lab_locality``, ``_lab_scaling``)."""

    @study.command("lab-locality")
    def lab_locality_cmd(
        out: Path = typer.Option(..., "--out", "-o", help="Study directory (resumable)."),
        routers: str = typer.Option("hash,rre,switch,locmoe", "--routers", help="Routers trained in the lab."),
        sorts: str = typer.Option(
            "0,0.5,1",
            "--domain-sort",
            help="Comma-separated domain_sort values (0 = i.i.d., 1 = each node reads only its own sources).",
        ),
        lab: list[str] = typer.Option(
            [],
            "--lab",
            help="Lab setting KEY=VALUE (repeatable), e.g. --lab hidden=64 "
            "--lab steps=300 --lab 'router_params={mu: 0.1}'.",
        ),
        force: bool = force_option(),
    ) -> None:
        """Cross-node share of each router's dispatches along the domain-sorting knob (router lab)."""
        _lab_locality(out, routers, sorts, lab, force)

    @study.command("lab-scaling")
    def lab_scaling_cmd(
        out: Path = typer.Option(..., "--out", "-o", help="Study directory (resumable)."),
        hidden: str = typer.Option("64,128,256", "--hidden", help="Comma-separated hidden sizes (FFN = 2 x hidden)."),
        windows: int = typer.Option(4, "--windows", min=1, help="Training windows the table follows."),
        lab: list[str] = typer.Option([], "--lab", help="Lab setting KEY=VALUE (repeatable), e.g. --lab router=rre."),
        force: bool = force_option(),
    ) -> None:
        """Load CV, drop rate and locality along model size and training steps (router lab)."""
        _lab_scaling(out, hidden, windows, lab, force)


def _lab_base(items: list[str], router: str | None = None) -> Any:
    """A LabConfig from ``KEY=VALUE`` settings (checked: unknown keys and unconvergeable configs exit 2);
    ``router`` is the one the settings are checked against when they name none."""
    import dataclasses

    from netsim.cli.lab_cmd import _parse_params
    from netsim.errors import SpecError
    from netsim.moe.lab import LabConfig, require_torch

    kw = _parse_params(items)
    if router is not None:
        kw.setdefault("router", router)
    names = {f.name for f in dataclasses.fields(LabConfig)}
    for key in kw:
        if key not in names:
            raise SpecError(f"unknown lab setting {key!r}; allowed: {', '.join(sorted(names))}", field="--lab")
    cfg = LabConfig(**kw)
    problem = cfg.convergence_problem()
    if problem is not None:
        raise SpecError(problem[1], field=f"--lab {problem[0]}")
    require_torch()
    return cfg


def _locmoe_config(
    *,
    quick: bool,
    topologies: str,
    nodes: str,
    routers: str,
    placements: str,
    locality: str,
    lab_steps: int,
    seed: int,
    workload_set: list[str],
    exact_check: str | None,
    collective_model: str,
    capacity: list[str],
    overlap: list[str],
    allow_unconverged: bool,
) -> StudyConfig:
    """The LocMoE study's configuration from the command-line options, checked (bad input exits 2)."""
    from netsim.studies.locmoe import StudyConfig, check_config

    if quick:
        cfg = StudyConfig.quick()
    else:
        cfg = StudyConfig(
            topologies=csv_list(topologies),
            nodes=csv_list(nodes, int),
            routers=csv_list(routers),
            placements=csv_list(placements),
            locality=csv_list(locality, float),
            lab_steps=lab_steps,
            seed=seed,
        )
    if workload_set:
        cfg = StudyConfig(**{**cfg.__dict__, "workload_overrides": (*cfg.workload_overrides, *workload_set)})
    if exact_check is not None:
        cfg = StudyConfig(**{**cfg.__dict__, "exact_check": csv_list(exact_check, int)})
    cfg = StudyConfig(
        **{
            **cfg.__dict__,
            "collective_model": collective_model,
            "capacity": {**cfg.capacity, **_pairs(capacity, "--capacity")},
            "overlap": {**cfg.overlap, **{k: _int(v, "--overlap") for k, v in _pairs(overlap, "--overlap").items()}},
            "require_converged": not allow_unconverged,
        }
    )
    check_config(cfg)
    return cfg


def _locmoe(cfg: StudyConfig, out: Path, force: bool) -> None:
    """Run the LocMoE study into ``out`` (resumable) and print its conclusion and where the files are."""
    from netsim.moe.lab import require_torch
    from netsim.studies.locmoe import run_study

    check_out_dir(out, force, resume="study")
    require_torch()
    with PhaseProgress(err_console, "netsim study locmoe") as progress:
        result = run_study(cfg, out, progress=lambda what, f: progress("study", f, what), force=force)
    for line in result.conclusion:
        console.print(f"- {line}")
    console.print(f"results: {out}/results.csv")
    console.print(f"report: {out}/report.html")


def _lab_locality(out: Path, routers: str, sorts: str, lab: list[str], force: bool) -> None:
    """Run the router lab along the domain-sorting knob into ``out`` and print the results table."""
    from netsim.studies.lab_sweep import locality_sweep

    base = _lab_base(lab, router=csv_list(routers)[0] if csv_list(routers) else None)
    check_out_dir(out, force, resume="study")
    with PhaseProgress(err_console, "netsim study lab-locality") as progress:
        res = locality_sweep(
            base,
            csv_list(routers),
            csv_list(sorts, float),
            out,
            progress=lambda what, f: progress("study", f, what),
            force=force,
        )
    console.print(
        res[["router", "domain_sort", "converged", "share_cross_node", "drop_rate", "expert_load_cv"]].to_string(
            index=False
        )
    )
    console.print(f"results: {out}/results.csv, report: {out}/report.md")


def _lab_scaling(out: Path, hidden: str, windows: int, lab: list[str], force: bool) -> None:
    """Run the router lab along model size and training windows into ``out`` and print the table."""
    from netsim.studies.lab_sweep import scaling_sweep

    base = _lab_base(lab)
    check_out_dir(out, force, resume="study")
    with PhaseProgress(err_console, "netsim study lab-scaling") as progress:
        res = scaling_sweep(
            base,
            csv_list(hidden, int),
            out,
            windows=windows,
            progress=lambda what, f: progress("study", f, what),
            force=force,
        )
    console.print(res.to_string(index=False))
    console.print(f"results: {out}/results.csv, report: {out}/report.md")
