"""Scenario specification: which topology, which workload, and how to simulate them.

A scenario is the unit ``netsim run`` executes::

    name: locmoe-64                     # the run directory is runs/<name> by default
    topology: ascend-910a               # preset name or YAML path (relative to this file)
    nodes: 8                            # servers (overrides the topology's num_nodes)
    topology_overrides: ["backend.oversubscription=2"]
    workload: locmoe-pangu              # preset name, YAML path, or an inline mapping
    workload_overrides: ["num_microbatches=8"]
    seed: 0
    steps: 2                            # default: the workload's steps
    options:
      path_policy: null                 # network path policy: shortest, ecmp, ecmp-pair, spray, pxn,
                                        # dmodk, dmodk-pxn
                                        # (null: the topology's collectives.routing; pxn on NVIDIA presets;
                                        # ``routing:`` is its deprecated spelling, still accepted)
      router: null                      # MoE router / statistical model override
      routing_trace: null               # routing-trace file (replaces the router)
      kernels: null                     # measured kernel table (default: the topology accelerator's
                                        # compute profile, e.g. Vidur's H100 table; else the roofline)
      calibration: null                 # CAL.yaml: link efficiencies, collective step latency
      flops_efficiency: 0.8             # roofline: achieved fraction of peak FLOP/s
      memory_efficiency: 0.8            # roofline: achieved fraction of HBM bandwidth
      compute_class_scale: null         # {gemm: 1.28, attention: 0.83, ...}: multiply the kernel
                                        # times of a class (gemm, attention, fp8_cast, norm, other):
                                        # the compute model calibrated to a measured profile
      algorithms: {all_to_allv: direct} # collective algorithm per op
      step_latency: null                # per-step software latency ("2us"); the ideal cost model only
      collective_cost: null             # nccl (NCCL's algorithms, protocols, latencies; links at the
                                        # preset's efficiency) or ideal (the wire bound); null: the topology's
      collective_model: auto            # auto: chosen from the run's size (netsim/auto.py); exact;
                                        # stream (ring phases as one flow per link); or coflow
                                        # (stream + each all-to-all phase as one coflow): much
                                        # faster at scale; error in docs: Performance
      routing_samples: null             # route at most N token samples per (step, MoE layer) and
                                        # reuse them across micro-batches and EP groups ("all":
                                        # every all-to-all routes its own tokens; null: auto's
                                        # choice, "all" under the other models)
      lockstep: null                    # simulate one rank per EP group standing for all its
                                        # ranks (slowest expert load; gradient reductions per
                                        # rank; every collective and transfer still runs);
                                        # null: auto's choice, false under the other models
      checkpoint_baseline: true         # also replay without checkpoint traffic (slowdown)
      allow_oom: false                  # simulate a workload whose ranks need more memory
                                        # than the accelerator's HBM (a warning, not an error)

``--set key=value`` on the command line edits a scenario: keys starting with ``topology.`` go to
the topology, ``workload.`` to the workload, anything else to the scenario itself (``seed=3``,
``options.path_policy=spray``).  :func:`load_scenario` validates once and reports problems as one
:class:`~netsim.errors.SpecError` line naming the file and the field.

Roofline efficiency defaults: 0.8 of peak BF16 FLOP/s is what large GEMMs reach on Hopper (the
project's H200 measured about 790 of 989 TFLOP/s dense BF16); 0.8 of HBM bandwidth is typical
of streaming kernels.  Both are parameters; a measured kernel table (``--kernels``, or the
accelerator's ``compute`` profile in the topology, as on dgx-h100, h800 and dgx-a100) replaces
the roofline.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field, PrivateAttr, field_validator, model_validator

from netsim.config.common import Duration, SpecModel, apply_overrides, folder_name, load_mapping, validate_model
from netsim.errors import SpecError
from netsim.limits import MAX_STEPS

__all__ = ["DEFAULT_SCENARIO_PATH", "ScenarioOptions", "ScenarioSpec", "load_scenario", "split_overrides"]

#: The built-in scenario ``netsim run`` runs without arguments.
DEFAULT_SCENARIO_PATH = Path(__file__).resolve().parent.parent / "data" / "scenarios" / "default.yaml"


class ScenarioOptions(SpecModel):
    """How to simulate (see the module docstring)."""

    path_policy: str | None = None
    router: str | None = None
    routing_trace: str | None = None
    kernels: str | None = None
    calibration: str | None = None
    flops_efficiency: float = Field(default=0.8, gt=0, le=1)
    memory_efficiency: float = Field(default=0.8, gt=0, le=1)
    compute_class_scale: dict[Literal["gemm", "attention", "fp8_cast", "norm", "other"], float] | None = None
    algorithms: dict[str, str] = Field(default_factory=dict)
    step_latency: Duration | None = None
    collective_cost: str | None = None
    collective_model: Literal["auto", "exact", "stream", "coflow"] = "auto"
    routing_samples: int | Literal["all"] | None = None
    lockstep: bool | None = None

    #: deprecated spellings still accepted -> the field they mean (``routing`` named the network
    #: path policy before MoE routing existed; docs/sections/inputs.md)
    OLD_SPELLINGS: ClassVar[dict[str, str]] = {"routing": "path_policy"}

    @model_validator(mode="before")
    @classmethod
    def _old_spellings(cls, data: Any) -> Any:
        """Map each deprecated spelling to its field.  Both given: the old spelling wins, since it
        comes from an override (``--set options.routing=...``, a sweep axis) written on top of a
        file or preset that already uses the new one."""
        if not isinstance(data, Mapping):
            return data
        for old, new in cls.OLD_SPELLINGS.items():
            if old in data:
                data = {k: v for k, v in data.items() if k != new}
                data = {(new if k == old else k): v for k, v in data.items()}
        return data

    @field_validator("compute_class_scale")
    @classmethod
    def _positive_scales(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        for k, v in (value or {}).items():
            if not (v > 0 and v < float("inf")):
                raise ValueError(f"the factor of {k} must be finite and > 0 (got {v})")
        return value

    @field_validator("routing_samples", mode="before")
    @classmethod
    def _samples(cls, value: Any) -> Any:
        """An integer >= 1, ``all`` or null (one readable message instead of a union's two)."""
        if value is None or value == "all":
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            number = value
        elif isinstance(value, str) and value.strip().isdigit():
            number = int(value)
        else:
            number = 0
        if number < 1:
            raise ValueError(f"must be an integer >= 1 or 'all' (got {value!r})")
        return number

    checkpoint_baseline: bool = True
    allow_oom: bool = False


class ScenarioSpec(SpecModel):
    """A topology + a workload + simulation options."""

    name: str = "scenario"
    description: str = ""
    topology: str
    nodes: int | None = Field(default=None, ge=1)
    topology_overrides: list[str] = Field(default_factory=list)
    workload: str | dict[str, Any]
    workload_overrides: list[str] = Field(default_factory=list)
    seed: int = Field(default=0, ge=0)
    steps: int | None = Field(default=None, ge=1, le=MAX_STEPS)
    options: ScenarioOptions = Field(default_factory=ScenarioOptions)

    _source: str | None = PrivateAttr(default=None)
    _base_dir: Path | None = PrivateAttr(default=None)
    #: the ``topology_overrides`` / ``workload_overrides`` items the scenario itself gives (not a
    #: ``--set``), so that an error in one names the scenario file
    _own_overrides: frozenset[str] = PrivateAttr(default=frozenset())

    @field_validator("name")
    @classmethod
    def _one_folder(cls, value: str) -> str:
        return folder_name(value)  # the default run directory is runs/<name>

    @property
    def source(self) -> str | None:
        return self._source

    @property
    def base_dir(self) -> Path:
        """Directory that relative paths in the scenario are resolved against."""
        return self._base_dir if self._base_dir is not None else Path.cwd()

    def resolve_path(self, ref: str) -> str:
        """``ref`` relative to :attr:`base_dir` if it names a file there, else as is (a folder of
        the same name, e.g. an earlier run directory named after a preset, leaves the preset)."""
        p = Path(ref)
        if not p.is_absolute() and (self.base_dir / p).is_file():
            return str(self.base_dir / p)
        return ref

    def with_origin(self, source: str | None, base_dir: Path | None) -> ScenarioSpec:
        self._source = source
        self._base_dir = base_dir
        return self

    @property
    def own_overrides(self) -> frozenset[str]:
        """The override items the scenario file itself gives (``--set`` items excluded)."""
        return self._own_overrides

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def split_overrides(overrides: Sequence[str]) -> tuple[list[str], list[str], list[str]]:
    """Split ``--set`` items into (scenario, topology, workload) overrides (prefix removed)."""
    scen: list[str] = []
    topo: list[str] = []
    work: list[str] = []
    for item in overrides:
        key = item.partition("=")[0].strip()
        if key.startswith("topology."):
            topo.append(item.strip()[len("topology.") :])
        elif key.startswith("workload."):
            work.append(item.strip()[len("workload.") :])
        else:
            scen.append(item)
    return scen, topo, work


def load_scenario(
    ref: str | Path | Mapping[str, Any] | None = None, overrides: Sequence[str] = (), *, source: str | None = None
) -> ScenarioSpec:
    """Load a scenario from a YAML path, a mapping, or the built-in default (``ref=None``).

    ``overrides`` are ``--set`` items: ``topology.*`` and ``workload.*`` are appended to the
    scenario's ``topology_overrides`` / ``workload_overrides``; the rest edit the scenario.
    """
    if ref is None:
        ref = DEFAULT_SCENARIO_PATH
    if isinstance(ref, Mapping):
        data = dict(ref)
        where = source or "<scenario>"
        base = Path.cwd()
    else:
        path = Path(ref)
        data = load_mapping(path)
        where = str(path)
        base = path.resolve().parent
    scen, topo, work = split_overrides(overrides)
    data = apply_overrides(data, scen)
    own: set[str] = set()
    for key, extra in (("topology_overrides", topo), ("workload_overrides", work)):
        current = data.get(key) or []
        if not isinstance(current, list):
            raise SpecError("must be a list of key=value strings", source=where, field=key)
        own.update(str(item) for item in current if item not in extra)
        if extra:
            data[key] = [*current, *extra]
    spec = validate_model(ScenarioSpec, data, source=where, overrides=scen)
    spec._own_overrides = frozenset(own)
    return spec.with_origin(where, base)
