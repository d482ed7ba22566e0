"""``netsim run``: simulate training steps of a scenario and write its run directory.

::

    netsim run                                   # the built-in default scenario
    netsim run SCENARIO.yaml [--out DIR] [--seed S] [--steps K] [--set key=value ...]
    netsim run --topology ascend-910a --nodes 8 --workload locmoe-pangu [--router rre]
               [--routing-trace FILE] [--kernels FILE] [--calibration CAL.yaml]
               [--collective-model auto|exact|stream|coflow] [--routing-samples N]
               [--lockstep/--no-lockstep] [--allow-oom]

``--set`` edits the scenario: ``topology.<field>=...`` the topology, ``workload.<field>=...``
the workload, anything else the scenario (``seed=3``, ``options.path_policy=spray``).  The run
directory defaults to ``runs/<scenario name>`` under the current directory; the command ends
with a short summary and the path of the report.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from netsim.cli.common import console, cost_option, err_console, force_option, report_writer, scenario_ref
from netsim.cli.progress import PhaseProgress
from netsim.errors import NetsimError
from netsim.units import format_bytes, format_duration, format_shares

_STAGES = {
    "plan": "building and planning",
    "replay": "replaying",
    "baseline": "checkpoint-free baseline",
    "write": "writing results",
    "report": "writing report",
}


def _scenario(
    scenario: Path | None,
    topology: str | None,
    nodes: int | None,
    workload: str | None,
    sets: list[str],
    seed: int | None,
    steps: int | None,
    options: dict[str, Any],
) -> Any:
    from netsim.config.scenario import load_scenario

    extra = list(sets)
    if seed is not None:
        extra.append(f"seed={seed}")
    if steps is not None:
        extra.append(f"steps={steps}")
    for key, value in options.items():
        if value is not None:
            extra.append(f"options.{key}={value}")
    ref, nodes_item = scenario_ref(scenario, topology, nodes, workload)
    if isinstance(ref, dict):
        return load_scenario(ref, extra, source="command line")
    return load_scenario(ref, [*extra, *nodes_item])


def _print_summary(summary: dict[str, Any], path: Path, report: Path | None) -> None:
    from netsim.run import layout_line

    st = summary["step_time_s"]
    par = summary["parallelism"]
    console.print(
        f"[bold]{summary['name']}[/bold]: {summary['workload']} on {summary['topology']} "
        f"({summary['num_nodes']} nodes, {summary['num_ranks']} ranks: {layout_line(par)}, "
        f"{summary['schedule']}, {summary['num_microbatches']} micro-batches)"
    )
    console.print(f"step time: [bold]{format_duration(st)}[/bold] (mean of {summary['steps']} step(s))")
    if summary.get("measured_step_time_s"):
        meas = summary["measured_step_time_s"]
        console.print(
            f"measured step: {format_duration(meas)} ({summary.get('measured_step')}); simulated / "
            f"measured = {st / meas:.2f}",
            markup=False,
        )
    cc = summary.get("collective_cost") or {}
    if cc:
        from netsim.collectives.setup import cost_summary_line

        console.print(cost_summary_line(cc))
    if summary.get("compute_model"):
        console.print(f"compute model: {summary['compute_model']}", markup=False)
    for note in summary.get("compute_notes") or []:
        console.print(f"  note: {note}", markup=False)
    t = Table(box=None, show_header=True, header_style="bold", pad_edge=False)
    t.add_column("breakdown (mean over ranks)")
    t.add_column("time", justify="right")
    t.add_column("share", justify="right")
    for k, v in summary["breakdown_s"].items():
        t.add_row(k, format_duration(v), f"{100 * v / st:.1f}%" if st > 0 else "-")
    console.print(t)
    _print_kernels(summary.get("compute_kernels"))
    b = Table(box=None, show_header=True, header_style="bold", pad_edge=False)
    b.add_column("traffic class")
    b.add_column("bytes / step", justify="right")
    b.add_column("exposed comm", justify="right")
    exposed = summary.get("exposed_comm_s_by_class", {})
    for k, v in summary["bytes_by_class"].items():
        b.add_row(k, format_bytes(v), format_duration(exposed[k]) if k in exposed else "-")
    console.print(b)
    if summary.get("alltoall_share") is not None:
        ep = [format_bytes(summary[f"ep_bytes_{k}"]) for k in ("local_rank", "intra_node", "inter_node")]
        md = summary.get("moe_dispatch") or {}
        costs = [
            f"{format_duration(md[k] * 1e-6)} {what}"
            for k, what in (("call_latency_us", "fixed per call"), ("host_sync_us", "host wait per forward dispatch"))
            if md.get(k)
        ]
        kernel = f" (dispatcher {md['dispatcher']}, {', '.join(costs)})" if costs else ""
        console.print(
            f"expert all-to-all: {100 * summary['alltoall_share']:.1f}% of the step{kernel}; EP bytes per step "
            f"on-rank / intra-node / inter-node: {' / '.join(ep)}; expert load CV "
            f"{summary['expert_load_cv']:.3f}, drop rate {100 * summary['drop_rate']:.2f}%"
        )
    if summary.get("checkpoint_time_s") is not None:
        slow = summary.get("checkpoint_slowdown_s")
        console.print(
            f"checkpoint: {format_duration(summary['checkpoint_time_s'])} to write"
            + (f", slows the step by {format_duration(slow)}" if slow is not None else "")
        )
    _print_memory(summary.get("memory"))
    if summary.get("faults"):
        console.print(summary["faults"]["line"], markup=False)
    if summary.get("validation_accuracy"):
        console.print(summary["validation_accuracy"]["line"], markup=False)
    if summary.get("model_choice"):
        console.print(f"simulated with: {summary['model_choice']}", markup=False)
    if (
        summary.get("collective_model") == "exact"
        and summary.get("num_flows", 0) > LARGE_RUN_FLOWS
        and not str(summary.get("model_choice", "")).startswith("auto")
    ):
        console.print(
            f"({summary['num_flows']:,} flows simulated one by one: for runs this size, "
            "--collective-model auto or coflow gives the step within a few percent, many times faster; "
            "see the docs, Performance)"
        )
    if summary.get("lockstep"):
        console.print(
            f"(lockstep: one rank per EP group simulated, {summary['num_ops']:,} ops; "
            "each stands for its group's ranks)"
        )
    console.print(f"run directory: {path}" + (f"\nreport: {report}" if report is not None else ""))


def _print_kernels(kern: dict[str, Any] | None) -> None:
    """Where the busiest rank's kernel time goes, by class and by where the times came from
    (the run directory's ``kernels`` table has every kernel)."""
    if not kern or kern["kernel_time_s"] <= 0:
        return
    total = kern["kernel_time_s"]
    console.print(
        f"compute kernels of rank {kern['rank']} (stage {kern['stage']}, {format_duration(total)} per step): "
        f"{format_shares(kern['by_class_s'], total)}",
        markup=False,
    )
    console.print(f"  timed from: {format_shares(kern['by_source_s'], total)}", markup=False)


def _print_memory(mem: dict[str, Any] | None) -> None:
    """The per-rank memory line, and a warning when it does not fit (``--allow-oom``)."""
    if not mem:
        return
    gib = float(2**30)
    parts = ", ".join(f"{k} {mem[f'{k}_bytes'] / gib:.1f}" for k in ("params", "grads", "optimizer", "activations"))
    if mem.get("weight_copies_bytes", 0.0):
        parts += f", fp8 weight copies {mem['weight_copies_bytes'] / gib:.1f}"
    if mem.get("main_grads_bytes", 0.0) > mem["activations_bytes"]:
        parts += f", main grads at the optimizer step {mem['main_grads_bytes'] / gib:.1f}"
    cap = mem.get("capacity_bytes")
    hbm = f"HBM {cap / gib:.1f} GiB" if cap else "HBM unknown"
    line = (
        f"memory: {mem['peak_bytes'] / gib:.1f} GiB per rank at most (pp stage {mem['peak_stage']}: {parts} GiB; "
        f"recompute {mem['recompute']}), {hbm}"
    )
    console.print(line)
    if not mem.get("fits", True):
        err_console.print(
            f"warning: rank {mem['peak_rank']} needs {mem['peak_bytes'] / gib:.1f} GiB, more than the "
            f"{hbm}: this configuration would run out of memory (simulated anyway: --allow-oom)"
        )


#: the option that sets each field a check can name (so an error blames the flag the user typed)
_FIELD_FLAGS = {
    "router": "--router",
    "routing": "--router",
    "options.router": "--router",
    "routing_trace": "--routing-trace",
    "options.routing_trace": "--routing-trace",
    "kernels": "--kernels",
    "options.kernels": "--kernels",
    "calibration": "--calibration",
    "options.calibration": "--calibration",
    "collective_model": "--collective-model",
    "options.collective_model": "--collective-model",
    "routing_samples": "--routing-samples",
    "options.routing_samples": "--routing-samples",
    "num_nodes": "--nodes",
    "nodes": "--nodes",
    "seed": "--seed",
    "steps": "--steps",
}


def _blamed(exc: NetsimError, source: str, keep_field: bool = True) -> NetsimError:
    """``exc`` attributed to ``source`` (a ``--set KEY`` item or an option), without its field
    when ``keep_field`` is off or the ``--set`` key already names it (no ``KEY: KEY:``)."""
    exc.source = source
    key = source.removeprefix("--set ") if source.startswith("--set ") else None
    if not keep_field or (exc.field and key is not None and (key == exc.field or key.endswith("." + exc.field))):
        exc.field = None
    exc.args = (exc.one_line(),)
    return exc


def blame_user_input(exc: NetsimError, sets: list[str], flags: dict[str, Any]) -> NetsimError:
    """Attribute ``exc`` to the ``--set`` item or option the user gave for its field, if any.

    A check deep in the run names the field it found wrong and the file it was reading (often
    the built-in default scenario); when the user's own ``--set`` or option wrote that field,
    the error names that instead.
    """
    from netsim.config.common import override_for

    if exc.source and exc.source.startswith("--set "):  # name the item as typed (with its topology./workload.)
        typed = next((s for s in sets for p in ("topology.", "workload.") if s == p + exc.source[6:]), None)
        if typed is not None:
            return _blamed(exc, f"--set {typed.partition('=')[0]}")
        flag = _FIELD_FLAGS.get(exc.source[6:].partition("=")[0].strip())
        if flag is not None and flags.get(flag) is not None and not any(s == exc.source[6:] for s in sets):
            return _blamed(exc, flag)  # an option this command turned into a --set item (--seed, --routing-samples)
    field = exc.field or ""
    if not field:
        return exc
    prefixes = ("", "workload.", "topology.", "options.")
    for item in reversed(sets):
        key = item.partition("=")[0].strip()
        for prefix in prefixes:
            if prefix and not key.startswith(prefix):
                continue
            stripped = item[len(prefix) :]
            hit = override_for(field, [stripped]) or override_for(field.removeprefix("options."), [stripped])
            if hit is not None:
                return _blamed(exc, f"--set {key}")
    flag = _FIELD_FLAGS.get(field)
    for item in reversed(sets):  # e.g. --set options.router=x for a check that names "routing"
        key = item.partition("=")[0].strip()
        if flag is not None and _FIELD_FLAGS.get(key) == flag:
            return _blamed(exc, f"--set {key}", keep_field=False)
    if flag is not None and flags.get(flag) is not None:
        return _blamed(exc, flag, keep_field=False)
    return exc


#: above this many flows an exact run's summary points to the faster collective models
LARGE_RUN_FLOWS = 500_000


def register(app: typer.Typer) -> None:
    @app.command("run")
    def run_cmd(
        scenario: Path | None = typer.Argument(None, help="Scenario YAML (default: the built-in scenario)."),
        topology: str | None = typer.Option(None, "--topology", "-t", help="Topology preset or YAML file."),
        nodes: int | None = typer.Option(None, "--nodes", "-n", min=1, help="Number of servers."),
        workload: str | None = typer.Option(None, "--workload", "-w", help="Workload preset or YAML file."),
        out: Path | None = typer.Option(None, "--out", "-o", help="Run directory (default: runs/<name>)."),
        seed: int | None = typer.Option(None, "--seed", min=0, help="Random seed (routing samples, ECMP)."),
        steps: int | None = typer.Option(None, "--steps", min=1, help="Training steps to simulate."),
        router: str | None = typer.Option(None, "--router", help="MoE router or statistical routing model."),
        routing_trace: Path | None = typer.Option(None, "--routing-trace", help="Routing trace (.parquet)."),
        kernels: Path | None = typer.Option(
            None, "--kernels", help="Measured kernel table (default: the accelerator's compute profile, else roofline)."
        ),
        calibration: Path | None = typer.Option(None, "--calibration", help="Calibration file (CAL.yaml)."),
        collective_cost: str | None = cost_option(),
        collective_model: str | None = typer.Option(
            None,
            "--collective-model",
            help="auto (default: chosen from the run's size, the summary says what and "
            "why); exact: every flow; stream: ring phases as one flow per link; coflow: stream, and each "
            "all-to-all phase as one coflow (much faster at scale; errors in the docs, Performance).",
        ),
        routing_samples: int | None = typer.Option(
            None,
            "--routing-samples",
            min=1,
            help="Route at most N token samples per step and MoE layer and reuse "
            "them across micro-batches and EP groups (default: auto's choice; --set options.routing_samples=all "
            "routes every all-to-all).",
        ),
        lockstep: bool | None = typer.Option(
            None,
            "--lockstep/--no-lockstep",
            help="Simulate one rank per EP group standing for all the group's ranks "
            "(slowest expert load; every collective and transfer still runs; default: auto's choice).",
        ),
        allow_oom: bool = typer.Option(
            False,
            "--allow-oom",
            help="Simulate even when a rank needs more memory than the accelerator's HBM "
            "(a warning instead of an error).",
        ),
        sets: list[str] = typer.Option([], "--set", help="key=value override (topology.*, workload.*, ...)."),
        no_report: bool = typer.Option(False, "--no-report", help="Skip report.html / figures."),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress display."),
        force: bool = force_option(),
    ) -> None:
        """Simulate training steps and write a run directory (summary, tables, report)."""
        opts = _run_options(
            router=router,
            routing_trace=routing_trace,
            kernels=kernels,
            calibration=calibration,
            collective_model=collective_model,
            collective_cost=collective_cost,
            routing_samples=routing_samples,
            lockstep=lockstep,
            allow_oom=allow_oom,
        )
        flags = {
            "--router": router,
            "--routing-trace": routing_trace,
            "--kernels": kernels,
            "--calibration": calibration,
            "--collective-model": collective_model,
            "--routing-samples": routing_samples,
            "--nodes": nodes,
            "--seed": seed,
            "--steps": steps,
        }
        _run(scenario, topology, nodes, workload, sets, seed, steps, opts, flags, out, no_report, quiet, force)


def _run_options(
    *,
    router: str | None,
    routing_trace: Path | None,
    kernels: Path | None,
    calibration: Path | None,
    collective_model: str | None,
    collective_cost: str | None,
    routing_samples: int | None,
    lockstep: bool | None,
    allow_oom: bool,
) -> dict[str, Any]:
    """The scenario ``options.*`` the command's options set (``None``: not given; files made absolute)."""
    return {
        "router": router,
        "routing_trace": str(routing_trace.resolve()) if routing_trace else None,
        "kernels": str(kernels.resolve()) if kernels else None,
        "calibration": str(calibration.resolve()) if calibration else None,
        "collective_model": collective_model,
        "collective_cost": collective_cost,
        "routing_samples": routing_samples,
        "lockstep": lockstep,
        "allow_oom": allow_oom or None,
    }


def _run(
    scenario: Path | None,
    topology: str | None,
    nodes: int | None,
    workload: str | None,
    sets: list[str],
    seed: int | None,
    steps: int | None,
    opts: dict[str, Any],
    flags: dict[str, Any],
    out: Path | None,
    no_report: bool,
    quiet: bool,
    force: bool,
) -> None:
    """Build the scenario, simulate it into its run directory and print the summary.

    An error is attributed to the ``--set`` item or option (``flags``) the user gave for its field.
    """
    from netsim.run import run_scenario

    try:
        spec = _scenario(scenario, topology, nodes, workload, sets, seed, steps, opts)
        out_dir = out if out is not None else Path("runs") / spec.name
        with PhaseProgress(err_console, "netsim run", _STAGES, enabled=not quiet) as progress:
            outcome = run_scenario(
                spec, out_dir, progress=progress, report=None if no_report else report_writer(), force=force
            )
    except NetsimError as exc:
        raise blame_user_input(exc, sets, flags) from None
    report = out_dir / "report.html"
    _print_summary(outcome.summary, out_dir, report if report.exists() else None)
