"""`netsim presets`: list the built-in topology and workload presets and the compute profiles
(with the attention kernels each knows), with their descriptions, and the regimes netsim's
validation covers (netsim.accuracy: how far its step has been from published runs of each)."""

from __future__ import annotations

import typer
from rich.table import Table

from netsim.cli.common import console


def _first_comment_or_description(path: object) -> str:
    from pathlib import Path

    import yaml

    p = Path(str(path))
    try:
        data = yaml.safe_load(p.read_text())
    except (OSError, yaml.YAMLError):
        return ""
    if isinstance(data, dict) and data.get("description"):
        return " ".join(str(data["description"]).split())
    return ""


def _accelerator_name(path: object) -> str:
    """The ``accelerator.name`` a topology preset file declares ('' if none)."""
    from pathlib import Path

    import yaml

    try:
        data = yaml.safe_load(Path(str(path)).read_text())
    except (OSError, yaml.YAMLError):
        return ""
    acc = data.get("accelerator") if isinstance(data, dict) else None
    return str(acc.get("name", "")) if isinstance(acc, dict) else ""


def _regimes_table() -> Table:
    """netsim's record on published runs per regime (netsim.accuracy), with the topology presets
    whose accelerator each is."""
    from netsim.accuracy import load_accuracy
    from netsim.topology import list_presets, preset_path

    presets: dict[str, list[str]] = {}
    for name in list_presets():
        presets.setdefault(_accelerator_name(preset_path(name)), []).append(name)
    r = Table(
        title="Validated regimes (published training runs netsim validate predicts; step-time error, "
        "negative: netsim's step shorter)",
        title_justify="left",
    )
    for col in ("accelerator (presets)", "dtype", "model"):
        r.add_column(col)
    for col in ("runs", "mean", "rms", "within 10%"):
        r.add_column(col, justify="right")
    for a in load_accuracy():
        names = ", ".join(presets.get(a.accelerator, [])) or "-"
        r.add_row(
            f"{a.accelerator} ({names})",
            a.dtype,
            a.model_kind,
            str(a.runs),
            f"{100 * a.mean_step_error:+.1f}%",
            f"{100 * a.rms_step_error:.1f}%",
            str(a.within_10pct),
        )
    return r


def register(app: typer.Typer) -> None:
    @app.command("presets")
    def presets_cmd() -> None:
        """List the built-in topology presets, workload presets and compute profiles."""
        from netsim.config.workload import list_workload_presets, workload_preset_path
        from netsim.topology import list_presets, preset_path

        t = Table(title="Topology presets (--topology NAME)", title_justify="left")
        t.add_column("name")
        t.add_column("description")
        for name in list_presets():
            t.add_row(name, _first_comment_or_description(preset_path(name)))
        console.print(t)
        w = Table(title="Workload presets (--workload NAME)", title_justify="left")
        w.add_column("name")
        w.add_column("description")
        for name in list_workload_presets():
            w.add_row(name, _first_comment_or_description(workload_preset_path(name)))
        console.print(w)
        from netsim.calibration.profiles import COMPUTE_PROFILES

        c = Table(
            title="Compute profiles (topology.accelerator.compute.profile; .attention picks the kernel)",
            title_justify="left",
        )
        c.add_column("name")
        c.add_column("attention kernels (default first)")
        c.add_column("description")
        for name in COMPUTE_PROFILES.names():
            prof = COMPUTE_PROFILES.get(name)
            c.add_row(name, ", ".join(prof.attention_kernels) or "roofline", prof.description)
        console.print(c)
        console.print(_regimes_table())
