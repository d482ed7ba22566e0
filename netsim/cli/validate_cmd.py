"""``netsim validate``: predict published measurements and report the error.

::

    netsim validate [--quick] [--only 'xxrjun-*'] [--kind collective|training|layer|ep-kernel|moe-layer]
        [--out runs/validate]
        [--collective-cost nccl|ideal] [--source FILE.yaml ...] [--no-known-gaps]
        [--set topology.K=V | workload.K=V | options.K=V ...]

    netsim validate-deepep [--ep 8 --ep 64 ...] [--latency-us US] [--fit]
    netsim validate-hybridep [--ep 16 --ep 64 ...] [--latency-us US] [--fit]

Every case of every source in ``netsim/validation/data`` (or the ``--source`` files) is
simulated as measured; stdout gets the error per size band and every point outside its
tolerance; ``--out`` gets the run directory (results, summary, parity plot, report).  Exit code
0 when every asserted point is within its tolerance, 1 otherwise (2 for bad input).  ``--set``
asks what-if questions of the published runs: the same cases with an override on every one
(:func:`netsim.validation.sources.with_overrides`), e.g. ``--set
topology.accelerator.compute.attention=flash-attention-3 --only 'llama3-405b/*'``.
``validate-deepep`` prints DeepEP's published dispatch/combine bandwidths on H800 against
netsim's ``deepep`` dispatcher on the ``h800`` preset (:mod:`netsim.validation.deepep`);
``validate-hybridep`` HybridEP's published bandwidths on H100 against the ``hybridep`` dispatcher
on ``dgx-h100`` (:mod:`netsim.validation.hybridep`).  Both add the dispatcher kernel's fixed time
per call (``--latency-us`` to try another); ``--fit`` also prints the least-squares fit of that
time to the published timings (:mod:`netsim.validation.ep_latency`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from netsim.cli.common import check_out_dir, cost_option, err_console, force_option
from netsim.errors import NetsimError, SpecError

if TYPE_CHECKING:
    from netsim.validation.runner import ValidationResult


def _check_kinds(kinds: list[str], allowed: tuple[str, ...]) -> None:
    for k in kinds:
        if k not in allowed:
            raise SpecError(f"unknown case kind {k!r}; allowed: {', '.join(allowed)}", field="--kind")


def _check_outputs(merge: Path | None, out: Path | None, sets: list[str], force: bool) -> None:
    """``--out DIR`` free (or ``--force``); ``--merge DIR`` a validation run directory, and neither
    ``--out`` nor a what-if beside it."""
    if out is not None and merge is None:
        check_out_dir(out, force)
    if merge is None:
        return
    if out is not None or sets:
        raise NetsimError(
            "--merge updates a validation run directory with the shipped model's predictions: give it "
            "without --out and without --set",
            field="--merge",
        )
    if not (merge / "results.csv").is_file():
        raise NetsimError(f"{merge}: not a validation run directory (no results.csv)", field="--merge")


def _write(res: ValidationResult, out: Path | None, force: bool) -> None:
    """Print the summary (and write the run directory ``out``); exit 1 when an asserted point fails."""
    from netsim.validation.report import format_summary, summarize, write_validation

    summary = write_validation(res, out, force=force) if out is not None else summarize(res)
    for line in format_summary(summary):
        typer.echo(line)
    if out is not None:
        typer.echo(f"run directory: {out} (report.html, report.md, results.csv, figures/parity.png)")
    if not summary["ok"]:
        raise typer.Exit(1)


def _merge(res: ValidationResult, merge: Path) -> None:
    """Print what this invocation ran, merge it into ``merge`` and print the merged totals (exit
    1 when an asserted point of the merged directory fails)."""
    from netsim.validation.report import format_summary, merge_validation, summarize

    for line in format_summary(summarize(res)):
        typer.echo(line)
    merged = merge_validation(res, merge)
    o = merged["overall"]
    typer.echo(
        f"merged into {merge}: {merged['sources']} sources, {merged['cases']} cases, {o['points']} points, "
        f"{o['within_10pct']} within 10%, {o['within_25pct']} within 25%"
    )
    if not merged["ok"]:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    @app.command("validate")
    def validate_cmd(
        quick: bool = typer.Option(
            False,
            "--quick",
            help="The cases CI runs: up to two nodes, "
            "out-of-place columns, training cases marked quick (~1 min on 2 cores).",
        ),
        only: list[str] = typer.Option(
            [],
            "--only",
            help="Glob over SOURCE/CASE ids, e.g. 'xxrjun-*/all-gather' (repeatable: the cases any of them matches).",
        ),
        kind: list[str] = typer.Option(
            [], "--kind", help="collective, training, layer, ep-kernel or moe-layer (repeatable; default: all)."
        ),
        out: Path | None = typer.Option(None, "--out", "-o", help="Write the run directory (report, parity plot)."),
        merge: Path | None = typer.Option(
            None,
            "--merge",
            help="Update this validation run directory in place: the selected cases' rows replaced, the "
            "others kept, report and summary rewritten (e.g. --only 'SOURCE/*' --merge reports/validation).",
        ),
        collective_cost: str | None = cost_option(),
        source: list[Path] = typer.Option([], "--source", help="Validation file(s) instead of the shipped ones."),
        no_known_gaps: bool = typer.Option(
            False, "--no-known-gaps", help="Assert the known gaps too (see known_gaps.yaml)."
        ),
        force: bool = force_option(),
        set_: list[str] = typer.Option(
            [],
            "--set",
            help="What-if override on every selected case: topology.K=V, workload.K=V or options.K=V (repeatable).",
        ),
    ) -> None:
        """Predict published measurements (nccl-tests, training runs, profiled layers) and compare."""
        _check_outputs(merge, out, set_, force)
        from netsim.validation.runner import CASE_KINDS, run_validation

        _check_kinds(kind, CASE_KINDS)
        from netsim.validation.sources import load_sources, with_overrides

        srcs = with_overrides(load_sources([str(p) for p in source] or None), set_)
        banner = [f"what-if: {', '.join(set_)} on every case"] if set_ else []

        def progress(label: str, done: int, total: int) -> None:
            while banner:  # once a case has taken the overrides (a bad one fails before: one line)
                err_console.print(banner.pop(), highlight=False)
            err_console.print(f"[{done}/{total}] {label}", highlight=False)

        res = run_validation(
            srcs,
            quick=quick,
            only=only or None,
            kinds=kind or None,
            cost_model=collective_cost,
            known_gaps=not no_known_gaps,
            progress=progress,
        )
        if merge is not None:
            _merge(res, merge)
        else:
            _write(res, out, force)

    @app.command("validate-deepep")
    def validate_deepep_cmd(
        ep: list[int] = typer.Option([], "--ep", help="DeepEP's EP sizes to run: 8, 16, 32, 64 (default: all)."),
        seed: int = typer.Option(0, "--seed", help="Seed of DeepEP's test routing (random scores)."),
        latency_us: float | None = typer.Option(
            None, "--latency-us", min=0.0, help="The kernel's fixed time per call, us (default: the dispatcher's)."
        ),
        fit: bool = typer.Option(False, "--fit", help="Also fit that time to the published timings and print it."),
    ) -> None:
        """DeepEP's published all-to-all bandwidths on H800 against netsim's deepep dispatcher."""
        from netsim.errors import SpecError
        from netsim.validation.deepep import PUBLISHED, compare, table

        bad = sorted(set(ep) - set(PUBLISHED))
        if bad:
            allowed = ", ".join(str(e) for e in PUBLISHED)
            raise SpecError(f"DeepEP publishes EP {allowed} only (got {bad[0]})", field="--ep")
        lat = None if latency_us is None else latency_us * 1e-6
        typer.echo(table(compare(tuple(ep) or tuple(PUBLISHED), seed, lat)))
        if fit:
            from netsim.validation.ep_latency import deepep_points
            from netsim.validation.ep_latency import fit as fit_latency

            typer.echo(fit_latency("DeepEP", deepep_points(seed)).summary())

    @app.command("validate-hybridep")
    def validate_hybridep_cmd(
        ep: list[int] = typer.Option([], "--ep", help="HybridEP's rank counts to run: 16, 32, 64 (default: all)."),
        seed: int = typer.Option(0, "--seed", help="Seed of the test's uniform routing."),
        latency_us: float | None = typer.Option(
            None, "--latency-us", min=0.0, help="The kernel's fixed time per call, us (default: the dispatcher's)."
        ),
        fit: bool = typer.Option(False, "--fit", help="Also fit that time to the published timings and print it."),
    ) -> None:
        """HybridEP's published all-to-all bandwidths on H100 against netsim's hybridep dispatcher."""
        from netsim.errors import SpecError
        from netsim.validation.hybridep import PUBLISHED, compare, table

        bad = sorted(set(ep) - set(PUBLISHED))
        if bad:
            allowed = ", ".join(str(e) for e in PUBLISHED)
            raise SpecError(f"HybridEP publishes {allowed} ranks on H100 only (got {bad[0]})", field="--ep")
        lat = None if latency_us is None else latency_us * 1e-6
        typer.echo(table(compare(tuple(ep) or tuple(PUBLISHED), seed, lat)))
        if fit:
            from netsim.validation.ep_latency import fit as fit_latency
            from netsim.validation.ep_latency import hybridep_points

            typer.echo(fit_latency("HybridEP", hybridep_points(seed)).summary())
