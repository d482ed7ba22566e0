# Size: over the ~600-line guideline on purpose.  This module is the topology file's schema: pydantic
# classes that are field declarations with their units and validators, one per node kind and
# fabric kind, and the unions (node, back-end, front-end) that select among them; splitting it
# would part each union from its members and the file format from the one place that defines it.
"""The user-facing topology spec: what a topology YAML file may say, validated with pydantic.

A topology file comes in one of two forms.

**Templated** (all presets): a server template repeated ``num_nodes`` times, plus fabrics::

    name: dgx-h100
    num_nodes: 4                      # servers; `--nodes N` and `--set num_nodes=N` change it
    accelerator: {name, role, peak_flops: {bf16: 989TFLOPS}, memory_bandwidth, memory,
                  compute: {profile: h100-sxm}}   # optional: measured kernel-table profile
    node:                             # one server; `kind` selects the intra-node fabric
      kind: nvswitch | hccs | pcie
      ...                             # see NVSwitchNodeSpec, HCCSNodeSpec, PCIeNodeSpec
      nic: {bandwidth, latency, attach: pcie | integrated, ...}   # one rail NIC per accelerator
      host_nics: {count, bandwidth, latency, ...}                 # front-end ports of the host
    backend:                          # the compute (east-west) fabric over the rail NICs
      fabric: single-switch | leaf-spine | fat-tree | rail-optimized | multi-plane
      link_class: ib | roce
      ...
      storage: {count, bandwidth, attach: leaf | spine | core}    # optional back-end storage
    frontend:                         # optional Ethernet (north-south) network
      fabric: single-switch | leaf-spine
      storage: {count, bandwidth, attach: leaf | spine}

**Explicit**: the graph itself, for shapes the templates cannot express::

    name: two-boxes
    accelerator: {...}
    nodes:
      - {name: n0.g0, kind: accelerator, node: 0, index: 0}
      - {name: sw, kind: switch, role: leaf, network: backend, tier: 1, latency: 0.3us}
    links:
      - {a: n0.g0, b: sw, bandwidth: 400Gbps, latency: 0.1us, class: ib}   # optional: cost

Routes take the paths of least total link ``cost`` (default: 100 Gb/s over the bandwidth); only
switches and NICs forward.  The ``accelerator:`` block may be left out of a graph that is only
used with ``netsim flows``.

Quantities accept unit strings (see :mod:`netsim.units`) and are stored as SI floats, so the
validated spec (``model_dump()``) is the resolved spec recorded in ``G.graph["spec"]``.
Bandwidths are per direction.  Cross-field rules (group sizes that must divide, keys that
apply only to one fabric) are checked by :func:`check_topology_spec`, which names the field.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field

from netsim.config.common import (
    Bandwidth,
    Bytes,
    Duration,
    Flops,
    Ratio,
    SpecModel,
    apply_overrides,
    load_mapping,
    override_for,
    validate_model,
)
from netsim.errors import SpecError
from netsim.limits import MAX_ACCELERATORS_PER_NODE, MAX_NODES, MAX_PORTS_PER_NODE

__all__ = [
    "AcceleratorSpec",
    "BackendSpec",
    "CollectivesSpec",
    "ComputeSpec",
    "ExplicitLinkSpec",
    "ExplicitNodeSpec",
    "ExplicitTopologySpec",
    "FrontendSpec",
    "HostNicSpec",
    "NicSpec",
    "NodeSpec",
    "TemplatedTopologySpec",
    "TopologySpec",
    "check_topology_spec",
    "load_topology_spec",
    "parse_topology_spec",
]

PositiveInt = Annotated[int, Field(ge=1)]


class ComputeSpec(SpecModel):
    """Where an accelerator's compute times come from (``accelerator.compute``).

    ``profile`` names a compute profile (``netsim.calibration.profiles``: ``h100-sxm``,
    ``a100-sxm``, ``roofline``): a shipped measured kernel table plus the cited attention and
    FP8 assumptions of that GPU; checked when a run builds its compute model.  Without a
    ``compute`` section a run uses the datasheet roofline.
    """

    profile: str = Field(default="roofline", min_length=1)
    kernels: str | None = None
    """Another kernel table (a path, or the file name of a shipped one) instead of the profile's."""
    fp8_gemm_speedup: float | None = Field(default=None, gt=0)
    """FP8 GEMM compute-term speed-up over BF16 (default: the profile's)."""
    attention: str | None = Field(default=None, min_length=1)
    """The attention implementation whose measured throughput times the attention core (default:
    the profile's first; ``h100-sxm``: ``flash-attention-3``, ``cudnn`` or ``flash-attention-2``;
    ``a100-sxm``: ``flash-attention-2``): netsim.calibration.profiles, "Attention curves"."""
    clock_mhz: float | None = Field(default=None, gt=0)
    """The SM clock of a training step's kernels (default: the profile's rated clock, 1,830 MHz on
    H100/H800, *approx.*); the profile's GEMMs and attention, measured at its ``measured_clock_mhz``
    (1,980 MHz on H100), take ``measured / clock_mhz`` of their time
    (netsim.calibration.profiles, "SM clock")."""


class AcceleratorSpec(SpecModel):
    """The GPU/NPU model: compute peaks and memory, used by the roofline and reports."""

    name: str = Field(min_length=1)
    role: Literal["gpu", "npu"] = "gpu"
    peak_flops: dict[str, Flops] = Field(min_length=1)
    """Dense peak per data type, e.g. ``{bf16: 989TFLOPS, fp8: 1979TFLOPS}`` (FLOP/s)."""
    memory_bandwidth: Bandwidth
    """HBM bandwidth in bytes/s."""
    memory: Bytes
    """HBM capacity in bytes."""
    compute: ComputeSpec | None = None
    """The compute model (measured kernel table profile); None: datasheet roofline."""
    sms: int | None = Field(default=None, ge=2)
    """Streaming multiprocessors (NVIDIA) the compute kernels run on; needed by a workload whose
    communication kernels hold some of them (``overlap.comm_sms``)."""


class NicSpec(SpecModel):
    """One back-end (rail) NIC per accelerator: ``n<k>.nic<i>`` serves ``n<k>.g<i>``."""

    bandwidth: Bandwidth
    """Port speed per direction (the NIC-to-leaf cable)."""
    latency: Duration = 0.0
    """Processing latency of the NIC (node attribute ``latency_s``)."""
    attach: Literal["pcie", "integrated"] = "pcie"
    """``pcie``: a PCIe link accelerator-NIC; ``integrated``: on-chip port (Ascend)."""
    pcie_bandwidth: Bandwidth | None = None
    """Accelerator-NIC PCIe link per direction (``attach: pcie``); default: the NIC bandwidth."""
    pcie_latency: Duration = 0.0
    """Latency of the accelerator-NIC link."""


class HostNicSpec(SpecModel):
    """Front-end NICs of the host: ``n<k>.hnic<j>``, attached to host ``n<k>``."""

    count: int = Field(1, ge=1, le=MAX_PORTS_PER_NODE)
    bandwidth: Bandwidth
    latency: Duration = 0.0
    pcie_bandwidth: Bandwidth | None = None
    """Host-NIC PCIe link per direction; default: the NIC bandwidth."""
    pcie_latency: Duration = 0.0


class _NodeCommon(SpecModel):
    accelerators: int = Field(8, ge=1, le=MAX_ACCELERATORS_PER_NODE)
    """Accelerators per server."""
    nic: NicSpec | None = None
    """Rail NICs (required for a back-end fabric)."""
    host_nics: HostNicSpec | None = None
    """Host NICs (required for a front-end network)."""


class NVSwitchNodeSpec(_NodeCommon):
    """GPUs joined by NVSwitches, modelled as one switch ``n<k>.nvsw``.

    Each GPU reaches the host through its own PCIe switch ``n<k>.pcie<i>``.
    """

    kind: Literal["nvswitch"]
    nvlink_bandwidth: Bandwidth
    """NVLink bandwidth per GPU per direction (all its links together), e.g. 450GB/s."""
    nvlink_latency: Duration = 0.0
    """Latency of the GPU-NVSwitch link."""
    nvswitch_latency: Duration = 0.0
    """Forwarding latency of the NVSwitch."""
    pcie_bandwidth: Bandwidth
    """GPU-PCIe-switch link per direction (the GPU's x16 link)."""
    pcie_latency: Duration = 0.0
    pcie_switch_latency: Duration = 0.0
    host_bandwidth: Bandwidth | None = None
    """PCIe-switch-host link per direction; default: ``pcie_bandwidth``."""


class HCCSNodeSpec(_NodeCommon):
    """Ascend server: groups of NPUs, each group a full mesh of HCCS links (Atlas 800).

    Each group hangs off a PCIe switch ``n<k>.pcie<g>``; group switches are joined pairwise by
    an inter-group PCIe link and the host attaches to every group switch.
    """

    kind: Literal["hccs"]
    group_size: int = Field(8, ge=1, le=MAX_ACCELERATORS_PER_NODE)
    """NPUs per HCCS full-mesh group (must divide ``accelerators``)."""
    hccs_bandwidth: Bandwidth
    """Bandwidth of one HCCS link (between two NPUs), per direction."""
    hccs_latency: Duration = 0.0
    pcie_bandwidth: Bandwidth
    """NPU-PCIe-switch link per direction (e.g. PCIe 4.0 x16)."""
    pcie_latency: Duration = 0.0
    pcie_switch_latency: Duration = 0.0
    inter_group_bandwidth: Bandwidth | None = None
    """Link between two group PCIe switches, per direction; default: ``pcie_bandwidth``."""
    host_bandwidth: Bandwidth | None = None
    """Host-PCIe-switch link per direction; default: ``pcie_bandwidth``."""


class PCIeNodeSpec(_NodeCommon):
    """Accelerators under PCIe switches only (no NVLink/HCCS); switches joined pairwise."""

    kind: Literal["pcie"]
    accelerators_per_switch: PositiveInt = 4
    """Accelerators under one PCIe switch ``n<k>.pcie<j>`` (must divide ``accelerators``)."""
    pcie_bandwidth: Bandwidth
    """Accelerator-switch link per direction."""
    pcie_latency: Duration = 0.0
    pcie_switch_latency: Duration = 0.0
    inter_switch_bandwidth: Bandwidth | None = None
    """Link between two PCIe switches (through the root complex); default: ``pcie_bandwidth``."""
    host_bandwidth: Bandwidth | None = None
    """Host-switch link per direction; default: ``pcie_bandwidth``."""


NodeSpec = Annotated[NVSwitchNodeSpec | HCCSNodeSpec | PCIeNodeSpec, Field(discriminator="kind")]


class BackendStorageSpec(SpecModel):
    """Storage targets ``bstorage<i>`` on the back-end fabric (round-robin over a tier)."""

    count: int = Field(1, ge=1, le=MAX_PORTS_PER_NODE)
    bandwidth: Bandwidth
    """Port speed of one target per direction (one port per plane in multi-plane fabrics)."""
    latency: Duration | None = None
    """Latency of the storage cable; default: ``backend.link_latency``."""
    attach: Literal["leaf", "spine", "core"] = "spine"


class _FabricCommon(SpecModel):
    link_class: Literal["ib", "roce"] = "ib"
    link_latency: Duration = 0.0
    """Latency of every fabric cable (NIC-leaf, leaf-spine, spine-core)."""
    switch_latency: Duration = 0.0
    """Forwarding latency of every fabric switch."""
    storage: BackendStorageSpec | None = None


class _TwoTier(_FabricCommon):
    nodes_per_leaf: PositiveInt
    """Servers under one leaf (per rail / per plane for rail-optimized / multi-plane)."""
    oversubscription: Ratio = 1.0
    """Leaf downlink capacity / uplink capacity (1 = non-blocking)."""
    spines: PositiveInt | None = None
    """Spine switches (per plane); default: one per leaf uplink port of the fullest leaf."""


class SingleSwitchFabricSpec(_FabricCommon):
    """Every rail NIC on one switch ``leaf0``."""

    fabric: Literal["single-switch"]


class LeafSpineFabricSpec(_TwoTier):
    """Two-tier leaf-spine: all NICs of ``nodes_per_leaf`` servers on a leaf; every leaf on every spine."""

    fabric: Literal["leaf-spine"]


class RailOptimizedFabricSpec(_TwoTier):
    """Rail-optimised: NIC i of a group's servers on rail i's leaf ``r<i>.leaf<j>``; spines join rails."""

    fabric: Literal["rail-optimized"]


class MultiPlaneFabricSpec(_TwoTier):
    """One independent leaf-spine fabric per NIC index (``p<i>.leaf<j>``, ``p<i>.spine<s>``)."""

    fabric: Literal["multi-plane"]


class FatTreeFabricSpec(_FabricCommon):
    """Three-tier fat-tree: leaves in pods, each pod's spines joined by core switches.

    Spine ``j`` of every pod connects to core group ``j`` (``cores / spines_per_pod`` cores).
    """

    fabric: Literal["fat-tree"]
    nodes_per_leaf: PositiveInt
    leaves_per_pod: PositiveInt
    oversubscription: Ratio = 1.0
    """Leaf tier: downlink / uplink capacity."""
    core_oversubscription: Ratio = 1.0
    """Spine tier: downlink / uplink capacity."""
    spines_per_pod: PositiveInt | None = None
    """Default: one per leaf uplink port of the fullest leaf."""
    cores: PositiveInt | None = None
    """A multiple of ``spines_per_pod``; default: ``spines_per_pod``."""


BackendSpec = Annotated[
    SingleSwitchFabricSpec | LeafSpineFabricSpec | RailOptimizedFabricSpec | MultiPlaneFabricSpec | FatTreeFabricSpec,
    Field(discriminator="fabric"),
]


class FrontendStorageSpec(SpecModel):
    """Storage targets ``storage<i>`` on the front-end network (round-robin over a tier)."""

    count: int = Field(1, ge=1, le=MAX_PORTS_PER_NODE)
    bandwidth: Bandwidth
    """Port speed of one target per direction."""
    latency: Duration | None = None
    """Latency of the storage cable; default: ``frontend.link_latency``."""
    attach: Literal["leaf", "spine"] = "leaf"


class _FrontendCommon(SpecModel):
    link_latency: Duration = 0.0
    switch_latency: Duration = 0.0
    storage: FrontendStorageSpec | None = None


class SingleSwitchFrontendSpec(_FrontendCommon):
    """Every host NIC and storage target on one Ethernet switch ``fe.leaf0``."""

    fabric: Literal["single-switch"]


class LeafSpineFrontendSpec(_FrontendCommon):
    """Ethernet leaf-spine: the host NICs of ``hosts_per_leaf`` servers per leaf ``fe.leaf<j>``."""

    fabric: Literal["leaf-spine"]
    hosts_per_leaf: PositiveInt
    oversubscription: Ratio = 1.0
    spines: PositiveInt | None = None


FrontendSpec = Annotated[SingleSwitchFrontendSpec | LeafSpineFrontendSpec, Field(discriminator="fabric")]


class CollectivesSpec(SpecModel):
    """How collectives run on this cluster: the cost model and what the collective library
    (NCCL, or HCCL approximated by NCCL's model) needs to know about the machine.

    See :mod:`netsim.collectives.cost` and :mod:`netsim.collectives.nccl`.
    """

    cost_model: str = "nccl"
    """``nccl`` (NCCL's tuner, latencies and protocols) or ``ideal`` (the wire bound)."""
    library: Literal["nccl", "hccl"] = "nccl"
    """The vendor library; ``hccl`` runs NCCL's model with the constants marked approx."""
    arch: Literal["volta", "ampere", "hopper", "blackwell"] = "hopper"
    """NCCL's architecture class of the accelerator (its tables are per class)."""
    host_cpu: Literal["intel", "amd", "other"] = "intel"
    """Host CPU vendor: NCCL's LL bandwidth limit and network overhead across nodes depend on it."""
    nvls: bool = False
    """NVLink SHARP available (Hopper or later GPUs on third-generation NVSwitches)."""
    collnet: bool = False
    """CollNet / InfiniBand SHARP enabled (SHARP switches and NCCL's plugin)."""
    collnet_heads: int | None = Field(default=None, ge=1)
    """NICs per node CollNet uses (default: the group's)."""
    ll128: bool = True
    """LL128 allowed (NCCL enables it only over NVLink; this can only switch it off)."""
    latency_scale: float = Field(default=1.0, gt=0)
    """Multiplier on every library latency (what ``netsim calibrate nccl`` fits)."""
    routing: Literal["shortest", "ecmp", "ecmp-pair", "spray", "pxn", "dmodk", "dmodk-pxn"] = "ecmp"
    """The network path policy the library's traffic takes by default (NCCL on NVSwitch servers
    with rail NICs: ``pxn``, cross-rail traffic first crosses NVLink to the destination's rail)."""
    qps_per_connection: int = Field(default=1, ge=1, le=128)
    """Queue pairs per connection between two devices (NCCL's ``NCCL_IB_QPS_PER_CONNECTION``,
    default 1; Meta's NCCLX for Llama 3: 16, balanced by Enhanced-ECMP): under a hashing path
    policy (``ecmp``, ``ecmp-pair``, ``pxn``) each queue pair is hashed onto its own path with an
    equal share of the bytes (netsim.network.path_policy)."""
    net_latency_us: float = Field(default=0.0, ge=0)
    """Extra network latency NCCL adds per inter-node step (``graph->latencyInter``), us."""
    constants: dict[str, Any] = Field(default_factory=dict)
    """Overrides of NCCL's constants (``netsim/data/nccl/tuner.yaml``), same keys."""


LinkClassName = Literal["nvlink", "hccs", "pcie", "ib", "roce", "ethernet", "generic"]


class DegradedLinkSpec(SpecModel):
    """Links running below their rate: every link between a device matching ``a`` and one
    matching ``b`` (shell-style patterns over device names, e.g. ``n1.nic3`` and ``leaf*``; both
    directions) carries ``bandwidth`` times its achieved rate (a port that trained down to a lower
    speed, a flapping cable, a congested uplink).  NCCL's tuner still sees the nominal links."""

    a: str = Field(min_length=1)
    b: str = "*"
    bandwidth: float = Field(gt=0, le=1)
    """Fraction of the link's achieved rate that is left."""


class SlowDeviceSpec(SpecModel):
    """Accelerators computing below their speed (a straggler: throttled clocks, a degraded HBM
    stack): every accelerator matching ``device`` (a shell-style pattern, e.g. ``n2.g5``) runs
    its kernels at ``speed`` times the rate the compute model gives."""

    device: str = Field(min_length=1)
    speed: float = Field(gt=0, le=1)


class _Faults(SpecModel):
    """What runs below its nominal rate (netsim.topology.faults)."""

    degraded_links: list[DegradedLinkSpec] = Field(default_factory=list)
    slow_devices: list[SlowDeviceSpec] = Field(default_factory=list)


class TemplatedTopologySpec(_Faults):
    """A cluster of ``num_nodes`` identical servers with a back-end and a front-end fabric."""

    name: str = Field(min_length=1)
    description: str = ""
    num_nodes: int = Field(1, ge=1, le=MAX_NODES)
    accelerator: AcceleratorSpec
    node: NodeSpec
    backend: BackendSpec | None = None
    frontend: FrontendSpec | None = None
    collectives: CollectivesSpec = Field(default_factory=CollectivesSpec)
    efficiency: dict[LinkClassName, Annotated[float, Field(gt=0, le=1)]] = Field(default_factory=dict)
    """Achieved fraction of line rate per link class (payload after headers and protocol); the
    ``nccl`` cost model runs links at it, ``ideal`` at line rate."""


NodeKind = Literal["accelerator", "nic", "host", "switch", "storage"]
Network = Literal["node", "backend", "frontend"]
LinkClass = Literal["nvlink", "hccs", "pcie", "ib", "roce", "ethernet", "generic"]


class ExplicitNodeSpec(SpecModel):
    """One device of an explicit graph; attributes as in :mod:`netsim.topology.model`."""

    name: str = Field(min_length=1)
    kind: NodeKind
    role: str | None = None
    """Default by kind: gpu, rail-nic, host, switch, storage."""
    node: int = Field(-1, ge=-1)
    index: int = Field(-1, ge=-1)
    network: Network | None = None
    """Default: ``node`` for accelerators and hosts, ``backend`` otherwise."""
    latency: Duration = 0.0
    rail: int = Field(-1, ge=-1)
    plane: int = Field(-1, ge=-1)
    nic: str = ""
    """For accelerators: the NIC for inter-node traffic; default ``n<node>.nic<index>`` if present."""
    tier: int | None = Field(None, ge=0)
    """Default: 1 for switches outside a server, 0 otherwise."""


class ExplicitLinkSpec(SpecModel):
    """A cable between ``a`` and ``b`` (both directions unless ``directed: true``)."""

    a: str = Field(min_length=1)
    b: str = Field(min_length=1)
    bandwidth: Bandwidth
    """Per direction."""
    latency: Duration = 0.0
    link_class: LinkClass = Field("generic", alias="class")
    network: Network | None = None
    """Default: ``node`` if both ends are in the same server, else the fabric's network."""
    tier: str | None = None
    """Default: the link class."""
    cost: float | None = Field(None, gt=0, allow_inf_nan=False)
    """Routing cost (paths of least total cost are taken; ECMP among equal ones).  Default:
    100 Gb/s over the bandwidth, OSPF-style (a 400 Gb/s link costs 0.25)."""
    directed: bool = False


class ExplicitTopologySpec(_Faults):
    """A topology given as a list of devices and links."""

    name: str = Field(min_length=1)
    description: str = ""
    accelerator: AcceleratorSpec | None = None
    """Peak FLOPS and memory of the accelerators: needed by training runs, not by ``netsim flows``."""
    nodes: list[ExplicitNodeSpec] = Field(min_length=1)
    links: list[ExplicitLinkSpec] = Field(default_factory=list)
    collectives: CollectivesSpec = Field(default_factory=CollectivesSpec)
    efficiency: dict[LinkClassName, Annotated[float, Field(gt=0, le=1)]] = Field(default_factory=dict)


TopologySpec = TemplatedTopologySpec | ExplicitTopologySpec


def check_topology_spec(spec: TopologySpec, *, source: str | None) -> None:
    """Cross-field rules that a single field cannot express; raise SpecError naming the field."""
    if isinstance(spec, ExplicitTopologySpec):
        _check_explicit(spec, source)
        return
    node = spec.node
    if isinstance(node, HCCSNodeSpec) and node.accelerators % node.group_size:
        raise SpecError(
            f"must divide node.accelerators ({node.accelerators}), got {node.group_size}",
            source=source,
            field="node.group_size",
        )
    if isinstance(node, PCIeNodeSpec) and node.accelerators % node.accelerators_per_switch:
        raise SpecError(
            f"must divide node.accelerators ({node.accelerators}), got {node.accelerators_per_switch}",
            source=source,
            field="node.accelerators_per_switch",
        )
    if node.nic is not None and node.nic.attach == "integrated" and node.nic.pcie_bandwidth is not None:
        raise SpecError(
            "only used with node.nic.attach: pcie (an integrated NIC has no PCIe link)",
            source=source,
            field="node.nic.pcie_bandwidth",
        )
    backend = spec.backend
    if backend is not None and node.nic is None:
        raise SpecError("a back-end fabric needs rail NICs: add node.nic", source=source, field="node.nic")
    if backend is None and spec.num_nodes > 1:
        raise SpecError(
            f"required when num_nodes > 1 (got num_nodes={spec.num_nodes}); servers need a back-end fabric",
            source=source,
            field="backend",
        )
    if isinstance(backend, FatTreeFabricSpec):
        if backend.cores is not None and backend.spines_per_pod is None:
            raise SpecError(
                "set backend.spines_per_pod too (cores must be a multiple of it)", source=source, field="backend.cores"
            )
        if backend.cores is not None and backend.spines_per_pod and backend.cores % backend.spines_per_pod:
            raise SpecError(
                f"must be a multiple of spines_per_pod ({backend.spines_per_pod}), got {backend.cores}",
                source=source,
                field="backend.cores",
            )
    if backend is not None and backend.storage is not None:
        attach = backend.storage.attach
        if attach == "core" and not isinstance(backend, FatTreeFabricSpec):
            raise SpecError(
                f"'core' needs backend.fabric: fat-tree (this fabric is {backend.fabric}); use leaf or spine",
                source=source,
                field="backend.storage.attach",
            )
        if attach == "spine" and isinstance(backend, SingleSwitchFabricSpec):
            raise SpecError(
                "a single-switch fabric has no spines; use leaf", source=source, field="backend.storage.attach"
            )
    frontend = spec.frontend
    if frontend is not None and node.host_nics is None:
        raise SpecError(
            "a front-end network needs host NICs: add node.host_nics", source=source, field="node.host_nics"
        )
    if (
        frontend is not None
        and frontend.storage is not None
        and frontend.storage.attach == "spine"
        and isinstance(frontend, SingleSwitchFrontendSpec)
    ):
        raise SpecError(
            "a single-switch front-end has no spines; use leaf", source=source, field="frontend.storage.attach"
        )


def _check_explicit(spec: ExplicitTopologySpec, source: str | None) -> None:
    names: dict[str, int] = {}
    for i, n in enumerate(spec.nodes):
        if n.name in names:
            raise SpecError(
                f"duplicate device name {n.name!r} (also nodes.{names[n.name]})", source=source, field=f"nodes.{i}.name"
            )
        names[n.name] = i
    if not any(n.kind == "accelerator" for n in spec.nodes):
        raise SpecError("needs at least one device of kind accelerator", source=source, field="nodes")
    seen: dict[tuple[str, str], int] = {}
    for i, link in enumerate(spec.links):
        for end in ("a", "b"):
            name = getattr(link, end)
            if name not in names:
                known = ", ".join(sorted(names)[:8]) + (", ..." if len(names) > 8 else "")
                raise SpecError(
                    f"unknown device {name!r}; devices are listed under nodes: ({known})",
                    source=source,
                    field=f"links.{i}.{end}",
                )
        if link.a == link.b:
            raise SpecError(f"a link from {link.a!r} to itself", source=source, field=f"links.{i}.b")
        pairs = [(link.a, link.b)] if link.directed else [(link.a, link.b), (link.b, link.a)]
        for pair in pairs:
            if pair in seen:
                raise SpecError(
                    f"duplicate link {pair[0]} -> {pair[1]} (also links.{seen[pair]}); "
                    "merge parallel cables into one link with their total bandwidth",
                    source=source,
                    field=f"links.{i}",
                )
            seen[pair] = i


def parse_topology_spec(
    data: Any, *, source: str | None, overrides: Sequence[str] = (), num_nodes: int | None = None
) -> TopologySpec:
    """Validate plain data (a parsed YAML mapping) as a topology spec.

    Args:
        data: the mapping read from YAML.
        source: where it came from, for messages.
        overrides: ``key=value`` items applied before validation.
        num_nodes: the server count to use instead of the file's (templated specs only).

    Raises:
        SpecError: schema or cross-field error, naming the file (or override) and the field.
    """
    if not isinstance(data, dict):
        raise SpecError("the top level must be a mapping of keys to values", source=source)
    data = apply_overrides(data, overrides)
    explicit = "links" in data or isinstance(data.get("nodes"), list)
    if explicit:
        if num_nodes is not None:
            raise SpecError(
                "an explicit graph (nodes: / links:) fixes its servers; --nodes does not apply", source=source
            )
        spec: TopologySpec = validate_model(ExplicitTopologySpec, data, source=source, overrides=overrides)
    else:
        if num_nodes is not None:
            if isinstance(num_nodes, bool) or not isinstance(num_nodes, int) or num_nodes < 1:
                raise SpecError(f"must be an integer >= 1 (got {num_nodes!r})", source="--nodes")
            if num_nodes > MAX_NODES:
                raise SpecError(f"at most {MAX_NODES:,} servers (got {num_nodes:,})", source="--nodes")
            item = override_for("num_nodes", overrides)
            if item is not None and data.get("num_nodes") != num_nodes:
                raise SpecError(
                    f"sets num_nodes, but the servers are also given as {num_nodes} (--nodes or a "
                    "scenario's nodes); give one",
                    source=f"--set {item}",
                )
            data["num_nodes"] = num_nodes
        spec = validate_model(TemplatedTopologySpec, data, source=source, overrides=overrides)
    try:
        check_topology_spec(spec, source=source)
    except SpecError as exc:
        item = override_for(exc.field, overrides) if exc.field else None
        if item is not None:
            raise SpecError(exc.message, source=f"--set {item}", field=exc.field) from None
        raise
    return spec


def load_topology_spec(
    path: str | Path, *, overrides: Sequence[str] = (), num_nodes: int | None = None, source: str | None = None
) -> TopologySpec:
    """Read and validate a topology YAML file (see :func:`parse_topology_spec`)."""
    data = load_mapping(path)
    return parse_topology_spec(data, source=source or str(path), overrides=overrides, num_nodes=num_nodes)
