"""`netsim report`, `netsim compare` and `netsim gallery`: pages and timelines from run directories."""

from __future__ import annotations

from pathlib import Path

import typer

from netsim.cli.common import check_out_dir, console, err_console, force_option


def _parse_ranks(text: str | None) -> list[int] | None:
    """'0,3,8-11' -> [0, 3, 8, 9, 10, 11]."""
    if not text:
        return None
    from netsim.errors import NetsimError

    out: list[int] = []
    for part in text.split(","):
        part = part.strip()
        try:
            if "-" in part:
                lo, hi = (int(x) for x in part.split("-", 1))
                if hi < lo:
                    raise ValueError(part)
                out.extend(range(lo, hi + 1))
            elif part:
                out.append(int(part))
        except ValueError as exc:
            raise NetsimError(f"expected ranks like 0,3,8-11 (got {text!r})", field="--trace-ranks") from exc
    return out


def register(app: typer.Typer) -> None:
    @app.command("report")
    def report_cmd(
        run_dir: Path = typer.Argument(..., help="Run directory written by `netsim run`."),
        trace: bool = typer.Option(True, "--trace/--no-trace", help="Also write trace.json (Chrome trace)."),
        trace_ranks: str | None = typer.Option(None, "--trace-ranks", help="Ranks in the trace, e.g. 0,3,8-11."),
        trace_max_events: int = typer.Option(
            200_000, "--trace-max-events", min=1, help="At most this many op events in trace.json."
        ),
        trace_aggregate: bool = typer.Option(
            False, "--trace-aggregate", help="Merge consecutive ops of one class on a stream in the trace."
        ),
        top_links: int = typer.Option(10, "--top-links", min=1, help="Links listed as most congested."),
    ) -> None:
        """Write report.html, report.md, figures/ and trace.json into RUN_DIR."""
        from netsim.io import marker_kind
        from netsim.report import write_report

        if (run_dir / "summary.json").is_file() and marker_kind(run_dir) != "run":
            from netsim.errors import OutputError

            raise OutputError(
                f"{run_dir} is not a run directory written by `netsim run` (no marker file); "
                "netsim writes reports only into its own run directories",
                field="RUN_DIR",
            )

        html = write_report(
            run_dir,
            trace=trace,
            trace_ranks=_parse_ranks(trace_ranks),
            trace_max_events=trace_max_events,
            trace_aggregate=trace_aggregate,
            top_links=top_links,
        )
        console.print(
            f"wrote {html} and {run_dir / 'report.md'}"
            + (f" and {run_dir / 'trace.json'}" if (run_dir / "trace.json").exists() and trace else "")
        )

    @app.command("compare")
    def compare_cmd(
        run_dirs: list[Path] = typer.Argument(..., help="Run directories to compare."),
        baseline: Path | None = typer.Option(None, "--baseline", help="Baseline run (default: the first)."),
        out: Path = typer.Option(Path("compare"), "--out", "-o", help="Output directory."),
        force: bool = force_option(),
    ) -> None:
        """Compare runs side by side with ratios to a baseline; write report and compare.csv to --out."""
        from netsim.io import atomic_dir
        from netsim.report import write_compare
        from netsim.report.compare import regime_note
        from netsim.report.fmt import fmt_ratio, fmt_time

        check_out_dir(out, force)
        with atomic_dir(out, force=force, kind="compare") as tmp:
            write_compare(run_dirs, tmp, baseline)
        html = out / "report.html"
        import pandas as pd

        df = pd.read_csv(out / "compare.csv")
        for rec in df.to_dict("records"):
            mark = " (baseline)" if rec["baseline"] else f" {fmt_ratio(rec['step_time_s_ratio'])}"
            console.print(f"{rec['label']}: step {fmt_time(rec['step_time_s'])}{mark}")
        note = regime_note(df)
        if note:
            console.print(note, markup=False)
        console.print(f"wrote {html}, {out / 'report.md'} and {out / 'compare.csv'}")

    @app.command("gallery")
    def gallery_cmd(
        out: Path = typer.Option(Path("reports"), "--out", "-o", help="Gallery directory."),
        names: list[str] = typer.Option([], "--only", help="Run only this preset scenario (repeatable)."),
        force: bool = force_option(),
    ) -> None:
        """Run the preset scenarios and write their reports under --out, with index.md."""
        from netsim.report.gallery import run_gallery

        check_out_dir(out, force)
        index = run_gallery(out, names or None, progress=lambda line: err_console.print(line), force=force)
        console.print(f"wrote {index}")
