"""Kernel profiler: time the catalogue kernels with torch on this machine's CPU or GPU.

``netsim profile --device cpu|cuda --out FILE`` runs :func:`profile_kernels` over a grid of
shapes (:func:`default_grid`) and writes a kernel table (:mod:`netsim.calibration.kernels`).

Method, per (kernel, shape, dtype):

1. build the inputs once (seeded), the forward closure and, for ``bwd``, the backward closure
   ``torch.autograd.grad(out, inputs, grad_out, retain_graph=True)`` on a retained graph, so
   only the backward kernels are timed (the kernels in torch: :mod:`netsim.calibration.torch_kernels`);
2. warm up (``warmup`` calls, synchronised), time one call, and choose ``inner`` calls per
   sample so a sample lasts at least ``sample_target_s`` (keeps timer overhead of microsecond
   kernels negligible);
3. take ``repeats`` samples, as many as fit in ``budget_s`` within
   [``min_repeats``, ``max_repeats``]; every sample is synchronised: CUDA events around the
   sample on ``cuda`` (then ``synchronize``), ``time.perf_counter`` on ``cpu``;
4. record the median per call (``time_s``) and the 10th / 90th percentiles.

Sustained clocks (``soak_s``, ``netsim profile --soak-s``): an accelerator boosts its clocks
while it has power and thermal headroom and settles lower under a sustained load; a training
step is such a load, a short benchmark is not.  With ``soak_s > 0`` the profiler first runs
back-to-back large GEMMs (:mod:`netsim.calibration.soak`) for that many
seconds, so the timings that follow are taken at the clocks the device sustains, and records in
the metadata (``soak``) the soak's own throughput in its first and last second and, on NVIDIA
GPUs, the SM clock, power draw, temperature and active throttle reasons (``nvidia-smi``) before
the soak, after it and after the measurements.

The table's metadata records the device, its name, the CPU model, torch threads, torch / CUDA /
driver versions, the date, the options and the command, and ``other_cores``: the average number
of cores other processes kept busy during the run.  A CPU run is marked ``disturbed`` (and
``netsim profile`` warns) when that exceeds the cores the run left free (cores - threads) by
more than 0.1: preempted OpenMP threads stall every kernel they take part in.

torch is optional: it is imported only when profiling, and a missing torch raises a
:class:`~netsim.errors.NetsimError` telling how to install it.
"""

from __future__ import annotations

import datetime as _dt
import math
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from types import ModuleType
from typing import Any

import numpy as np
import pandas as pd

from netsim import __version__
from netsim.calibration.catalogue import CROSS_ENTROPY_KERNELS
from netsim.calibration.kernels import KERNELS, SHAPE_COLUMNS, KernelTable, canonical_dtype, get_kernel
from netsim.calibration.soak import gpu_state, nvidia_smi_query, soak
from netsim.calibration.torch_kernels import kernel_closures
from netsim.errors import NetsimError, SpecError

#: ``progress(done, total, label)`` is called after every measured grid point.
Progress = Callable[[int, int, str], None]

_TORCH_DTYPE = {"float32": "float32", "bfloat16": "bfloat16", "float16": "float16", "float8": "float8_e4m3fn"}


def require_torch() -> ModuleType:
    """Import torch or raise a NetsimError that says how to install it."""
    try:
        import torch
    except ImportError:
        raise NetsimError(
            "the kernel profiler needs torch, which is not installed; install it with pip install 'moe-netsim[torch]'"
        ) from None
    return torch


# --------------------------------------------------------------------------- options and grids


@dataclass(frozen=True)
class GridPoint:
    """One shape of one kernel to measure (all of the kernel's passes are measured)."""

    kernel: str
    shape: dict[str, int]

    def label(self) -> str:
        return self.kernel + "(" + ",".join(f"{k}={v}" for k, v in self.shape.items()) + ")"


#: ``netsim profile --device cpu`` without ``--full``: each series stops before a shape whose one
#: call (all passes) takes over 20 ms, and each shape and pass is timed for 0.05 s (at least 3
#: samples), so the default run takes under a minute on 2 idle cores (about 85 of the grid's 155
#: shapes; the full grid: 7-8 minutes, most of it in the largest shapes of the memory-bound
#: kernels); larger shapes are then predicted by extrapolation along their series
CPU_MAX_CALL_S = 0.02


@dataclass(frozen=True)
class ProfileOptions:
    """What to measure and how long to spend.

    Attributes:
        device: ``cpu`` or ``cuda``.
        dtypes: dtypes to measure (default ``float32`` on cpu, ``bfloat16`` on cuda).
        quick: use the small grid and a short budget (tests, smoke runs).
        full: on cpu, measure every shape of the grid with the full budget (minutes: the shipped
            CPU table's recipe); otherwise the CPU grid is cut by ``max_call_s``.
        kernels: restrict to these kernels (default: all of the catalogue).
        budget_s: time budget per (shape, pass) measurement in seconds.
        min_repeats / max_repeats: bounds on the number of timed samples.
        warmup: untimed calls before timing.
        sample_target_s: minimum duration of one sample (calls are batched to reach it).
        threads: torch intra-op threads (default: torch's choice).
        soak_s: seconds of back-to-back GEMMs before measuring (0: none; module docstring).
        max_call_s: stop a series (a kernel's shapes that differ only in the sweep parameter)
            before a shape whose one call of every pass would take longer than this: measured, or
            extrapolated from the series' last measured shape in proportion to the cost axis
            (FLOPs or bytes; an overestimate while small shapes are overhead-bound).  Default
            :data:`CPU_MAX_CALL_S` on cpu without ``full``, no limit otherwise.
        command: the command line, recorded in the metadata.
    """

    device: str = "cpu"
    dtypes: tuple[str, ...] | None = None
    quick: bool = False
    kernels: tuple[str, ...] | None = None
    budget_s: float | None = None
    min_repeats: int | None = None
    max_repeats: int = 200
    warmup: int = 2
    sample_target_s: float = 2e-3
    threads: int | None = None
    command: str = ""
    full: bool = False
    max_call_s: float | None = None
    soak_s: float = 0.0

    def resolved_dtypes(self) -> tuple[str, ...]:
        if self.dtypes:
            return tuple(dict.fromkeys(canonical_dtype(d, field="--dtype") for d in self.dtypes))
        return ("bfloat16",) if self.device == "cuda" else ("float32",)

    def resolved_budget_s(self) -> float:
        if self.budget_s is not None:
            return self.budget_s
        if self.quick:
            return 0.02
        if self.device == "cpu":
            return 0.2 if self.full else 0.05
        return 0.1

    def _cpu_default(self) -> bool:
        """The default CPU run: the grid cut at ``max_call_s``, a short budget, 3 samples."""
        return self.device == "cpu" and not (self.full or self.quick)

    def resolved_max_call_s(self) -> float | None:
        if self.max_call_s is not None:
            return self.max_call_s
        return CPU_MAX_CALL_S if self._cpu_default() else None

    def resolved_min_repeats(self) -> int:
        if self.min_repeats is not None:
            return self.min_repeats
        return 3 if self.quick or self._cpu_default() else 5


def _grid(spec: dict[str, Sequence[int]], sweep: str, values: Sequence[int]) -> list[dict[str, int]]:
    """Cartesian product of the secondary values in ``spec`` with the sweep ``values``."""
    combos: list[dict[str, int]] = [{}]
    for key, vals in spec.items():
        combos = [{**c, key: int(v)} for c in combos for v in vals]
    return [{**c, sweep: int(v)} for c in combos for v in values]


def _pairs(names: tuple[str, str], pairs: Sequence[tuple[int, int]], sweep: str, values: Sequence[int]):
    return [{names[0]: a, names[1]: b, sweep: int(v)} for a, b in pairs for v in values]


#: the memory-bound kernels of one ``[tokens, hidden]`` tensor every grid sweeps alike
_ELEMENTWISE = (
    "layernorm",
    "rmsnorm",
    "rmsnorm_eager",
    "rope_eager",
    "swiglu",
    "swiglu_eager",
    "prob_weight",
    "gelu",
    "gelu_eager",
    "residual",
)


def default_grid(device: str = "cpu", quick: bool = False) -> list[GridPoint]:
    """The shapes ``netsim profile`` measures.

    The CPU grid finishes in a few minutes on 2 cores; the CUDA grid uses transformer-sized
    shapes; the quick grid (any device) takes seconds and exists for tests and smoke runs.
    """
    g: dict[str, list[dict[str, int]]] = {}
    if quick:
        g["gemm"] = _pairs(("n", "k"), [(256, 256)], "m", [16, 128])
        g["grouped_gemm"] = _grid({"experts": [4], "n": [256], "k": [128]}, "tokens", [256, 1024])
        g["attention"] = _grid({"batch": [1], "heads": [2], "head_dim": [32]}, "seq", [64, 128])
        router = _grid({"hidden": [256], "experts": [8], "topk": [2]}, "tokens", [128, 512])
        g["router_linear"] = router
        g["router_grap"] = router
        g["permute"] = g["unpermute"] = _grid({"hidden": [256], "topk": [2]}, "tokens", [128, 512])
        for k in (*_ELEMENTWISE, "softmax", "dropout"):
            g[k] = _grid({"hidden": [256]}, "tokens", [128, 512])
        for k in CROSS_ENTROPY_KERNELS:
            g[k] = _grid({"tokens": [128]}, "vocab", [512, 2048])
        g["adamw"] = _grid({}, "params", [10_000, 100_000])
    elif device == "cuda":
        g["gemm"] = _pairs(
            ("n", "k"),
            [(4096, 4096), (8192, 8192), (14336, 4096), (4096, 14336), (2048, 7168), (7168, 2048)],
            "m",
            [256, 1024, 4096, 16384],
        )
        g["grouped_gemm"] = _grid(
            {"experts": [8, 32], "n": [2048, 4096], "k": [4096]}, "tokens", [1024, 4096, 16384, 65536]
        )
        g["attention"] = _grid({"batch": [1], "heads": [32], "head_dim": [64, 128]}, "seq", [512, 2048, 8192])
        router = _grid({"hidden": [4096, 7168], "experts": [16, 256], "topk": [1, 8]}, "tokens", [1024, 8192, 65536])
        g["router_linear"] = router
        g["router_grap"] = _grid(
            {"hidden": [4096, 7168], "experts": [16, 256], "topk": [1]}, "tokens", [1024, 8192, 65536]
        )
        g["permute"] = g["unpermute"] = _grid({"hidden": [4096, 7168], "topk": [1, 8]}, "tokens", [1024, 8192, 65536])
        for k in (*_ELEMENTWISE, "dropout"):
            g[k] = _grid({"hidden": [4096, 14336]}, "tokens", [1024, 8192, 65536])
        # unfused attention scores: rows of one sequence length (tokens = batch x heads x seq)
        g["softmax"] = _grid({"hidden": [2048, 4096]}, "tokens", [16384, 131072, 1048576])
        for k in CROSS_ENTROPY_KERNELS:  # vocabulary columns per rank: 32k-152k vocabularies at TP 1 to 8
            g[k] = _grid({"tokens": [4096, 8192]}, "vocab", [4096, 16384, 65536, 131072])
        g["adamw"] = _grid({}, "params", [1_000_000, 10_000_000, 100_000_000, 1_000_000_000])
    else:
        g["gemm"] = _pairs(
            ("n", "k"),
            [(512, 512), (1024, 1024), (2048, 2048), (4096, 1024), (1024, 4096)],
            "m",
            [16, 64, 256, 1024, 2048],
        )
        g["grouped_gemm"] = _grid({"experts": [4, 8, 16], "n": [1024, 2048], "k": [1024]}, "tokens", [512, 2048, 8192])
        g["attention"] = _grid({"batch": [1], "heads": [8], "head_dim": [64, 128]}, "seq", [128, 256, 512, 1024, 2048])
        g["router_linear"] = _grid(
            {"hidden": [1024, 4096], "experts": [8, 64], "topk": [2]}, "tokens", [256, 1024, 4096]
        )
        g["router_grap"] = _grid({"hidden": [1024, 4096], "experts": [16], "topk": [1]}, "tokens", [256, 1024, 4096])
        g["permute"] = g["unpermute"] = _grid({"hidden": [1024, 4096], "topk": [1, 2]}, "tokens", [256, 1024, 4096])
        for k in (*_ELEMENTWISE, "softmax", "dropout"):
            g[k] = _grid({"hidden": [1024, 4096]}, "tokens", [256, 1024, 4096, 16384])
        for k in CROSS_ENTROPY_KERNELS:
            g[k] = _grid({"tokens": [512, 2048]}, "vocab", [1024, 4096, 16384])
        g["adamw"] = _grid({}, "params", [100_000, 1_000_000, 10_000_000, 50_000_000])
    return [GridPoint(k, shape) for k in KERNELS for shape in g.get(k, [])]


# --------------------------------------------------------------------------- environment


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return " ".join(line.split(":", 1)[1].split())
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown cpu"


def _nvidia_driver() -> str | None:
    vals = nvidia_smi_query(("driver_version",))
    return vals[0] if vals else None


def cpu_times() -> tuple[float, float] | None:
    """(CPU seconds used by the whole machine, by this process) so far; None if unknown."""
    import resource

    try:
        with open("/proc/stat") as fh:
            fields = fh.readline().split()[1:]
        # user nice system idle iowait irq softirq steal ...: busy = all but idle and iowait
        vals = [int(v) for v in fields]
        busy = sum(vals) - vals[3] - (vals[4] if len(vals) > 4 else 0)
        machine_s = busy / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return machine_s, ru.ru_utime + ru.ru_stime


def environment(torch: ModuleType, device: str) -> dict[str, Any]:
    """Device and software facts recorded in a kernel table's metadata."""
    cpu = _cpu_model()
    env: dict[str, Any] = {
        "device": device,
        "device_name": cpu,
        "cpu_model": cpu,
        "cpu_count": os.cpu_count(),
        "threads": int(torch.get_num_threads()),
        "torch": str(torch.__version__),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "netsim": __version__,
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "cuda": None,
        "driver": None,
    }
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        env.update(
            device_name=torch.cuda.get_device_name(0),
            cuda=torch.version.cuda,
            driver=_nvidia_driver(),
            gpu_memory_bytes=int(props.total_memory),
            gpu_count=int(torch.cuda.device_count()),
        )
    return env


# --------------------------------------------------------------------------- timing


@dataclass
class Timing:
    """Per-call seconds of one (shape, pass): median, p10, p90, samples and calls per sample."""

    time_s: float
    time_p10_s: float
    time_p90_s: float
    repeats: int
    inner: int
    samples_s: list[float] = field(default_factory=list, repr=False)


class _Timer:
    def __init__(self, torch: ModuleType, device: str) -> None:
        self.torch = torch
        self.cuda = device == "cuda"

    def sync(self) -> None:
        if self.cuda:
            self.torch.cuda.synchronize()

    def sample(self, fn: Callable[[], Any], inner: int) -> float:
        """Seconds per call, averaged over ``inner`` back-to-back calls."""
        if self.cuda:
            start = self.torch.cuda.Event(enable_timing=True)
            end = self.torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(inner):
                fn()
            end.record()
            end.synchronize()
            return float(start.elapsed_time(end)) * 1e-3 / inner
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        return (time.perf_counter() - t0) / inner


def measure(
    timer: _Timer,
    fn: Callable[[], Any],
    *,
    budget_s: float,
    min_repeats: int,
    max_repeats: int,
    warmup: int,
    sample_target_s: float,
) -> Timing:
    """Warm up, pick calls per sample and repeats for the budget, time; see module docstring."""
    t0 = time.perf_counter()
    calls = 0
    while calls < max(warmup, 1) or (time.perf_counter() - t0 < 0.1 * budget_s and calls < 1000):
        fn()
        timer.sync()
        calls += 1
    # the warm-up's mean per call (each synchronised) bounds one call's time: a single probe that
    # the OS preempted cannot then make a 20 us kernel look like a 3 ms one
    warm = (time.perf_counter() - t0) / calls
    single = min(timer.sample(fn, 1), warm)
    if single < 0.05 * budget_s:  # cheap: take the best of three to ignore a cold outlier
        single = min(single, timer.sample(fn, 1), timer.sample(fn, 1))
    single = max(single, 1e-9)
    inner = max(1, min(10_000, math.ceil(sample_target_s / single)))
    repeats = int(min(max(budget_s // (single * inner), min_repeats), max_repeats))
    samples = [timer.sample(fn, inner) for _ in range(repeats)]
    p10, p90 = (float(v) for v in np.percentile(samples, [10, 90]))
    return Timing(float(statistics.median(samples)), p10, p90, repeats, inner, samples)


# --------------------------------------------------------------------------- driver


def _check_device(torch: ModuleType, device: str) -> None:
    if device not in ("cpu", "cuda"):
        raise SpecError(f"unknown device {device!r}; allowed: cpu, cuda", field="--device")
    if device == "cuda" and not torch.cuda.is_available():
        raise NetsimError("--device cuda: torch sees no CUDA device on this machine (use --device cpu)")


def _point_cost(pt: GridPoint, dtype: str) -> float:
    """A shape's value on its kernel's cost axis, summed over the kernel's passes."""
    spec = get_kernel(pt.kernel)
    shape = spec.check_shape(pt.shape)
    return sum(spec.cost_value(shape, p, dtype) for p in spec.passes)


class _SeriesCap:
    """The ``max_call_s`` rule: which shapes of a series are not measured (``skip``)."""

    def __init__(self, limit_s: float | None) -> None:
        self.limit_s = limit_s
        self.last: dict[tuple[Any, ...], tuple[float, float]] = {}  # series -> (cost, seconds)
        self.stopped: set[tuple[Any, ...]] = set()
        self.skipped = 0

    @staticmethod
    def _series(pt: GridPoint, dtype: str) -> tuple[Any, ...]:
        sweep = get_kernel(pt.kernel).sweep
        return (pt.kernel, dtype, tuple(sorted((k, v) for k, v in pt.shape.items() if k != sweep)))

    def skip(self, pt: GridPoint, dtype: str) -> bool:
        if self.limit_s is None:
            return False
        key = self._series(pt, dtype)
        last = self.last.get(key)
        extrapolated = last[1] * _point_cost(pt, dtype) / last[0] if last is not None and last[0] > 0 else 0.0
        if extrapolated > self.limit_s:
            self.stopped.add(key)
        self.skipped += key in self.stopped
        return key in self.stopped

    def record(self, pt: GridPoint, dtype: str, seconds: float) -> None:
        if self.limit_s is None:
            return
        key = self._series(pt, dtype)
        self.last[key] = (_point_cost(pt, dtype), seconds)
        if seconds > self.limit_s:
            self.stopped.add(key)


def _rows(pt: GridPoint, dname: str, shape: dict[str, float], timings: dict[str, Timing]) -> list[dict[str, Any]]:
    """The table rows of one measured shape: one per pass."""
    spec = get_kernel(pt.kernel)
    rows: list[dict[str, Any]] = []
    for pass_, t in timings.items():
        row: dict[str, Any] = {"kernel": pt.kernel, "dtype": dname, "pass": pass_}
        row.update({c: float(shape[c]) if c in shape else np.nan for c in SHAPE_COLUMNS})
        row.update(
            time_s=t.time_s,
            time_p10_s=t.time_p10_s,
            time_p90_s=t.time_p90_s,
            flops=spec.flops(shape, pass_),
            bytes=spec.nbytes(shape, pass_, dname),
            repeats=t.repeats,
            inner=t.inner,
        )
        rows.append(row)
    return rows


def measure_points(
    points: Iterable[GridPoint],
    options: ProfileOptions,
    *,
    progress: Progress | None = None,
    torch: ModuleType | None = None,
    skipped: list[str] | None = None,
    implementations: dict[str, str] | None = None,
) -> list[dict[str, Any]]:
    """Measure every pass of every point in every dtype; one row dict per (point, dtype, pass).

    A (kernel, dtype) torch cannot run on the device (e.g. float8 matmul on cpu) is skipped and
    described in ``skipped`` (when given) instead of failing the run.  ``implementations``
    collects ``"kernel/dtype" -> how it ran`` where there is a choice.
    """
    torch = torch or require_torch()
    _check_device(torch, options.device)
    if options.threads is not None:
        torch.set_num_threads(int(options.threads))
    timer = _Timer(torch, options.device)
    pts = list(points)
    dtypes = options.resolved_dtypes()
    jobs = [(pt, d) for pt in pts for d in dtypes if KERNELS[pt.kernel].fixed_dtype in (None, d)]
    # kernels with a fixed dtype (adamw) are measured once, in their own dtype
    seen_fixed: set[tuple[str, tuple[tuple[str, int], ...]]] = set()
    for pt in pts:
        fixed = KERNELS[pt.kernel].fixed_dtype
        key = (pt.kernel, tuple(sorted(pt.shape.items())))
        if fixed is not None and fixed not in dtypes and key not in seen_fixed:
            seen_fixed.add(key)
            jobs.append((pt, fixed))
    rows: list[dict[str, Any]] = []
    cap = _SeriesCap(options.resolved_max_call_s())
    for i, (pt, dname) in enumerate(jobs):
        if cap.skip(pt, dname):
            if progress is not None:
                progress(i + 1, len(jobs), f"{pt.label()} {dname} (over the per-call limit)")
            continue
        spec = get_kernel(pt.kernel)
        shape = spec.check_shape(pt.shape)
        tdtype = getattr(torch, _TORCH_DTYPE[dname], None)
        if tdtype is None:
            raise SpecError(f"torch {torch.__version__} has no dtype {dname}", field="--dtype")
        try:
            closures, impl = kernel_closures(torch, pt.kernel, pt.shape, tdtype, options.device)
            if impl is not None and implementations is not None:
                implementations[f"{pt.kernel}/{dname}"] = impl
            timings = {
                pass_: measure(
                    timer,
                    closures[pass_],
                    budget_s=options.resolved_budget_s(),
                    min_repeats=options.resolved_min_repeats(),
                    max_repeats=options.max_repeats,
                    warmup=options.warmup,
                    sample_target_s=options.sample_target_s,
                )
                for pass_ in spec.passes
            }
        except (RuntimeError, NotImplementedError) as exc:
            if skipped is None:
                raise NetsimError(
                    f"{pt.label()} in {dname} failed on {options.device}: {' '.join(str(exc).split())[:200]}"
                ) from None
            skipped.append(f"{pt.label()} {dname}: {' '.join(str(exc).split())[:200]}")
            if progress is not None:
                progress(i + 1, len(jobs), f"{pt.label()} {dname} (skipped)")
            continue
        cap.record(pt, dname, sum(t.time_s for t in timings.values()))
        rows += _rows(pt, dname, shape, timings)
        del closures
        if progress is not None:
            progress(i + 1, len(jobs), f"{pt.label()} {dname}")
    if skipped is not None and cap.skipped and cap.limit_s is not None:
        skipped.append(
            f"{cap.skipped} shapes over {cap.limit_s * 1e3:g} ms a call (all passes; measured or "
            "extrapolated along their series): netsim profile --full measures them"
        )
    return rows


def profile_kernels(
    options: ProfileOptions, *, points: Sequence[GridPoint] | None = None, progress: Progress | None = None
) -> KernelTable:
    """Measure the grid (``points`` or :func:`default_grid`) and return a kernel table."""
    torch = require_torch()
    _check_device(torch, options.device)
    if points is None:
        points = default_grid(options.device, options.quick)
    if options.kernels:
        wanted = {get_kernel(k).name for k in options.kernels}
        points = [p for p in points if p.kernel in wanted]
    if not points:
        raise SpecError("nothing to measure: the grid is empty for these --kernels")
    soaked = soak(torch, options.device, options.soak_s, options.resolved_dtypes()[0]) if options.soak_s > 0 else None
    t0 = time.perf_counter()
    cpu0 = cpu_times()
    skipped: list[str] = []
    impls: dict[str, str] = {}
    rows = measure_points(points, options, progress=progress, torch=torch, skipped=skipped, implementations=impls)
    if not rows:
        raise NetsimError("no kernel could be measured: " + "; ".join(skipped[:3]))
    meta = environment(torch, options.device)
    opts = asdict(options)
    opts.update(
        dtypes=list(options.resolved_dtypes()),
        budget_s=options.resolved_budget_s(),
        min_repeats=options.resolved_min_repeats(),
        max_call_s=options.resolved_max_call_s(),
    )
    wall_s = time.perf_counter() - t0
    meta.update(command=options.command, options=opts, skipped=skipped, implementations=impls, wall_s=round(wall_s, 3))
    if soaked is not None:
        soaked["gpu_after_measuring"] = gpu_state() if options.device == "cuda" else None
        meta["soak"] = soaked
    cpu1 = cpu_times()
    if cpu0 is not None and cpu1 is not None:
        # CPU time other processes used while we measured: > 0.1 cores means the timings of a
        # CPU table are disturbed (threads of the timed kernels were descheduled)
        other = max(0.0, (cpu1[0] - cpu0[0]) - (cpu1[1] - cpu0[1]))
        other_cores = other / max(wall_s, 1e-9)
        spare = max((os.cpu_count() or 1) - int(meta["threads"]), 0)
        meta.update(
            other_cpu_s=round(other, 2),
            other_cores=round(other_cores, 3),
            disturbed=bool(options.device == "cpu" and other_cores > spare + 0.1),
        )
    return KernelTable(pd.DataFrame(rows), meta, source="<profile>")
