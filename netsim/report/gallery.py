"""The report gallery: run the preset scenarios and collect their reports under ``reports/``.

For every scenario the gallery runs the training-step replay into ``<out>/<name>/`` (a complete
run directory), writes its report there with a size-capped ``trace.json``, compares all runs in
``<out>/compare/`` and writes ``<out>/index.md`` linking everything with the headline numbers.

Presets are the scenario YAML files shipped in ``netsim/data/scenarios/`` (name = file stem).
Each is run with ``netsim.run.run_scenario(spec, run_dir)`` (no report); the gallery writes the
report itself.  Both can be replaced by arguments (the tests do).  The report layer sits above
the replay, so this module imports :mod:`netsim.run` (when the gallery runs: it is heavy).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from netsim.errors import NetsimError
from netsim.io import atomic_dir, check_output_dir, claim_dir
from netsim.report.compare import write_compare
from netsim.report.files import write_text
from netsim.report.fmt import DASH, fmt_bytes, fmt_num, fmt_pct, fmt_time
from netsim.report.run_report import write_report
from netsim.report.tables import load_run, summary_number

Runner = Callable[[Any, Path], Any]
Progress = Callable[[str], None]

#: Op events kept in each gallery trace (keeps the committed gallery small).
GALLERY_TRACE_EVENTS = 20_000

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def _replay_api() -> tuple[Runner, Callable[[], Mapping[str, Any]]]:
    """(runner, presets): :func:`netsim.run.run_scenario` and the shipped scenario files."""
    from netsim.config.scenario import DEFAULT_SCENARIO_PATH, load_scenario
    from netsim.run import run_scenario

    def runner(scenario: Any, run_dir: Path) -> Any:
        spec = load_scenario(scenario) if isinstance(scenario, str | Path) else scenario
        return run_scenario(spec, run_dir, force=True)  # inside the gallery's own folder

    def shipped() -> Mapping[str, Any]:
        return {p.stem: p for p in sorted(DEFAULT_SCENARIO_PATH.parent.glob("*.yaml"))}

    return runner, shipped


def run_gallery(
    out: str | Path = "reports",
    names: list[str] | None = None,
    *,
    scenarios: Mapping[str, Any] | None = None,
    runner: Runner | None = None,
    progress: Progress | None = None,
    trace_max_events: int = GALLERY_TRACE_EVENTS,
    force: bool = False,
) -> Path:
    """Run the gallery scenarios into ``out/<name>/`` with reports; write ``out/index.md``.

    Args:
        out: gallery directory.
        names: run only these presets (default: all).
        scenarios: name -> scenario (default: the presets, see the module docstring).
        runner: ``runner(scenario, run_dir)`` writes a run directory (default:
            ``netsim.run.run_scenario`` without its report).
        progress: called with one line per step.
        trace_max_events: op events kept in each trace.json.
        force: replace an existing gallery folder that netsim wrote.

    Returns the path of ``index.md``.
    """
    if runner is None or scenarios is None:
        default_runner, default_presets = _replay_api()
        runner = runner or default_runner
        scenarios = scenarios if scenarios is not None else dict(default_presets())
    if not scenarios:
        raise NetsimError("no gallery scenarios to run")
    if names:
        unknown = [n for n in names if n not in scenarios]
        if unknown:
            raise NetsimError(
                f"unknown gallery scenario(s) {', '.join(unknown)}; known: {', '.join(sorted(scenarios))}"
            )
        selected = {n: scenarios[n] for n in names}
    else:
        selected = dict(sorted(scenarios.items()))
    for name in selected:
        if not _NAME.match(name) or name in ("compare", "index"):
            raise NetsimError(f"gallery scenario name {name!r} is not usable as a directory name")
    check_output_dir(out, force=force)
    out_dir = claim_dir(out, kind="gallery", force=force)
    say = progress or (lambda _line: None)
    run_dirs: list[Path] = []
    for name, scenario in selected.items():
        run_dir = out_dir / name
        say(f"running {name}")
        result = runner(scenario, run_dir)
        returned = getattr(result, "path", result)  # a path, or an object with .path (RunOutcome)
        if isinstance(returned, str | Path) and Path(returned).is_dir():
            run_dir = Path(returned)
        say(f"writing report for {name}")
        write_report(run_dir, trace=True, trace_max_events=trace_max_events)
        run_dirs.append(run_dir)
    if len(run_dirs) > 1:
        say("comparing runs")
        with atomic_dir(out_dir / "compare", force=True, kind="compare") as tmp:
            write_compare(run_dirs, tmp)
    index = out_dir / "index.md"
    return write_text(index, _index_markdown(out_dir, run_dirs))


def _index_markdown(out_dir: Path, run_dirs: list[Path]) -> str:
    lines = [
        "# netsim report gallery",
        "",
        "Reports of the preset scenarios, regenerated by `netsim gallery --out reports/`. "
        "Each directory is a complete run directory (tables, `report.html`, `report.md`, `trace.json`); "
        "the committed copy keeps the reports, figures and summaries (see `.gitignore`).",
        "",
        "| scenario | topology | workload | ranks | step time | exposed comm | all-to-all share | "
        "inter-node EP bytes | report |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for run_dir in run_dirs:
        s = load_run(run_dir).summary
        rel = run_dir.relative_to(out_dir) if run_dir.is_relative_to(out_dir) else run_dir
        br = s.get("breakdown_s") if isinstance(s.get("breakdown_s"), dict) else {}
        exposed = br.get("communication") if isinstance(br, dict) else None
        lines.append(
            f"| {rel.name} | {s.get('topology', DASH)} | {s.get('workload', DASH)} | "
            f"{fmt_num(summary_number(s, 'num_ranks'))} | {fmt_time(summary_number(s, 'step_time_s'))} | "
            f"{fmt_time(exposed)} | {fmt_pct(summary_number(s, 'alltoall_share'))} | "
            f"{fmt_bytes(summary_number(s, 'ep_bytes_inter_node'))} | "
            f"[md]({rel.as_posix()}/report.md), [html]({rel.as_posix()}/report.html) |"
        )
    if len(run_dirs) > 1:
        lines += [
            "",
            "All runs side by side: [compare/report.md](compare/report.md) "
            "([html](compare/report.html), [csv](compare/compare.csv)).",
        ]
    return "\n".join(lines) + "\n"
