"""Published measurements as data: one YAML file per public source.

A *source* is one publication: a GitHub issue comment with a pasted nccl-tests table, a vendor
benchmark page, a paper's table, a maintainer's statement.  Its file says where every number is
(``source``), on which system it was measured (``system``: a netsim topology preset, node and
GPU counts, ``--set`` overrides that describe the cluster), and the measured ``cases``.  The
shipped sources live in ``netsim/data/validation`` (package data; ``netsim/validation/data`` in
the repository) with a README saying how each was chosen and which were left out.

Case kinds (a :class:`~netsim.registry.Registry`, one predictor each in
:mod:`netsim.validation.cases`):

* ``collective``: an nccl-tests curve: ``op``, NCCL's ``algo``/``proto`` if the run forced them,
  ``points`` of (bytes, time in us, busbw as printed);
* ``training``: a published training run's throughput (:mod:`netsim.validation.training`);
* ``layer``: one transformer layer's GPU time by kernel class, from a published profile of a
  training step (:mod:`netsim.validation.layer`);
* ``ep-kernel``: one published bandwidth of an expert-parallel dispatch or combine kernel (DeepEP,
  HybridEP; :mod:`netsim.validation.ep_kernels`).

Every file is validated once, here: an unknown field, a negative time, a size of 0, a point
whose busbw disagrees with its time by more than the printed rounding, a preset netsim does not
ship: a one-line error naming the file and the field.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import Field, model_validator

from netsim.config.common import SpecModel, load_mapping, validate_model
from netsim.errors import SpecError

__all__ = [
    "DATA_DIR",
    "LAYER_CLASSES",
    "CollectiveCase",
    "EPKernelCase",
    "LayerCase",
    "MoELayerCase",
    "Point",
    "Source",
    "SourceInfo",
    "System",
    "TrainingCase",
    "load_source",
    "load_sources",
]

DATA_DIR = Path(__file__).resolve().parent / "data"

COLLECTIVE_OPS = ("all_reduce", "all_gather", "reduce_scatter", "all_to_all", "broadcast", "reduce", "sendrecv")
NCCL_ALGOS = ("ring", "tree", "nvls", "nvls_tree", "collnet_direct", "collnet_chain", "pat")


class SourceInfo(SpecModel):
    """Where the numbers come from."""

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$")
    title: str = Field(min_length=1)
    url: str = Field(min_length=8)
    where: str = Field(min_length=1)
    kind: Literal["measurement", "statement", "paper"]
    read_from: Literal["table", "figure", "text", "trace"] = "table"
    notes: str = ""


class System(SpecModel):
    """The measured system as a netsim topology."""

    topology: str = Field(min_length=1)
    nodes: int = Field(ge=1)
    gpus_per_node: int = Field(ge=1)
    set: dict[str, Any] = Field(default_factory=dict)
    hardware: str = ""
    software: dict[str, Any] = Field(default_factory=dict)

    def overrides(self) -> list[str]:
        """The ``set`` entries as topology ``--set`` items (without the ``topology.`` prefix)."""
        out = []
        for key, value in sorted(self.set.items()):
            k = key[len("topology.") :] if key.startswith("topology.") else key
            out.append(f"{k}={value}")
        return out


class Point(SpecModel):
    """One measured size (nccl-tests row)."""

    bytes: int = Field(gt=0)
    time_us: float = Field(gt=0)
    busbw_GBps: float | None = Field(default=None, ge=0)


Tolerance = Annotated[float, Field(gt=0, lt=10)]


class CollectiveCase(SpecModel):
    """An nccl-tests curve."""

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$")
    kind: Literal["collective"]
    op: Literal[
        "all_reduce", "all_gather", "reduce_scatter", "all_to_all", "alltoall", "broadcast", "reduce", "sendrecv"
    ]
    algo: Literal["ring", "tree", "nvls", "nvls_tree", "collnet_direct", "collnet_chain", "pat"] | None = None
    proto: Literal["LL", "LL128", "Simple"] | None = None
    #: nccl-tests' ``-d`` type names (test_typenames in its src/common.cu; char and int before NCCL 2)
    dtype: Literal[
        "int8", "uint8", "int32", "uint32", "int64", "uint64", "half", "float", "double", "bfloat16",
        "f8e4m3", "f8e5m2", "char", "int",
    ] = "float"  # fmt: skip
    column: Literal["out-of-place", "in-place"] = "out-of-place"
    points: list[Point] = Field(min_length=1)
    tolerance: Tolerance | None = None
    """Relative error allowed at every asserted size (default: by size, see :mod:`runner`)."""
    exclude: bool = False

    @property
    def netsim_op(self) -> str:
        return "all_to_all" if self.op == "alltoall" else self.op


class _Case(SpecModel):
    """What every published-run case has: an id, where its number is, a tolerance, and whether
    it is left out."""

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$")
    where: str = ""
    tolerance: Tolerance | None = None
    exclude: bool = False
    notes: str = ""


class TrainingCase(_Case):
    """A published training run (the scenario to simulate and the measured throughput).

    ``workload`` is a workload preset name or an inline workload mapping (the run's model,
    layout, batch, recomputation, precision, schedule); ``workload_set`` applies dotted
    ``key: value`` overrides to it; ``options`` are scenario options (``collective_model``,
    ``lockstep``, ``routing_samples``, ``allow_oom``, ...).  ``flops`` names the source's FLOP
    convention (:data:`netsim.validation.training.FLOP_CONVENTIONS`), required by the
    ``tflops_per_gpu`` and ``mfu`` metrics.  ``where`` says where the number is (table, row).
    """

    kind: Literal["training"]
    workload: str | dict[str, Any]
    workload_set: dict[str, Any] = Field(default_factory=dict)
    options: dict[str, Any] = Field(default_factory=dict)
    metric: Literal["step_time_s", "tokens_per_s_per_gpu", "tflops_per_gpu", "mfu"]
    measured: float = Field(gt=0)
    flops: Literal["megatron-2021", "megatron", "megatron-2025", "megatron-bridge", "palm"] | None = None
    """The source's FLOP convention (``tflops_per_gpu``, ``mfu``)."""
    peak_flops_per_gpu: float | None = Field(default=None, gt=0)
    """For ``mfu``: the peak the source divides by (FLOP/s), if not the preset's dense peak."""
    nodes: int | None = Field(default=None, ge=1)
    """Servers of this run, when the source's runs differ in size (default: ``system.nodes``)."""
    gpus_per_node: int | None = Field(default=None, ge=1)
    """GPUs of each server this run used, when fewer than the source's (a run on part of one
    server; default: ``system.gpus_per_node``).  The workload's layout must name its ``dp``."""
    seed: int = Field(default=0, ge=0)
    quick: bool = False
    """Cheap enough for ``netsim validate --quick`` (and CI)."""
    peak_memory_gib: float | None = Field(default=None, gt=0)
    """The run's measured peak allocated memory per GPU (GiB, ``torch.cuda.max_memory_allocated``:
    no allocator cache, no CUDA context), when the source gives it: a second row compares the
    memory tally's worst rank with it (metric ``peak_memory_gib``)."""

    @model_validator(mode="after")
    def _flops_for_flop_metrics(self) -> TrainingCase:
        if self.metric in ("tflops_per_gpu", "mfu") and self.flops is None:
            raise ValueError(
                f"metric {self.metric} needs flops (the source's FLOP convention): "
                "megatron-2021, megatron, megatron-2025, megatron-bridge or palm"
            )
        if self.metric == "mfu" and self.measured >= 1:
            raise ValueError(f"mfu is a fraction of peak (0..1), got {self.measured}")
        return self


#: the kernel classes a layer case compares (netsim.traces.kernel_classes), and ``compute``: their sum
LayerClass = Literal["gemm", "attention", "fp8_cast", "norm", "other", "compute"]
LAYER_CLASSES: tuple[str, ...] = get_args(LayerClass)


class LayerCase(_Case):
    """A measured transformer layer: the GPU time of one layer's forward and backward by kernel class.

    ``measured_ms`` holds per-layer milliseconds (forward + backward, recomputation included) of
    any of :data:`LAYER_CLASSES`, read from a profiled training step
    (``netsim import kineto TRACE --classes FILE --per LAYERS``: the busy time of each class);
    netsim predicts each from the compute model of ``system.topology`` for one micro-batch of the
    workload through one ``layer_kind`` layer, experts at balanced routing
    (:mod:`netsim.validation.layer`).  Only the ``asserted`` classes are held to the tolerance (default
    ``compute``, the GPU's busy time); the others are reported.
    """

    kind: Literal["layer"]
    workload: str | dict[str, Any]
    workload_set: dict[str, Any] = Field(default_factory=dict)
    layer_kind: Literal["dense", "moe"]
    measured_ms: dict[LayerClass, float] = Field(min_length=1)
    asserted: list[LayerClass] = Field(default_factory=lambda: list[LayerClass](["compute"]))

    @model_validator(mode="after")
    def _positive_and_measured(self) -> LayerCase:
        for k, v in self.measured_ms.items():
            if not v > 0:
                raise ValueError(f"measured_ms.{k} must be > 0 (got {v})")
        missing = [a for a in self.asserted if a not in self.measured_ms]
        if missing:
            raise ValueError(f"asserted classes without a measurement: {', '.join(missing)}")
        return self


class MoELayerCase(_Case):
    """A measured MoE layer: the wall time of one MoE layer's forward and of its backward.

    The benchmark times the layer alone (router, token dispatch, experts, combine; no attention)
    with CUDA events on one rank of an expert-parallel group (Megatron-LM's
    ``tests/functional_tests/test_cases/common/moe_perf``).  netsim simulates one step of the
    case's ``workload`` (one layer, its MLP the MoE layer) on the source's ``system`` and reads,
    from the op records of rank 0, the span from the first to the last MoE op of the layer's
    forward and of its backward (:mod:`netsim.validation.moe_layer`): the same computation,
    communication and host waits, in the order the step runs them.
    """

    kind: Literal["moe-layer"]
    workload: str | dict[str, Any]
    workload_set: dict[str, Any] = Field(default_factory=dict)
    options: dict[str, Any] = Field(default_factory=dict)
    measured_forward_ms: float = Field(gt=0)
    measured_backward_ms: float = Field(gt=0)
    quick: bool = False
    """Cheap enough for ``netsim validate --quick`` (and CI)."""


class EPKernelCase(_Case):
    """One published bandwidth of an expert-parallel dispatch or combine kernel (DeepEP, HybridEP).

    The library's benchmark: ``tokens`` per rank of ``hidden`` elements, each to ``top_k`` of
    ``experts`` experts (contiguous over the ``ranks``) chosen as its test chooses them
    (``routing``: DeepEP's node-limited random scores, or HybridEP's uniform ``randperm``), moved
    in ``dtype`` (FP8 rows carry an fp32 scale per 128 elements) and timed as ``timing`` says
    (``kernel``: the kernel alone; ``torch-api``: the library's Python call, which adds a copy out
    of its buffer and a synchronisation netsim does not model).  ``measured_GBps`` divides what
    the benchmark counts (``counted``: ``received`` rows, one per (token, rank) a rank receives,
    its own included; ``node-rows``: one per (token, node) a rank sends, its own node included)
    by the time.  netsim replays the routing through the ``library`` dispatcher on the source's
    topology, times the all-to-all(v) with the dispatcher kernel's fixed time per call, and divides
    the same bytes (:mod:`netsim.validation.ep_kernels`).
    """

    kind: Literal["ep-kernel"]
    library: Literal["deepep", "hybridep"]
    routing: Literal["node-limited", "uniform"]
    ranks: int = Field(ge=2)
    tokens: int = Field(ge=1, le=1 << 20)
    hidden: int = Field(ge=1, le=1 << 16)
    experts: int = Field(ge=1, le=1 << 16)
    top_k: int = Field(ge=1, le=64)
    phase: Literal["dispatch", "combine"]
    dtype: Literal["fp8", "bf16"]
    timing: Literal["kernel", "torch-api"] = "kernel"
    counted: Literal["received", "node-rows"]
    measured_GBps: float = Field(gt=0)

    @model_validator(mode="after")
    def _shape(self) -> EPKernelCase:
        if self.experts % self.ranks:
            raise ValueError(f"experts ({self.experts}) must be a multiple of ranks ({self.ranks})")
        if self.top_k > self.experts:
            raise ValueError(f"top_k ({self.top_k}) must be <= experts ({self.experts})")
        return self


Case = Annotated[CollectiveCase | TrainingCase | LayerCase | EPKernelCase | MoELayerCase, Field(discriminator="kind")]


class Source(SpecModel):
    """One validation file."""

    source: SourceInfo
    system: System
    cases: list[Case] = Field(min_length=1)
    exclude: bool = False

    @model_validator(mode="after")
    def _unique_cases(self) -> Source:
        seen: set[str] = set()
        for c in self.cases:
            if c.id in seen:
                raise ValueError(f"case id {c.id!r} appears twice")
            seen.add(c.id)
            gpn = getattr(c, "gpus_per_node", None)
            if gpn is not None and gpn > self.system.gpus_per_node:
                raise ValueError(
                    f"case {c.id}: gpus_per_node {gpn} is more than the system's {self.system.gpus_per_node}"
                )
        return self


def _busbw_factor(op: str, n: int) -> float:
    if op == "all_reduce":
        return 2.0 * (n - 1) / n
    if op in ("all_gather", "reduce_scatter", "all_to_all", "alltoall"):
        return (n - 1) / n
    return 1.0


def _check_points(src: Source, path: str) -> None:
    """A printed busbw must agree with size / time (the copy is checked)."""
    n = src.system.nodes * src.system.gpus_per_node
    for c in src.cases:
        if not isinstance(c, CollectiveCase):
            continue
        nranks = 2 if c.netsim_op == "sendrecv" and n < 2 else n
        for k, p in enumerate(c.points):
            if p.busbw_GBps is None:
                continue
            expect = p.bytes / (p.time_us * 1e3) * _busbw_factor(c.netsim_op, nranks)
            # nccl-tests prints 2 decimals of GB/s and 2-4 significant digits of time
            if not math.isclose(expect, p.busbw_GBps, rel_tol=0.02, abs_tol=0.02):
                raise SpecError(
                    f"busbw {p.busbw_GBps} GB/s disagrees with bytes/time ({expect:.3f} GB/s for "
                    f"{nranks} ranks): a copying error or a different rank count",
                    source=path,
                    field=f"cases.{c.id}.points[{k}]",
                )


def load_source(path: str | Path) -> Source:
    """Read and validate one validation file (one-line errors naming file and field)."""
    p = Path(path)
    data = load_mapping(p)
    src = validate_model(Source, data, source=str(p))
    if src.source.id != p.stem:
        raise SpecError(f"must equal the file name {p.stem!r}, got {src.source.id!r}", source=str(p), field="source.id")
    from netsim.topology import list_presets

    if src.system.topology not in list_presets():
        raise SpecError(
            f"unknown topology preset {src.system.topology!r}; allowed: {', '.join(list_presets())}",
            source=str(p),
            field="system.topology",
        )
    _check_system_set(src, str(p))
    _check_points(src, str(p))
    return src


def _check_system_set(src: Source, path: str) -> None:
    """The file's ``system.set`` items applied to its topology (the spec only, no graph): an error
    names the file and the item rather than a ``--set`` nobody typed."""
    problem = _system_problem(src.system.topology, src.system.nodes, tuple(src.system.overrides()))
    if problem is not None:
        field, message = problem
        raise SpecError(message, source=path, field=field)


@functools.lru_cache(maxsize=256)
def _system_problem(topology: str, nodes: int | None, items: tuple[str, ...]) -> tuple[str, str] | None:
    """(field, message) of what is wrong with ``items`` on ``topology``, or None (many files
    share a system: checked once)."""
    from netsim.config.common import set_item
    from netsim.errors import NetsimError
    from netsim.topology import load_topology_spec_ref

    try:
        load_topology_spec_ref(topology, nodes, items)
    except NetsimError as exc:
        item = set_item(exc.source)
        return (f"system.set {item!r}" if item is not None else "system.set"), exc.message
    return None


def load_sources(paths: Sequence[str | Path] | None = None) -> list[Source]:
    """The given files, or every shipped source (``DATA_DIR/*/*.yaml``), sorted by id."""
    files = [Path(x) for x in paths] if paths else sorted(DATA_DIR.glob("*/*.yaml"))
    if not files:
        raise SpecError("no validation files", source=str(DATA_DIR))
    return sorted((load_source(f) for f in files), key=lambda s: s.source.id)


def with_overrides(sources: Sequence[Source], items: Sequence[str]) -> list[Source]:
    """The sources with ``KEY=VALUE`` what-if overrides applied to every case (``netsim validate
    --set``), split as a scenario's ``--set`` is (:func:`netsim.config.scenario.split_overrides`):
    ``topology.K`` joins each source's ``system.set`` (as a topology ``--set``), ``workload.K``
    each training and layer case's ``workload_set`` and ``options.K`` each training case's
    ``options`` (values read as YAML, :func:`netsim.config.common.parse_override`).  The published
    numbers stay: the report then says what the published runs would have measured under the
    change, by netsim's model."""
    from netsim.config.common import parse_override
    from netsim.config.scenario import split_overrides

    for item in items:  # a malformed item is an error naming it whole, before the split
        parts, _ = parse_override(item)
        if parts[0] not in ("topology", "workload", "options") or len(parts) < 2:
            raise SpecError(
                "expected KEY=VALUE with KEY starting with topology., workload. or options.", source=f"--set {item}"
            )
    scen, topo_items, work_items = split_overrides(items)
    topo = {k.strip(): v for k, _, v in (t.partition("=") for t in topo_items)}  # as topology --set items
    work = {".".join(k): v for k, v in map(parse_override, work_items)}
    opts = {".".join(k[1:]): v for k, v in map(parse_override, scen)}
    if not (topo or work or opts):
        return list(sources)
    out = []
    for src in sources:
        cases = []
        for c in src.cases:
            update: dict[str, Any] = {}
            if work and isinstance(c, TrainingCase | LayerCase | MoELayerCase):
                update["workload_set"] = {**c.workload_set, **work}
            if opts and isinstance(c, TrainingCase | MoELayerCase):
                update["options"] = {**c.options, **opts}
            cases.append(c.model_copy(update=update) if update else c)
        # the source's own keys as the override's (without ``topology.``), so the override wins
        own = {k.removeprefix("topology."): v for k, v in src.system.set.items()}
        system = src.system.model_copy(update={"set": {**own, **topo}}) if topo else src.system
        out.append(src.model_copy(update={"system": system, "cases": cases}))
    return out
