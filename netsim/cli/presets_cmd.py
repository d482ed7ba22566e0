"""`netsim presets`: list the built-in topology and workload presets and the compute profiles
(with the attention kernels each knows), with their descriptions, and the regimes netsim's
validation covers (netsim.accuracy: how far its step has been from published runs of each)."""

from __future__ import annotations

import typer
from rich.table import Table

from netsim.cli.common import console


def _preset_data(path: object) -> dict[str, object]:
    """A preset file's YAML mapping (empty if unreadable)."""
    from pathlib import Path

    import yaml

    try:
        data = yaml.safe_load(Path(str(path)).read_text())
    except (OSError, yaml.YAMLError):
        return {}
    return data if isinstance(data, dict) else {}


def _first_comment_or_description(path: object) -> str:
    desc = _preset_data(path).get("description")
    return " ".join(str(desc).split()) if desc else ""


def _accelerator_name(path: object) -> str:
    """The ``accelerator.name`` a topology preset file declares ('' if none)."""
    acc = _preset_data(path).get("accelerator")
    return str(acc.get("name", "")) if isinstance(acc, dict) else ""


def _regimes_table() -> Table:
    """netsim's record on published runs per regime (netsim.accuracy), as the validation report
    tables it, with the topology presets whose accelerator each is."""
    from netsim.accuracy import load_accuracy
    from netsim.topology import list_presets, preset_path
    from netsim.validation.report import regime_table

    presets: dict[str, list[str]] = {}
    for name in list_presets():
        presets.setdefault(_accelerator_name(preset_path(name)), []).append(name)
    records = load_accuracy()
    head, body = regime_table([a.as_dict() for a in records])
    r = Table(
        title="Validated regimes (published training runs netsim validate predicts; step-time error, "
        "negative: netsim's step shorter)",
        title_justify="left",
    )
    for i, col in enumerate(head):
        r.add_column(col, justify="right" if i >= 3 else "left")
    for a, row in zip(records, body, strict=True):
        r.add_row(f"{row[0]} ({', '.join(presets.get(a.accelerator, [])) or '-'})", *row[1:])
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
