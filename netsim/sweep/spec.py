# Size: over the ~600-line guideline on purpose.  This module is the sweep file format: reading it,
# expanding grid/zip/exclude into points and validating every point before anything runs, with
# errors that name the sweep field and the point; expansion and validation share the field
# paths and the error wording, so they stay together (running the points is in execute.py).
"""Sweep files: a base scenario and a grid over its fields, expanded into validated points.

A sweep file names a base scenario and the fields to vary, by dotted path::

    name: fabrics                        # default: the file name without .yaml
    scenario: ../scenarios/moe.yaml      # base: a scenario file (relative to this file), or
                                         # `default` (the built-in one), or a mapping; or put
                                         # topology/nodes/workload/... here inline instead
    set: ["workload.steps=1"]            # --set items applied to every point (optional)
    grid:                                # the cartesian product of these lists
      topology.backend.fabric: [rail-optimized, leaf-spine, multi-plane]
      topology.backend.oversubscription: [1, 2]
      options.path_policy: [ecmp, spray]
    zip:                                 # groups of fields varied together (one axis each)
      - {nodes: [2, 4], workload.parallelism.ep: [16, 32]}
    exclude:                             # points to leave out (all fields of a rule match)
      - {topology.backend.fabric: multi-plane, options.path_policy: spray}

Field paths follow ``netsim run --set``: ``topology.<field>`` edits the topology (its
``topology_overrides``), ``workload.<field>`` the workload (``workload_overrides``) and
anything else the scenario itself (``topology``, ``nodes``, ``workload``, ``seed``, ``steps``,
``options.<option>``).  Grid axes come first, in file order, then the zip groups; the first
axis varies slowest.  In an exclude rule a list of values means "any of these".

:func:`load_sweep` expands the grid and validates every point before anything runs: the
scenario, the topology spec (and its graph, for the rank layout), the workload spec, the rank
layout and pipeline schedule, and the registry names (routing policy, router, placement,
collective algorithms).  The first problem is one :class:`~netsim.errors.SpecError` line that
names the sweep file, where the bad value was written (``grid.<field>`` or ``zip.<i>.<field>``),
what is allowed, and the point (``point 3: fabric=fat-tree, oversubscription=2``).

Each point gets a stable, readable id: a slug of its varied values plus the first 8 hex digits
of the SHA-256 of its *resolved* spec (the scenario's simulation fields, the validated topology
spec and the validated workload spec; not the point's name), e.g.
``fabric-leaf-spine_oversubscription-2-1f3a9c0e``.  The same point gets the same id whatever
else the grid holds, so a sweep whose grid grew reuses the points it already ran; a change to
a preset file the point uses changes its id.  (Files named by options, such as kernel tables
and routing traces, are identified by their path only.)
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import networkx as nx
from pydantic import Field, field_validator

from netsim.config.common import SpecModel, flow_value, folder_name, load_mapping, parse_override, validate_model
from netsim.config.scenario import DEFAULT_SCENARIO_PATH, ScenarioOptions, ScenarioSpec, load_scenario
from netsim.config.topology import TopologySpec
from netsim.config.workload import WorkloadSpec, load_workload
from netsim.errors import NetsimError, SpecError
from netsim.limits import MAX_SWEEP_POINTS, check_count

__all__ = ["SWEEP_KEYS", "Sweep", "SweepPoint", "load_sweep", "point_slug"]

#: Keys of a sweep file besides the inline scenario keys.
SWEEP_KEYS = ("name", "description", "scenario", "set", "grid", "zip", "exclude")

#: Scenario fields a sweep may vary at the top level (``topology.*``/``workload.*``/``options.*``
#: go deeper); ``name`` and ``description`` are set per point.
_SCENARIO_FIELDS = tuple(f for f in ScenarioSpec.model_fields if f not in ("name", "description"))
_LEAF_FIELDS = ("nodes", "seed", "steps", "topology_overrides", "workload_overrides")
_GENERIC_LEAVES = ("name", "kind", "policy", "value")
_SLUG_MAX = 60


class _SweepFile(SpecModel):
    """The sweep-specific keys of a sweep file (the rest is the inline base scenario)."""

    name: str | None = Field(default=None, min_length=1)
    description: str = ""
    scenario: str | dict[str, Any] | None = None
    set_: list[str] = Field(default_factory=list, alias="set")
    grid: dict[str, list[Any]] = Field(default_factory=dict)
    zip_: list[dict[str, list[Any]]] = Field(default_factory=list, alias="zip")
    exclude: list[dict[str, Any]] = Field(default_factory=list)

    @field_validator("name")
    @classmethod
    def _one_folder(cls, value: str | None) -> str | None:
        return None if value is None else folder_name(value)  # the default output is sweeps/<name>


@dataclass(frozen=True)
class _Axis:
    """One dimension of the grid: a grid key, or a zip group of fields varied together."""

    where: str  # "grid" or "zip.<i>"
    fields: tuple[str, ...]
    values: tuple[tuple[Any, ...], ...]  # one tuple (a value per field) per position


@dataclass(frozen=True)
class SweepPoint:
    """One grid point: its varied values and its validated scenario (as plain data).

    Attributes:
        index: position in the sweep (the order of the result table).
        id: stable readable id, ``<slug>-<8 hex digits of digest>``; its run directory is
            ``<sweep out>/points/<id>``.
        values: varied field (dotted path) -> value, in column order.
        scenario: the point's scenario (``ScenarioSpec.to_dict()``, ``name`` = ``id``).
        source: where the scenario came from (for messages).
        base_dir: directory that relative paths of the scenario resolve against (absolute).
        digest: SHA-256 (hex) of the resolved spec.
    """

    index: int
    id: str
    values: dict[str, Any]
    scenario: dict[str, Any]
    source: str
    base_dir: str
    digest: str

    def spec(self) -> ScenarioSpec:
        """The point's validated :class:`ScenarioSpec`."""
        spec = validate_model(ScenarioSpec, self.scenario, source=self.source)
        return spec.with_origin(self.source, Path(self.base_dir))

    def describe(self) -> str:
        """``fabric=leaf-spine, oversubscription=2`` (short field names); ``base`` if none."""
        if not self.values:
            return "base"
        return _describe(self.values)


@dataclass(frozen=True)
class Sweep:
    """An expanded, validated sweep: the varied fields and one point per grid combination."""

    name: str
    description: str
    source: str
    fields: tuple[str, ...]
    points: tuple[SweepPoint, ...]
    excluded: int = 0
    base: str = ""

    def manifest(self) -> dict[str, Any]:
        """Plain data describing the sweep (written as ``sweep.yaml`` in the output folder)."""
        return {
            "name": self.name,
            "description": self.description,
            "source": self.source,
            "base": self.base,
            "fields": list(self.fields),
            "excluded": self.excluded,
            "points": [{"index": p.index, "id": p.id, "values": p.values} for p in self.points],
        }


# --------------------------------------------------------------------------- helpers


def _short_name(path: str) -> str:
    """The last component of a dotted path, or the one before a generic ``name``/``kind``."""
    parts = path.split(".")
    if len(parts) > 1 and parts[-1] in _GENERIC_LEAVES:
        return parts[-2]
    return parts[-1]


def _describe(values: Mapping[str, Any]) -> str:
    """``fabric=leaf-spine, oversubscription=2:1`` (short names, values as written)."""
    if not values:
        return "base"
    return ", ".join(f"{_short_name(k)}={v if isinstance(v, str) else flow_value(v)}" for k, v in values.items())


def _slug_value(value: Any) -> str:
    if isinstance(value, Mapping):
        return "-".join(_slug_value(v) for v in value.values() if not isinstance(v, Mapping | list))
    if isinstance(value, list):
        return "-".join(_slug_value(v) for v in value)
    return flow_value(value)


def _sanitize(text: str) -> str:
    text = re.sub(r"[^A-Za-z0-9.+-]+", "-", text)
    return re.sub(r"-{2,}", "-", text).strip("-.")


def point_slug(values: Mapping[str, Any]) -> str:
    """The readable part of a point id: ``fabric-leaf-spine_oversubscription-2`` (<= 60 chars)."""
    if not values:
        return "base"
    parts = [f"{_sanitize(_short_name(k))}-{_sanitize(_slug_value(v)) or 'x'}" for k, v in values.items()]
    slug = "_".join(parts)
    if len(slug) > _SLUG_MAX:
        slug = slug[:_SLUG_MAX].rstrip("-_.")
    return slug


def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=True)


def _spec_digest(spec: ScenarioSpec, topology: TopologySpec, workload: WorkloadSpec) -> str:
    """SHA-256 of what a point simulates: not its name or the form its inputs were written in."""
    scen = {
        k: v
        for k, v in spec.to_dict().items()
        if k not in ("name", "description", "topology", "topology_overrides", "workload", "workload_overrides")
    }
    resolved = {
        "format": 1,
        "scenario": scen,
        "topology": topology.model_dump(mode="json"),
        "workload": workload.to_dict(),
    }
    return hashlib.sha256(_canonical(resolved).encode()).hexdigest()


def _check_field_path(key: str, where: str, source: str) -> None:
    """A sweepable dotted path (``topology.backend.fabric``, ``nodes``, ``options.path_policy``)."""
    at = f"{where}.{key}"
    parts = key.split(".")
    if not key.strip() or "=" in key or any(not p.strip() for p in parts):
        raise SpecError(
            "not a dotted field path; write e.g. topology.backend.oversubscription", source=source, field=at
        )
    head = parts[0]
    allowed = (
        "topology, topology.<field>, nodes, workload, workload.<field>, seed, steps, options.<option>, "
        "topology_overrides, workload_overrides"
    )
    if head in ("name", "description"):
        raise SpecError(f"{head} is set per point and cannot be swept; allowed: {allowed}", source=source, field=at)
    if head not in _SCENARIO_FIELDS:
        raise SpecError(f"unknown scenario field {head!r}; allowed: {allowed}", source=source, field=at)
    if head in _LEAF_FIELDS and len(parts) > 1:
        raise SpecError(f"{head} has no sub-fields; allowed: {allowed}", source=source, field=at)
    if head == "options":
        if len(parts) == 1:
            return
        options = list(ScenarioOptions.model_fields)
        if parts[1] not in options and parts[1] not in ScenarioOptions.OLD_SPELLINGS:
            raise SpecError(f"unknown option {parts[1]!r}; allowed: {', '.join(options)}", source=source, field=at)
        if len(parts) > 3 or (len(parts) > 2 and parts[1] != "algorithms"):
            raise SpecError(
                f"options.{parts[1]} has no sub-fields"
                + (" (options.algorithms.<op> is the only nested option)" if parts[1] != "algorithms" else ""),
                source=source,
                field=at,
            )


def _check_values(values: Sequence[Any], at: str, source: str) -> None:
    if not values:
        raise SpecError("needs at least one value", source=source, field=at)
    for i, v in enumerate(values):
        for j in range(i):
            if values[j] == v and type(values[j]) is type(v):
                raise SpecError(
                    f"the value {flow_value(v)!s} is listed twice (positions {j} and {i})", source=source, field=at
                )
        text = flow_value(v)
        try:
            _, back = parse_override(f"x={text}")
        except SpecError:
            back = object()
        if back != v:
            raise SpecError(
                f"cannot express the value {v!r} as a --set value; use plain YAML scalars, lists or mappings",
                source=source,
                field=at,
            )


def _axes(sweep: _SweepFile, source: str) -> list[_Axis]:
    axes: list[_Axis] = []
    seen: dict[str, str] = {}

    def claim(key: str, where: str) -> None:
        _check_field_path(key, where, source)
        if key in seen:
            raise SpecError(f"varied twice (also in {seen[key]})", source=source, field=f"{where}.{key}")
        seen[key] = where

    for key, values in sweep.grid.items():
        claim(key, "grid")
        _check_values(values, f"grid.{key}", source)
        axes.append(_Axis("grid", (key,), tuple((v,) for v in values)))
    for i, group in enumerate(sweep.zip_):
        where = f"zip.{i}"
        if not group:
            raise SpecError("an empty zip group; give fields with lists of values", source=source, field=where)
        lengths = {k: len(v) for k, v in group.items()}
        if len(set(lengths.values())) > 1:
            desc = ", ".join(f"{k}: {n}" for k, n in lengths.items())
            raise SpecError(
                f"the lists of a zip group must have the same length (got {desc})", source=source, field=where
            )
        for key, values in group.items():
            claim(key, where)
            if not values:
                raise SpecError("needs at least one value", source=source, field=f"{where}.{key}")
        rows = tuple(zip(*group.values(), strict=True))
        for key, values in group.items():
            try:
                _check_values(values, f"{where}.{key}", source)
            except SpecError as exc:
                if "listed twice" not in exc.message:
                    raise
        for a in range(len(rows)):
            for b in range(a):
                if rows[a] == rows[b]:
                    raise SpecError(f"positions {b} and {a} give the same combination", source=source, field=where)
        axes.append(_Axis(where, tuple(group), rows))
    return axes


def _exclude_rules(sweep: _SweepFile, axes: Sequence[_Axis], source: str) -> list[dict[str, list[Any]]]:
    """Exclude rules as field -> accepted values, checked against the swept values."""
    swept: dict[str, list[Any]] = {}
    for ax in axes:
        for j, f in enumerate(ax.fields):
            swept[f] = [row[j] for row in ax.values]
    rules = []
    for i, rule in enumerate(sweep.exclude):
        if not rule:
            raise SpecError("an empty rule would exclude every point", source=source, field=f"exclude.{i}")
        out: dict[str, list[Any]] = {}
        for key, value in rule.items():
            at = f"exclude.{i}.{key}"
            if key not in swept:
                allowed = ", ".join(swept) or "(nothing is varied)"
                raise SpecError(f"not a varied field; varied fields: {allowed}", source=source, field=at)
            options = swept[key]
            any_list = any(isinstance(v, list) for v in options)
            accepted = list(value) if isinstance(value, list) and not any_list else [value]
            for v in accepted:
                if not any(v == o for o in options):
                    allowed = ", ".join(flow_value(o) for o in options)
                    raise SpecError(
                        f"{flow_value(v)} is not one of the swept values ({allowed})", source=source, field=at
                    )
            out[key] = accepted
        rules.append(out)
    return rules


def _excluded(values: Mapping[str, Any], rules: Sequence[Mapping[str, list[Any]]]) -> bool:
    return any(all(any(values[k] == v for v in accepted) for k, accepted in rule.items()) for rule in rules)


# --------------------------------------------------------------------------- point validation


@dataclass
class _Base:
    """The base scenario of a sweep: what :func:`load_scenario` takes, and where it came from."""

    ref: Path | dict[str, Any] | None
    source: str
    base_dir: Path
    label: str


def _base(sweep: _SweepFile, inline: dict[str, Any], source: str, sweep_dir: Path) -> _Base:
    if sweep.scenario is not None and inline:
        keys = ", ".join(inline)
        raise SpecError(
            f"give the base scenario either as `scenario:` or inline ({keys}), not both",
            source=source,
            field="scenario",
        )
    if inline:
        return _Base(dict(inline), source, sweep_dir.resolve(), "inline")
    ref = sweep.scenario
    if ref is None:
        return _Base(DEFAULT_SCENARIO_PATH, str(DEFAULT_SCENARIO_PATH), DEFAULT_SCENARIO_PATH.parent, "default")
    if isinstance(ref, dict):
        return _Base(dict(ref), f"{source} (scenario)", sweep_dir.resolve(), "inline")
    path = Path(ref) if Path(ref).is_absolute() else sweep_dir / ref
    if path.is_file():
        return _Base(path, str(path), path.resolve().parent, str(ref))
    builtin = DEFAULT_SCENARIO_PATH.parent / f"{ref}.yaml"
    if "/" not in ref and builtin.is_file():
        return _Base(builtin, str(builtin), builtin.parent, ref)
    builtins = ", ".join(sorted(p.stem for p in DEFAULT_SCENARIO_PATH.parent.glob("*.yaml")))
    raise SpecError(
        f"no scenario file {str(path)!r}; give a path relative to the sweep file or a built-in scenario ({builtins})",
        source=source,
        field="scenario",
    )


class _Validator:
    """Validates points; caches topology graphs (many points share one topology)."""

    def __init__(self) -> None:
        self._graphs: dict[tuple[str, int | None, tuple[str, ...]], nx.DiGraph] = {}

    def graph(
        self, ref: str, nodes: int | None, overrides: tuple[str, ...], spec: TopologySpec, source: str
    ) -> nx.DiGraph:
        from netsim.topology import build_topology

        key = (ref, nodes, overrides)
        if key not in self._graphs:
            self._graphs[key] = build_topology(spec, source=source)
        return self._graphs[key]


def _attribute(
    exc: NetsimError, prefix: str, items: Mapping[str, str], values: Mapping[str, Any], fallback: str | None
) -> str | None:
    """The varied field an error of one stage (scenario/topology/workload) comes from, if any."""
    src = exc.source or ""
    if "--set " in src:
        item = src.split("--set ", 1)[1]
        if item in items:
            return items[item]
    if exc.field:
        full = prefix + exc.field
        # an axis written in a deprecated spelling (options.routing) owns its field's errors
        names = [
            full,
            *(
                full.replace(f"options.{new}", f"options.{old}", 1)
                for old, new in ScenarioOptions.OLD_SPELLINGS.items()
                if full.startswith(f"options.{new}")
            ),
        ]
        found = None
        for f in values:
            if any(n == f or n.startswith(f + ".") or f.startswith(n + ".") for n in names):
                found = f
        if found is not None:
            return found
    if fallback is not None and fallback in values and not exc.field:
        return fallback
    return None


def _check_names(spec: ScenarioSpec, workload: WorkloadSpec, graph: nx.DiGraph) -> None:
    """Registry names and the rank layout (raise errors whose field is a scenario path)."""
    from netsim.moe import placement_names, router_names, stat_model_names
    from netsim.run import check_options
    from netsim.workload.graph import effective_microbatches, workload_schedule
    from netsim.workload.layout import build_layout

    opts = spec.options
    check_options(opts)
    try:
        layout = build_layout(workload, graph)
        m = effective_microbatches(workload, layout.dp)
        workload_schedule(workload, layout.pp, m)
    except NetsimError as exc:
        raise type(exc)(exc.message, source=exc.source, field=f"workload.{exc.field}" if exc.field else None) from None
    moe = workload.model.moe
    if moe is None or not workload.model.moe_layers():
        return
    if opts.routing_trace:
        path = Path(spec.resolve_path(opts.routing_trace))
        if not path.is_file():
            raise SpecError(f"routing trace not found: {str(path)!r}", field="options.routing_trace")
        return
    name = opts.router or workload.router.name
    known = [*stat_model_names(), *router_names()]
    if name not in known:
        raise SpecError(
            f"unknown router {name!r}; allowed: {', '.join(known)}",
            field="options.router" if opts.router else "workload.router.name",
        )
    placement = workload.placement.name.replace("-", "_")
    if placement not in placement_names():
        raise SpecError(
            f"unknown placement {workload.placement.name!r}; allowed: {', '.join(placement_names())}",
            field="workload.placement.name",
        )


def _resolve_point(
    base: _Base,
    set_items: Sequence[str],
    values: Mapping[str, Any],
    where: Mapping[str, str],
    validator: _Validator,
    sweep_source: str,
    index: int,
    describe: str,
) -> tuple[ScenarioSpec, str]:
    """Validate one point; return its scenario and digest, or raise a SpecError for the sweep."""
    from netsim.topology import load_topology_spec_ref

    items = {f: f"{f}={flow_value(v)}" for f, v in values.items()}
    scen_items = {it: f for f, it in items.items() if not f.startswith(("topology.", "workload."))}
    topo_items = {it[len("topology.") :]: f for f, it in items.items() if f.startswith("topology.")}
    work_items = {it[len("workload.") :]: f for f, it in items.items() if f.startswith("workload.")}

    def fail(exc: NetsimError, stage: str, its: Mapping[str, str], fallback: str | None) -> SpecError:
        varied = _attribute(exc, stage, its, values, fallback)
        point = f"(point {index}: {describe})"
        if varied is None:
            if exc.source == sweep_source:
                return SpecError(f"{exc.message} {point}", source=sweep_source, field=exc.field)
            return SpecError(f"{exc.one_line()} {point}", source=sweep_source)
        inner = f"{stage}{exc.field}" if exc.field else None
        msg = exc.message if inner in (None, varied) else f"{inner}: {exc.message}"
        return SpecError(f"{msg} {point}", source=sweep_source, field=f"{where[varied]}.{varied}")

    try:
        spec = load_scenario(base.ref, [*set_items, *items.values()], source=base.source)
    except NetsimError as exc:
        raise fail(exc, "", scen_items, None) from None
    spec = spec.with_origin(base.source, base.base_dir)
    topo_ref = spec.resolve_path(spec.topology)
    overrides = tuple(spec.topology_overrides)
    try:
        topo, topo_source = load_topology_spec_ref(topo_ref, spec.nodes, overrides)
        graph = validator.graph(topo_ref, spec.nodes, overrides, topo, topo_source)
    except NetsimError as exc:
        raise fail(exc, "topology.", topo_items, "topology") from None
    try:
        if isinstance(spec.workload, str):
            workload = load_workload(spec.resolve_path(spec.workload), spec.workload_overrides)
        else:
            workload = load_workload(spec.workload, spec.workload_overrides, source=base.source)
    except NetsimError as exc:
        raise fail(exc, "workload.", work_items, "workload") from None
    try:
        _check_names(spec, workload, graph)
    except NetsimError as exc:
        raise fail(exc, "", {}, None) from None
    return spec, _spec_digest(spec, topo, workload)


# --------------------------------------------------------------------------- loading


def load_sweep(ref: str | Path | Mapping[str, Any], *, source: str | None = None) -> Sweep:
    """Read a sweep file (or mapping), expand its grid and validate every point.

    Args:
        ref: path of a sweep YAML file, or its content as a mapping (relative paths in it are
            then resolved against the current directory).
        source: the name used in messages for a mapping.

    Raises:
        SpecError: one line naming the sweep file, the field and, for a point, its values.
    """
    if isinstance(ref, Mapping):
        data = dict(ref)
        where = source or "<sweep>"
        sweep_dir = Path.cwd()
        default_name = "sweep"
    else:
        path = Path(ref)
        data = load_mapping(path)
        where = source or str(path)
        sweep_dir = path.parent
        default_name = path.stem
    known = list(SWEEP_KEYS) + list(_SCENARIO_FIELDS)
    for key in data:
        if key not in known:
            raise SpecError(f"unknown key; allowed keys: {', '.join(known)}", source=where, field=str(key))
    sweep_data = {k: v for k, v in data.items() if k in SWEEP_KEYS}
    inline = {k: v for k, v in data.items() if k not in SWEEP_KEYS}
    sweep = validate_model(_SweepFile, sweep_data, source=where)
    base = _base(sweep, inline, where, sweep_dir)
    axes = _axes(sweep, where)
    total = math.prod(len(ax.values) for ax in axes)  # before expanding (and validating) any point
    check_count(total, MAX_SWEEP_POINTS, "grid", source=where, what="points")
    rules = _exclude_rules(sweep, axes, where)
    fields = tuple(f for ax in axes for f in ax.fields)
    placed = {f: ax.where for ax in axes for f in ax.fields}
    validator = _Validator()
    points: list[SweepPoint] = []
    excluded = 0
    ids: dict[str, int] = {}
    for combo in itertools.product(*(ax.values for ax in axes)):
        values: dict[str, Any] = {}
        for ax, row in zip(axes, combo, strict=True):
            values.update(zip(ax.fields, row, strict=True))
        if _excluded(values, rules):
            excluded += 1
            continue
        index = len(points)
        slug = point_slug(values)
        desc = _describe(values)
        spec, digest = _resolve_point(base, sweep.set_, values, placed, validator, where, index, desc)
        pid = f"{slug}-{digest[:8]}"
        if pid in ids:
            raise SpecError(
                f"points {ids[pid]} and {index} are the same scenario (id {pid}); remove one of the values",
                source=where,
                field="grid" if not sweep.zip_ else None,
            )
        ids[pid] = index
        scenario = spec.model_copy(update={"name": pid}).to_dict()
        points.append(SweepPoint(index, pid, values, scenario, base.source, str(base.base_dir), digest))
    if not points:
        raise SpecError(f"the exclude rules remove all {excluded} points", source=where, field="exclude")
    return Sweep(
        name=sweep.name or default_name,
        description=sweep.description,
        source=where,
        fields=fields,
        points=tuple(points),
        excluded=excluded,
        base=base.label,
    )
