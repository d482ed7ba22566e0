"""Reading a run directory: ``summary.json`` and the result tables, with their documented columns.

A run directory (docs/CONTRACTS.md, "Run directory") holds a summary and flat tables written by
``netsim run``, each table both as ``<name>.parquet`` and ``<name>.csv``.  The report layer reads
only these files, never engine objects (docs/architecture.md), so everything a report shows can be
recomputed from the directory alone.

:data:`TABLES` is the single source of the column reference: each table's purpose and the
meaning and unit of each column.  ``docs/sections/report.md`` documents the same columns and a
test keeps the two in step.  :func:`load_run` validates the presence of the documented columns
(extra columns are allowed and kept) and raises a one-line :class:`~netsim.errors.NetsimError`
naming the file when something required is missing or unreadable.

Only ``summary.json`` is mandatory; a missing table is ``None`` and the report omits the
sections that need it with a note.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from netsim.errors import NetsimError


@dataclass(frozen=True)
class TableSpec:
    """A run-directory table: what one row is, and each documented column with its meaning."""

    name: str
    row: str
    columns: Mapping[str, str]
    optional: str = ""
    text: tuple[str, ...] = ()
    extra: Mapping[str, str] = field(default_factory=dict)


TABLES: dict[str, TableSpec] = {
    spec.name: spec
    for spec in (
        TableSpec(
            "ranks",
            "one row per rank: where the step time of that rank went",
            {
                "rank": "global rank (int, 0 .. num_ranks-1)",
                "device": "accelerator the rank runs on (str, e.g. `n0.g3`)",
                "node": "node index of that device (int)",
                "compute_s": "time computing while no communication of the rank is in flight (s)",
                "communication_s": "time communicating while not computing (s), i.e. exposed communication",
                "overlap_s": "time computing and communicating at once (s)",
                "idle_s": "time doing neither, e.g. waiting on a dependency or pipeline bubble (s)",
                "dp": "the rank's index along the data-parallel dimension (int)",
                "pp": "the rank's pipeline stage (int)",
                "ep": "the rank's index in its expert-parallel group (int)",
                "tp": "the rank's index in its tensor-parallel group (int)",
            },
            text=("device",),
        ),
        TableSpec(
            "links",
            "one row per directed link of the topology",
            {
                "link": "link id (str, unique)",
                "src": "device the link leaves (str)",
                "dst": "device the link enters (str)",
                "class": "link class (str: nvlink, hccs, pcie, ib, roce, ethernet, ...)",
                "tier": "fabric tier (str, e.g. intra-node, leaf, spine, core)",
                "network": "the fabric the link belongs to (str, e.g. backend, frontend, node)",
                "capacity_Bps": "capacity (bytes/s)",
                "bytes": "bytes carried during the step (B)",
                "busy_s": "time the link carried any traffic (s)",
                "peak_utilization": "highest instantaneous rate / effective capacity (fraction, 0..1); 1.0 "
                "for any link that was some flow's bottleneck, however briefly (max-min sharing gives a flow "
                "its bottleneck's full rate at once): the report shows windowed peaks instead",
                "mean_utilization": "bytes / (capacity_Bps * step time) (fraction, 0..1)",
            },
            text=("link", "src", "dst", "class", "tier", "network"),
            extra={"effective_capacity_Bps": "capacity after the link class's efficiency (bytes/s)"},
        ),
        TableSpec(
            "ops",
            "one row per executed op (a compute kernel or a communication op) of one rank",
            {
                "rank": "global rank (int)",
                "device": "accelerator of the rank (str)",
                "node": "node index (int)",
                "stream": "stream the op ran on (str, e.g. compute, comm, comm-ep)",
                "name": "op name (str, e.g. attn-fwd, ep-dispatch, dp-allreduce)",
                "kind": "`compute`, `host` (CPU-side time: an op of a replayed trace, or the host's wait "
                "before a forward dispatch) or `comm`",
                "traffic_class": "traffic class of a comm op (dp, pp, ep, tp, storage, checkpoint); empty for compute",
                "layer": "model layer index (int; -1 or empty when the op belongs to no layer)",
                "microbatch": "micro-batch index (int; -1 or empty when not applicable)",
                "start_s": "start time from the step start (s)",
                "end_s": "end time from the step start (s)",
            },
            text=("device", "stream", "name", "kind", "traffic_class"),
            extra={"step": "training step the op belongs to (int, from 0)"},
        ),
        TableSpec(
            "tier_timeseries",
            "one row per (time window, tier, network): the bytes all links of that tier carried",
            {
                "t0_s": "window start (s)",
                "t1_s": "window end (s)",
                "tier": "fabric tier (str)",
                "network": "fabric (str)",
                "bytes": "bytes carried by the links of the tier in the window (B)",
                "capacity_Bps": "summed capacity of the links of the tier (bytes/s); utilisation = "
                "bytes / (capacity_Bps * (t1_s - t0_s))",
            },
            text=("tier", "network"),
        ),
        TableSpec(
            "traffic_matrix",
            "one row per (source node, destination node, traffic class) with traffic",
            {
                "src_node": "sending node index (int)",
                "dst_node": "receiving node index (int); src_node == dst_node is intra-node traffic",
                "traffic_class": "traffic class (str)",
                "bytes": "bytes sent (B)",
            },
            text=("traffic_class",),
        ),
        TableSpec(
            "alltoall_layers",
            "one row per expert-parallel all-to-all (MoE layer, micro-batch, phase)",
            {
                "layer": "MoE layer index (int)",
                "microbatch": "micro-batch index (int)",
                "phase": "which all-to-all (str: fwd-dispatch, fwd-combine, bwd-dispatch, bwd-combine)",
                "start_s": "start of the first rank (s)",
                "end_s": "end of the last rank (s)",
                "duration_s": "end_s - start_s (s)",
                "bytes": "bytes moved by the all-to-all over all ranks (B)",
            },
            optional="MoE runs only",
            text=("phase",),
            extra={
                "step": "training step (int, from 0)",
                "local_bytes": "bytes of the all-to-all that stayed on the sending rank (B)",
            },
        ),
        TableSpec(
            "kernels",
            "one row per (op, kernel, pass, shape) of the busiest rank of each pipeline stage: where its "
            "compute time goes",
            {
                "stage": "pipeline stage (int)",
                "rank": "the stage's rank with the most kernel time (int)",
                "op": "the compute op that runs the kernel (str, e.g. `F.attn`, `BW.mlp`, `F.head`, `optimizer`)",
                "kernel": "catalogue kernel (str, e.g. `gemm`, `attention`, `cross_entropy`; `(fp8 cast)` for an FP8 "
                "quantisation cast)",
                "kernel_class": "its class (str: gemm, attention, norm, fp8_cast, optimizer, other)",
                "pass": "fwd, bwd or step (str)",
                "shape": "the kernel's shape parameters (str, e.g. `k=4096 m=8192 n=14336`)",
                "calls": "calls per step as the plan issues them (int; a backward GEMM split into its input- and "
                "weight-gradient halves counts once per half)",
                "time_s": "kernel seconds per step of those calls, as planned (s)",
                "share": "of the rank's kernel seconds (fraction, 0..1)",
            },
            optional="workload runs only",
            text=("op", "kernel", "kernel_class", "pass", "shape", "dtype", "source"),
            extra={
                "dtype": "the dtype the kernel ran in (str)",
                "source": "where its time came from (str: `table` a measured row, `table:surface` the fitted GEMM "
                "surface, `table:fwd-scaled` a backward from the measured forward, `table:analog` a measured kernel "
                "of the same kind at equal bytes, `flash-attention:...` an attention kernel's published curves, "
                "`roofline:...` peak rates; a clock note when scaled to the SM clock)",
                "tflops": "one call's rate at that shape, catalogue FLOPs over its seconds (TFLOP/s)",
                "gbps": "one call's rate at that shape, catalogue bytes over its seconds (GB/s)",
            },
        ),
        TableSpec(
            "expert_load",
            "one row per (router step, MoE layer, expert)",
            {
                "step": "router step (int)",
                "layer": "MoE layer index (int)",
                "expert": "expert index (int)",
                "tokens": "tokens routed to the expert (int)",
            },
            optional="MoE runs only",
            extra={"dropped": "token assignments to the expert dropped by its capacity (int)"},
        ),
    )
}

#: Documented fields of ``summary.json`` (docs/CONTRACTS.md).
SUMMARY_FIELDS: dict[str, str] = {
    "step_time_s": "duration of the simulated training step (s)",
    "breakdown_s": "{compute, communication, overlap, idle}: mean over ranks of the `ranks` columns (s)",
    "bytes_by_class": "{dp, pp, ep, tp, storage, checkpoint}: bytes sent per traffic class (B)",
    "bytes_by_link_class": "{nvlink, ib, ...}: bytes carried per link class, summed over links (B)",
    "east_west_bytes": "bytes of flows between accelerators, inside and between nodes (B)",
    "north_south_bytes": "bytes of flows from or to the front-end: storage, hosts, checkpoint targets (B)",
    "exposed_comm_s_by_class": "{class: s}: communication time per class not hidden by compute (s)",
    "checkpoint_time_s": "time to write the checkpoint (s) or null",
    "num_ranks": "number of ranks",
    "topology": "topology name",
    "workload": "workload name",
    "seed": "scenario seed",
    "ep_bytes_local_rank": "MoE: expert-parallel bytes that stayed on the sending rank (B)",
    "ep_bytes_intra_node": "MoE: expert-parallel bytes between ranks of one node (B)",
    "ep_bytes_inter_node": "MoE: expert-parallel bytes between nodes (B)",
    "expert_load_cv": "MoE: coefficient of variation of tokens per expert",
    "drop_rate": "MoE: fraction of token assignments dropped by expert capacity",
    "alltoall_share": "MoE: fraction of the step time spent in expert-parallel all-to-all",
}

#: Further fields ``netsim run`` writes to ``summary.json`` (not required by the report).
SUMMARY_EXTRA_FIELDS: dict[str, str] = {
    "name": "scenario name",
    "steps": "number of simulated training steps (the summary's times and bytes are per step)",
    "num_nodes": "number of nodes (servers)",
    "parallelism": "{dp, pp, tp, cp, ep, zero_stage} and, where set, cp_comm_type, hierarchical_cp, dp_replicas: "
    "the parallel layout",
    "schedule": "pipeline schedule name",
    "num_microbatches": "micro-batches per step",
    "layers_per_block": "list: transformer layers in each pipeline block (virtual stage), in model order",
    "step_times_s": "list: the time of each simulated step (s)",
    "checkpoint_slowdown_s": "step time minus that of a replay without checkpoint traffic (s) or null",
    "compute_model": "where compute times come from (kernel table or roofline)",
    "compute_notes": "list: assumptions the compute model leaned on (dtype answered from another, backward "
    "from forward, ...)",
    "compute_kernels": "{rank, stage, kernel_time_s, by_class_s, by_source_s}: the busiest rank's kernel time per "
    "step and its split by kernel class and by where the times came from (the `kernels` table's `source` "
    "without its clock note) (s)",
    "faults": "{degraded_links: [{a, b, bandwidth}], slow_devices: {device: speed}, line}: what ran below its "
    "rate (topology `degraded_links`, `slow_devices`; absent when nothing did)",
    "validation_accuracy": "{accelerator, dtype, model_kind, runs, mean_step_error, rms_step_error, "
    "min_step_error, max_step_error, within_10pct, cases, line}: the run's regime and netsim's record on the "
    "published runs of it (`netsim.accuracy`; step-time errors, negative: netsim's step was shorter; `runs` 0 "
    "and no statistics where none has been predicted)",
    "collective_model": "exact, stream or coflow (how collectives were turned into flows; `auto` picks one)",
    "model_choice": "one line: the collective model, lockstep and routing samples the run used, and why "
    "(`auto: coflow (more than 20,000 flows exact)`, or `set by the user`)",
    "routing_samples": "token samples routed per step and MoE layer, reused (null: every all-to-all its own)",
    "lockstep": "true: one rank per lockstep unit (EP group) simulated, standing for the unit's ranks",
    "num_ops": "ops in the op graph (lockstep: of the simulated ranks)",
    "num_flows": "network flows simulated",
    "measured_step_time_s": "the step the run's kernel table measured (netsim import kineto --kernel-table), when "
    "it has one (s)",
    "measured_step": "what that measured step is (e.g. the span of a profiler trace)",
    "trace": "a replayed Chakra trace (netsim replay-chakra): its source, forms, ranks and what became of its "
    "collectives",
}

MOE_SUMMARY_FIELDS = (
    "ep_bytes_local_rank",
    "ep_bytes_intra_node",
    "ep_bytes_inter_node",
    "expert_load_cv",
    "drop_rate",
    "alltoall_share",
)

#: Canonical display order of breakdown components (traffic classes: netsim.workload.plan).
BREAKDOWN = ("compute", "communication", "overlap", "idle")


@dataclass(frozen=True)
class RunData:
    """A loaded run directory: its path, ``summary.json`` and the tables present (others absent)."""

    path: Path
    summary: dict[str, Any]
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)

    def table(self, name: str) -> pd.DataFrame | None:
        """The table ``name`` or ``None`` when the run directory does not have it."""
        return self.tables.get(name)

    @property
    def name(self) -> str:
        """The run directory's name (its default label), see :func:`run_name`."""
        return run_name(self.path)

    @property
    def has_moe(self) -> bool:
        """Whether the run has MoE layers (MoE summary fields or an expert_load table)."""
        if self.tables.get("expert_load") is not None:
            return True
        return any(self.summary.get(k) is not None for k in MOE_SUMMARY_FIELDS)


_ATOMIC_TMP = re.compile(r"^\.(?P<name>.+)\.tmp-[A-Za-z0-9_]+$")


def run_name(path: Path) -> str:
    """The name of a run directory.

    A directory still being written by :func:`netsim.io.atomic_dir` (``.<name>.tmp-XXXX``, as
    when ``netsim run`` writes the report before renaming) is named after its final name, so
    the report does not depend on the random temporary suffix.
    """
    name = path.resolve().name if path.name in ("", ".", "..") else path.name
    m = _ATOMIC_TMP.match(name)
    return m.group("name") if m else name


def summary_number(summary: Mapping[str, Any], key: str) -> float | None:
    """``summary[key]`` as a finite float, or ``None`` when absent, null or not a number."""
    value = summary.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    out = float(value)
    return out if math.isfinite(out) else None


def summary_mapping(summary: Mapping[str, Any], key: str) -> dict[str, float]:
    """``summary[key]`` as {name: float} (non-numeric entries dropped); empty when absent."""
    value = summary.get(key)
    if not isinstance(value, Mapping):
        return {}
    out: dict[str, float] = {}
    for k, v in value.items():
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(float(v)):
            out[str(k)] = float(v)
    return out


def read_summary(run_dir: Path) -> dict[str, Any]:
    """Read ``run_dir/summary.json``; a missing or malformed file is a :class:`NetsimError`."""
    path = Path(run_dir) / "summary.json"
    if not Path(run_dir).is_dir():
        raise NetsimError("not a run directory (no such directory)", source=str(run_dir))
    if not path.is_file():
        raise NetsimError("not a run directory: summary.json is missing", source=str(run_dir))
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise NetsimError(f"cannot read summary: {exc}", source=str(path)) from exc
    if not isinstance(data, dict):
        raise NetsimError("summary must be a JSON object", source=str(path))
    step = data.get("step_time_s")
    if isinstance(step, bool) or not isinstance(step, int | float) or not math.isfinite(step) or step < 0:
        raise NetsimError(
            f"step_time_s must be a number of seconds >= 0 (got {step!r}): not a summary netsim wrote", source=str(path)
        )
    return data


def read_table(run_dir: Path, name: str) -> pd.DataFrame | None:
    """Read table ``name`` from ``run_dir`` (Parquet preferred, CSV otherwise), or ``None``.

    Documented columns that are missing raise a :class:`NetsimError` naming the file.
    """
    run_dir = Path(run_dir)
    parquet, csv = run_dir / f"{name}.parquet", run_dir / f"{name}.csv"
    if parquet.is_file():
        source = parquet
        try:
            df = pd.read_parquet(parquet)
        except Exception as exc:  # pyarrow raises several unrelated types for a bad file
            raise NetsimError(f"cannot read table: {' '.join(str(exc).split())}", source=str(parquet)) from exc
    elif csv.is_file():
        source = csv
        try:
            text = TABLES[name].text if name in TABLES else ()
            df = pd.read_csv(csv, dtype=dict.fromkeys(text, str))
            for col in text:  # an empty text cell is "" (as in Parquet), not NaN
                if col in df.columns:
                    df[col] = df[col].fillna("")
        except pd.errors.EmptyDataError:
            df = pd.DataFrame()
        except (OSError, ValueError, pd.errors.ParserError) as exc:
            raise NetsimError(f"cannot read table: {' '.join(str(exc).split())}", source=str(csv)) from exc
    else:
        return None
    spec = TABLES.get(name)
    if spec is not None:
        if df.columns.empty and df.empty:
            df = pd.DataFrame({c: pd.Series(dtype="float64") for c in spec.columns})
        missing = [c for c in spec.columns if c not in df.columns]
        if missing:
            raise NetsimError(
                f"table {name!r} lacks column(s) {', '.join(missing)} (see docs/sections/report.md)", source=str(source)
            )
    return df


def load_run(run_dir: str | Path) -> RunData:
    """Load ``summary.json`` and every documented table present in ``run_dir``."""
    path = Path(run_dir)
    summary = read_summary(path)
    tables: dict[str, pd.DataFrame] = {}
    for name in TABLES:
        df = read_table(path, name)
        if df is not None:
            tables[name] = df
    return RunData(path=path, summary=summary, tables=tables)


def node_sort_key(value: Any) -> tuple[int, float, str]:
    """Sort key that orders numeric node ids numerically and others by name."""
    try:
        return (0, float(value), "")
    except (TypeError, ValueError):
        return (1, 0.0, str(value))
