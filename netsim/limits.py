"""Input limits and the size estimate of a request: what netsim refuses before it starts work.

Every reader checks its input against the limits here *before* building anything, so a
malformed or absurd input is one line naming the file, the field and the limit (exit 2) in
well under a second, instead of a traceback, a killed process or minutes of silent work.

* **Files**: at most :data:`MAX_SPEC_BYTES` for a YAML spec, :data:`MAX_TEXT_BYTES` for a
  CSV or log, :data:`MAX_TRACE_BYTES` for a JSON trace; nesting at most :data:`MAX_NESTING`
  levels; a spec at most :data:`MAX_SPEC_ITEMS` values after YAML aliases are expanded.
* **Numbers**: finite; integers within int64; quantities within :data:`QUANTITY_MAX` (far
  above any real device: they catch typos such as a missing unit prefix, not designs).
* **Counts**: at most :data:`MAX_NODES` servers and :data:`MAX_ACCELERATORS` accelerators a
  topology, :data:`MAX_FLOW_ROWS` rows a flows file, :data:`MAX_SWEEP_POINTS` sweep points,
  :data:`MAX_COLLECTIVE_SIZES` sizes a collective sweep.
* **Memory**: :func:`estimate_topology`, :func:`estimate_collective` and :func:`estimate_run`
  estimate devices, links, flows and memory of a request; :func:`check_fits` refuses one that
  cannot fit this machine's available memory (``--no-size-check`` skips it).

The counts are sized from the largest clusters built: xAI's Colossus had 100,000 H100 GPUs
in 2024 and was announced at 200,000 in 2025 (https://x.ai/colossus); the limits allow about
five times that.  The memory model is *approx.*: bytes per device, link, op and flow measured
on this code base with ``tracemalloc`` (the sizes below), rounded up.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from netsim.errors import LimitError

# --------------------------------------------------------------------------- files and structure

MAX_SPEC_BYTES = 16 * 2**20
"""Largest YAML spec (topology, workload, scenario, sweep, calibration) read: 16 MiB."""
MAX_TEXT_BYTES = 512 * 2**20
"""Largest CSV or text log (flows file, nccl-tests log) read: 512 MiB."""
MAX_TRACE_BYTES = 4 * 2**30
"""Largest JSON trace (Kineto, Chakra) or routing trace read: 4 GiB."""
MAX_NESTING = 64
"""Deepest nesting of mappings and lists in a YAML or JSON input (real specs use < 10)."""
MAX_SPEC_ITEMS = 1_000_000
"""Most values in one YAML spec after aliases are expanded (stops "billion laughs" files)."""

# --------------------------------------------------------------------------- numbers

INT64_MAX = 2**63 - 1
QUANTITY_MAX = {
    "bandwidth": 1e16,  # B/s: 80 Pb/s, 50x a 1.6 Tb/s port
    "bytes": 2.0**60,  # 1 EiB
    "duration": 1e9,  # s: 31 years
    "flops": 1e21,  # FLOP/s: a zettaFLOP/s, 500x an H100's dense FP8 peak
}
"""Largest value of each kind of quantity (far above any real device: catches unit typos)."""

# --------------------------------------------------------------------------- counts

MAX_NODES = 131_072
"""Most servers in one topology (about 5x the largest cluster built; see the module docstring)."""
MAX_ACCELERATORS = 1_048_576
"""Most accelerators in one topology."""
MAX_ACCELERATORS_PER_NODE = 1_024
"""Most accelerators in one server (the largest scale-up domains announced, NVL576, have 576)."""
MAX_PORTS_PER_NODE = 256
"""Most NICs or storage targets of one kind in one server."""
MAX_LAYERS = 4_096
"""Most transformer layers of a model (the deepest published LLMs have ~130)."""
MAX_EXPERTS = 65_536
"""Most routed experts per MoE layer (DeepSeek-V3 has 256)."""
MAX_WIDTH = 1_048_576
"""Largest hidden / FFN width of a model (vocabulary and sequence length: 16x that)."""
MAX_MICROBATCHES = 1_000_000
"""Most micro-batches per step (and sequences per micro-batch)."""
MAX_STEPS = 100_000
"""Most training steps one run simulates."""
MAX_FLOW_ROWS = 100_000
"""Most rows in a flows CSV under the size check (the exact model took > 2 min for 20,000
overlapping flows on 2 cores; more run with ``--no-size-check``)."""
MAX_SWEEP_POINTS = 10_000
"""Most points of one sweep grid (checked before the grid is expanded)."""
MAX_COLLECTIVE_SIZES = 256
"""Most message sizes in one ``netsim collective`` sweep (nccl-tests prints ~30)."""

# --------------------------------------------------------------------------- memory model (approx.)

BYTES_PER_DEVICE = 1_500
"""networkx node with its attributes, plus the engine's per-device arrays (approx.: a 1,024-node
DGX H100 topology, ~30k devices and ~100k links, takes ~50 MB of RSS)."""
BYTES_PER_LINK = 1_000
"""networkx edge with its attributes, plus the engine's per-link state (approx., as above)."""
BYTES_PER_FLOW = 1_500
"""One flow: its route, the engine's per-flow arrays and its result row (approx.: an all-to-all
over 256 -> 512 ranks, 65k -> 262k flows, grows RSS by 290 MB, 1.48 kB a flow)."""
BYTES_PER_OP = 1_000
"""One planned op of a training step and its result row (approx.)."""
BYTES_PER_COMPACT_TRANSFER = 200
"""One transfer of a stream or coflow collective in a training run (approx.): held in the plan's
arrays, not as an engine flow with its route.  Measured peaks on the 256-server DeepSeek-V3
benchmark (docs "Performance"): 60.3M transfers and 3.3M ops in 3.99 GiB (every rank simulated,
``alltoall`` dispatcher), about 15 B per transfer after 1 kB per op; 13.9M transfers and 83k
ops in 2.26 GiB (lockstep, ``deepep`` with its per-node de-duplication), about 170 B."""


def check_file_size(path: str | os.PathLike[str], limit: int, what: str = "file") -> None:
    """Refuse a file larger than ``limit`` bytes (before reading it)."""
    try:
        size = Path(path).stat().st_size
    except OSError:
        return  # the reader reports a missing or unreadable file itself
    if size > limit:
        raise LimitError(f"{what} is {_fmt_bytes(size)}; netsim reads at most {_fmt_bytes(limit)}", source=str(path))


def check_structure(
    obj: Any, source: str | None, *, max_depth: int = MAX_NESTING, max_items: int = MAX_SPEC_ITEMS
) -> None:
    """Refuse data nested deeper than ``max_depth`` or with more than ``max_items`` values.

    Iterative (no recursion), and it stops at the first limit, so a YAML file whose aliases
    expand to billions of values is refused after ``max_items`` steps.
    """
    stack: list[tuple[Any, int, str]] = [(obj, 0, "")]
    items = 0
    while stack:
        node, depth, path = stack.pop()
        items += 1
        if items > max_items:
            raise LimitError(f"more than {max_items:,} values (after YAML aliases are expanded)", source=source)
        if isinstance(node, dict | list | tuple):
            if depth >= max_depth:
                raise LimitError(f"nested deeper than {max_depth} levels", source=source, field=path or None)
            pairs: Iterable[tuple[Any, Any]] = node.items() if isinstance(node, dict) else enumerate(node)
            stack.extend((c, depth + 1, f"{path}.{k}" if path else str(k)) for k, c in pairs)
        elif isinstance(node, int) and not isinstance(node, bool) and abs(node) > INT64_MAX:
            raise LimitError(f"integer {_short_int(node)} is outside int64", source=source, field=path or None)
        elif isinstance(node, float) and not math.isfinite(node):
            raise LimitError(
                f"{node} is not a finite number (write a value in range)", source=source, field=path or None
            )


def check_count(value: int, limit: int, field: str | None, source: str | None = None, what: str = "") -> None:
    """Refuse a count above ``limit`` (one line naming the field and the limit)."""
    if value > limit:
        raise LimitError(
            f"{value:,} {what}: more than netsim accepts (at most {limit:,})".replace("  ", " "),
            field=field,
            source=source,
        )


def check_quantity(value: float, kind: str, field: str | None = None, source: str | None = None) -> float:
    """Refuse a quantity that is not finite or above :data:`QUANTITY_MAX` for its kind."""
    if not math.isfinite(value):
        raise LimitError(f"must be a finite number (got {value})", field=field, source=source)
    top = QUANTITY_MAX.get(kind)
    if top is not None and abs(value) > top:
        raise LimitError(
            f"{value:.4g} is beyond any real {kind} (at most {top:.4g} in SI units)", field=field, source=source
        )
    return value


def _short_int(n: int) -> str:
    text = str(n)
    return text if len(text) <= 24 else f"{text[:10]}...({len(text)} digits)"


# --------------------------------------------------------------------------- size estimate


@dataclass(frozen=True)
class SizeEstimate:
    """What a request will build: counts and the memory they take (approx.)."""

    what: str
    devices: int = 0
    links: int = 0
    flows: int = 0
    ops: int = 0
    #: memory of one flow: an engine flow with its route (exact), or a compact transfer of a
    #: stream or coflow collective
    bytes_per_flow: int = BYTES_PER_FLOW

    @property
    def memory_bytes(self) -> int:
        return (
            self.devices * BYTES_PER_DEVICE
            + self.links * BYTES_PER_LINK
            + self.flows * self.bytes_per_flow
            + self.ops * BYTES_PER_OP
        )

    def describe(self) -> str:
        parts = [f"{self.devices:,} devices", f"{self.links:,} links"]
        if self.flows:
            parts.append(f"{self.flows:,} flows")
        if self.ops:
            parts.append(f"{self.ops:,} ops")
        return ", ".join(parts)


def estimate_topology(nodes: int, devices_per_node: int, what: str = "topology") -> SizeEstimate:
    """Devices and links of ``nodes`` servers of ``devices_per_node`` devices each (switches included)."""
    devices = nodes * devices_per_node
    switches = devices // 16 + 1  # leaf, spine and node switches: at most one per 16 ports (approx.)
    # every device has ~2 cables (an accelerator to its node switch and its NIC, a NIC to a leaf),
    # each two directed links; switches add their uplinks
    return SizeEstimate(what, devices=devices + switches, links=4 * devices + 4 * switches)


def estimate_collective(topo: SizeEstimate, op: str, ranks: int, sizes: int = 1, channels: int = 1) -> SizeEstimate:
    """Flows of one collective over ``ranks`` ranks, for ``sizes`` message sizes (each on a fresh network)."""
    if op in ("all_to_all", "alltoall"):
        per = ranks * max(ranks - 1, 1)
    elif op == "sendrecv":
        per = 1
    else:  # ring-like: 2 (n - 1) steps of n flows each, per channel
        per = 2 * max(ranks - 1, 1) * ranks * max(channels, 1)
    # each size runs on its own network; the rows are kept, the flows of one size at a time
    return SizeEstimate(f"{op} over {ranks:,} ranks", devices=topo.devices, links=topo.links, flows=per)


def estimate_run(
    topo: SizeEstimate,
    *,
    ranks: int,
    layers: int,
    microbatches: int,
    steps: int,
    ep: int,
    moe: bool,
    built_ranks: int | None = None,
    exact: bool = True,
) -> SizeEstimate:
    """Ops and flows of a training run (forward and backward of every layer and micro-batch):
    ``layers`` a rank holds (its pipeline stage's), ``microbatches`` per data-parallel replica,
    ``built_ranks`` the ranks whose ops are built (a lockstep plan builds one rank per lockstep
    unit and merges the unit's all-to-alls; default: every rank); ``exact``: every transfer an
    engine flow (the exact collective model), else compact (:data:`BYTES_PER_COMPACT_TRANSFER`)."""
    per_rank_step = layers * microbatches * 6  # compute fwd/bwd and communication per layer (approx.)
    built = ranks if built_ranks is None else built_ranks
    ops = built * steps * per_rank_step
    a2a = built * max(ep - 1, 0) * layers * microbatches * steps * 4 if moe else 0  # dispatch + combine, fwd + bwd
    per_flow = BYTES_PER_FLOW if exact else BYTES_PER_COMPACT_TRANSFER
    return SizeEstimate("this run", topo.devices, topo.links, flows=a2a + ops, ops=ops, bytes_per_flow=per_flow)


def available_memory_bytes() -> int:
    """Memory this process can still use: MemAvailable of /proc/meminfo, else the physical memory."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 2**40


def check_fits(est: SizeEstimate, *, enabled: bool = True, field: str | None = None, source: str | None = None) -> None:
    """Refuse ``est`` when it needs more memory than this machine has available (or too many devices)."""
    if not enabled:
        return
    if est.devices > MAX_ACCELERATORS * 8:
        raise LimitError(
            f"{est.what} would have {est.devices:,} devices; netsim builds at most {MAX_ACCELERATORS * 8:,}",
            field=field,
            source=source,
        )
    need, have = est.memory_bytes, available_memory_bytes()
    if need > have:
        raise LimitError(
            f"{est.what} needs about {_fmt_bytes(need)} of memory ({est.describe()}); this machine has "
            f"{_fmt_bytes(have)} available (pass --no-size-check to try anyway)",
            field=field,
            source=source,
        )


#: the environment variable ``--no-size-check`` sets (so sweep workers inherit it)
NO_SIZE_CHECK_ENV = "NETSIM_NO_SIZE_CHECK"


def size_check_enabled() -> bool:
    """Whether the memory check runs: not with ``--no-size-check`` or ``NETSIM_NO_SIZE_CHECK=1``."""
    return os.environ.get(NO_SIZE_CHECK_ENV, "") not in ("1", "true", "yes")


def _fmt_bytes(n: float) -> str:
    for unit, scale in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{int(n)} B"
