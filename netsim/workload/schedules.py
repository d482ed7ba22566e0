"""Pipeline schedules: the order of forward (F), backward (B) and weight-gradient (W) work per stage.

A schedule is a small class in the registry :data:`SCHEDULES`, keyed by the name used in YAML.
It answers these questions, all pure data (no simulation):

* :meth:`Schedule.order`: the list of :class:`Action` a pipeline stage executes, in order;
* :meth:`Schedule.virtual_stage`: which block of layers a (stage, chunk) holds;
* :meth:`Schedule.locate`: on which (stage, chunk) micro-batch ``mb`` runs virtual stage ``vs``
  (the data dependencies between stages follow from it);
* :meth:`Schedule.replica_stages`: which stages hold the same blocks (their ranks reduce the
  gradients together: DualPipe keeps every block on two stages);
* :meth:`Schedule.work`: the order as units of work (an action, or an overlapped F&B pair),
  each saying whether it computes its chunk's last weight gradients.

Actions: ``F`` forward, ``B`` backward (input gradient, and the weight gradient too unless
``split_w``), ``W`` a deferred weight gradient (zero-bubble / DualPipe).  ``overlap=True`` on an
F marks it as the forward half of a DualPipe "F&B" pair with the B that follows: the op-graph
builder interleaves their layers so that one micro-batch's all-to-all hides under the other's
compute.

Schedules (docs/modelling.md, Pipeline schedules; ``m`` micro-batches, ``p`` stages, ``v`` chunks per stage):

==================  =========================================================================
``gpipe``           all forwards, then all backwards; bubble (p-1)(F+B)
``1f1b``            p-1-s warm-up forwards, then one-forward-one-backward; bubble (p-1)(F+B)
``interleaved-1f1b``  Megatron's interleaved schedule with ``v`` chunks per stage (stage s holds
                    virtual stages s, s+p, ...); bubble (p-1)(F+B)/v; needs m % p == 0
``dualpipe``        DeepSeek-V3 DualPipe (deepseek-ai/DualPipe ``DualPipe.step``): stage s holds
                    blocks s and p-1-s, half of the micro-batches flow each way, F&B overlap and
                    zero-bubble W in the ramps; needs p even and m even, m >= 2p
``zb-h1``           Zero Bubble ZB-H1 (Qi et al., arXiv 2401.10241, "ZB1P"): 1F1B with every
                    backward split into ``B`` (input gradient) and ``W`` (weight gradient); stage
                    s runs its ``W`` s micro-batches behind its ``B`` so that every stage keeps
                    p micro-batches in flight (1F1B's peak) and the late ``W`` fill the
                    cool-down; bubble (p-1)(F+B-2W) with B the whole backward (alias ``zb1p``)
==================  =========================================================================
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import deque
from dataclasses import dataclass
from typing import ClassVar, Literal

from netsim.errors import WorkloadError
from netsim.registry import Registry

__all__ = [
    "SCHEDULES",
    "Action",
    "DualPipe",
    "GPipe",
    "Interleaved1F1B",
    "OneFOneB",
    "Schedule",
    "Work",
    "ZeroBubbleH1",
    "final_weight_actions",
    "get_schedule",
    "register_schedule",
]


@dataclass(frozen=True)
class Action:
    """One unit of pipeline work on a stage.

    Attributes:
        kind: ``F`` forward, ``B`` backward, ``W`` deferred weight gradient.
        microbatch: micro-batch index (0-based, over the whole step).
        chunk: model chunk on this stage (0 unless interleaved / DualPipe).
        split_w: for ``B``: the weight gradient is deferred to a later ``W``.
        overlap: for ``F``: overlapped with the ``B`` right after it (DualPipe F&B; Megatron-Core's
            combined 1F1B).
    """

    kind: Literal["F", "B", "W"]
    microbatch: int
    chunk: int = 0
    split_w: bool = False
    overlap: bool = False


@dataclass(frozen=True)
class Work:
    """A unit of a stage's work: one action, or a DualPipe F&B pair run overlapped.

    Attributes:
        actions: the action, or the overlapped forward and backward.
        final: per action, whether it computes the last weight gradients of its chunk (the
            gradients of the last micro-batch: their data-parallel reduction may start).
    """

    actions: tuple[Action, ...]
    final: tuple[bool, ...]


def final_weight_actions(order: list[Action]) -> dict[int, int]:
    """For every chunk, the index in ``order`` of the action that computes its last weight
    gradients (a ``W``, or a ``B`` that does not defer them)."""
    out: dict[int, int] = {}
    for i, a in enumerate(order):
        if a.kind == "W" or (a.kind == "B" and not a.split_w):
            out[a.chunk] = i
    return out


class Schedule(ABC):
    """A pipeline schedule (subclass, set ``name``, decorate with :func:`register_schedule`)."""

    name: ClassVar[str]
    #: other spellings of the name (accepted, not listed)
    aliases: ClassVar[tuple[str, ...]] = ()

    def __init__(self, pp: int, microbatches: int, virtual_chunks: int = 1, *, a2a_overlap: bool = False) -> None:
        self.pp = pp
        self.m = microbatches
        self.v = virtual_chunks
        #: Megatron-Core's combined 1F1B: one more warm-up forward, then every steady-state
        #: forward runs overlapped with the backward after it (``overlap.ep_a2a_overlap``)
        self.a2a_overlap = a2a_overlap

    def combines_1f1b(self) -> bool:
        """Whether Megatron-Core runs its combined 1F1B (``overlap.ep_a2a_overlap``) on this
        schedule at these sizes; none but the two below."""
        return False

    def validate(self, source: str | None = None) -> None:  # noqa: B027 - optional hook
        """Raise WorkloadError (naming the field) if the sizes do not suit the schedule."""

    @property
    def chunks_per_stage(self) -> int:
        return 1

    @property
    def num_virtual_stages(self) -> int:
        """Blocks of layers the model is cut into."""
        return self.pp * self.chunks_per_stage

    def virtual_stage(self, stage: int, chunk: int) -> int:
        """The block of layers held by ``chunk`` of ``stage``."""
        return chunk * self.pp + stage

    def locate(self, microbatch: int, vstage: int) -> tuple[int, int]:
        """``(stage, chunk)`` that runs virtual stage ``vstage`` for ``microbatch``."""
        return vstage % self.pp, vstage // self.pp

    def path(self, microbatch: int) -> list[int]:
        """Virtual stages ``microbatch`` passes through, in forward order."""
        return list(range(self.num_virtual_stages))

    def replica_stages(self, stage: int) -> tuple[int, ...]:
        """The stages holding the same blocks of layers as ``stage`` (whose ranks reduce their
        gradients together): ``stage`` alone unless the schedule places a block twice."""
        return (stage,)

    @abstractmethod
    def order(self, stage: int) -> list[Action]:
        """The actions of ``stage`` in execution order."""

    def work(self, stage: int) -> list[Work]:
        """:meth:`order` as units of work: an action, or a forward marked ``overlap`` with the
        backward right after it (run together, their layers interleaved); each action says
        whether it computes the last weight gradients of its chunk (:func:`final_weight_actions`)."""
        order = self.order(stage)
        final = final_weight_actions(order)
        out: list[Work] = []
        i = 0
        while i < len(order):
            a = order[i]
            n = 2 if a.kind == "F" and a.overlap and i + 1 < len(order) and order[i + 1].kind == "B" else 1
            items = order[i : i + n]
            out.append(Work(tuple(items), tuple(final.get(b.chunk) == i + j for j, b in enumerate(items))))
            i += n
        return out


#: Registry of pipeline schedules by YAML name (``schedule.name``).
SCHEDULES: Registry[type[Schedule]] = Registry("schedule", field="schedule.name")


def register_schedule(cls: type[Schedule]) -> type[Schedule]:
    """Class decorator: register a :class:`Schedule` subclass under its ``name`` (and its
    ``aliases``)."""
    SCHEDULES.add(cls.name, cls, aliases=cls.aliases)
    return cls


def get_schedule(
    name: str,
    pp: int,
    microbatches: int,
    virtual_chunks: int = 1,
    *,
    a2a_overlap: bool = False,
    source: str | None = None,
) -> Schedule:
    """Instantiate and validate the schedule ``name`` (a one-line error for an unknown name);
    ``a2a_overlap``: Megatron-Core's combined 1F1B (``overlap.ep_a2a_overlap``)."""
    cls = SCHEDULES.get(name, source=source)
    if virtual_chunks > 1 and cls.name != "interleaved-1f1b":
        raise WorkloadError(
            f"virtual_chunks > 1 needs schedule interleaved-1f1b (got {name})",
            source=source,
            field="schedule.virtual_chunks",
        )
    sched = cls(pp, microbatches, virtual_chunks, a2a_overlap=a2a_overlap)
    if a2a_overlap and not sched.combines_1f1b():
        raise WorkloadError(
            f"the combined 1F1B runs on interleaved-1f1b, or on 1f1b with pp 1 (got {cls.name} with pp {pp}), "
            "as in Megatron-Core",
            source=source,
            field="overlap.ep_a2a_overlap",
        )
    sched.validate(source)
    return sched


@register_schedule
class GPipe(Schedule):
    """All forwards, then all backwards (Huang et al., 2019)."""

    name = "gpipe"

    def order(self, stage: int) -> list[Action]:
        return [Action("F", i) for i in range(self.m)] + [Action("B", i) for i in range(self.m)]


@register_schedule
class OneFOneB(Schedule):
    """PipeDream-flush / Megatron 1F1B: warm-up, steady one-forward-one-backward, cool-down."""

    name = "1f1b"

    def combines_1f1b(self) -> bool:
        return self.pp == 1  # Megatron-Core: without virtual stages, only without a pipeline

    def order(self, stage: int) -> list[Action]:
        warm = min(self.pp - stage - 1 + int(self.a2a_overlap), self.m)
        out = [Action("F", i) for i in range(warm)]
        for i in range(self.m - warm):
            out.append(Action("F", warm + i, overlap=self.a2a_overlap))
            out.append(Action("B", i))
        out += [Action("B", i) for i in range(self.m - warm, self.m)]
        return out


@register_schedule
class Interleaved1F1B(Schedule):
    """Megatron-LM interleaved 1F1B (Narayanan et al., SC'21) with ``v`` model chunks per stage."""

    name = "interleaved-1f1b"

    def combines_1f1b(self) -> bool:
        return True

    @property
    def chunks_per_stage(self) -> int:
        return self.v

    def validate(self, source: str | None = None) -> None:
        if self.m % self.pp:
            raise WorkloadError(
                f"interleaved-1f1b needs num_microbatches to be a multiple of pp = {self.pp} (got {self.m})",
                source=source,
                field="num_microbatches",
            )

    def _chunk(self, k: int, forward: bool) -> int:
        c = (k % (self.pp * self.v)) // self.pp
        return c if forward else self.v - 1 - c

    def _mb(self, k: int) -> int:
        return (k // (self.pp * self.v)) * self.pp + k % self.pp

    def order(self, stage: int) -> list[Action]:
        total = self.m * self.v
        # Megatron: with m == pp every micro-batch is a warm-up forward
        warm = total if self.m == self.pp else min((self.pp - stage - 1) * 2 + (self.v - 1) * self.pp, total)
        if self.a2a_overlap:  # combined 1F1B: one more warm-up forward (schedules.py, Megatron-Core)
            warm = min(warm + 1, total)
        out = [Action("F", self._mb(k), self._chunk(k, True)) for k in range(warm)]
        for k in range(total - warm):
            f = warm + k
            out.append(Action("F", self._mb(f), self._chunk(f, True), overlap=self.a2a_overlap))
            out.append(Action("B", self._mb(k), self._chunk(k, False)))
        out += [Action("B", self._mb(k), self._chunk(k, False)) for k in range(total - warm, total)]
        return out


@register_schedule
class DualPipe(Schedule):
    """DeepSeek-V3 DualPipe (arXiv 2412.19437, github.com/deepseek-ai/DualPipe).

    Stage ``s`` holds two blocks: ``s`` (chunk 0, for micro-batches ``0..m/2-1`` flowing from
    stage 0 to p-1) and ``p-1-s`` (chunk 1, for micro-batches ``m/2..m-1`` flowing back).  The
    order transcribes ``DualPipe.step``: eight phases with F&B overlap in the steady state and
    zero-bubble deferred W in the ramps.
    """

    name = "dualpipe"

    def validate(self, source: str | None = None) -> None:
        if self.pp % 2:
            raise WorkloadError(
                f"dualpipe needs an even number of pipeline stages (got pp = {self.pp})",
                source=source,
                field="parallelism.pp",
            )
        if self.m % 2 or self.m < 2 * self.pp:
            raise WorkloadError(
                f"dualpipe needs an even num_microbatches >= 2 * pp = {2 * self.pp} (got {self.m})",
                source=source,
                field="num_microbatches",
            )

    def virtual_stage(self, stage: int, chunk: int) -> int:
        return stage if chunk == 0 else self.pp - 1 - stage

    def replica_stages(self, stage: int) -> tuple[int, ...]:
        """Stage ``s`` and its mirror ``p-1-s`` hold the same two blocks."""
        return (stage, self.pp - 1 - stage)

    def locate(self, microbatch: int, vstage: int) -> tuple[int, int]:
        if microbatch < self.m // 2:
            return vstage, 0
        return self.pp - 1 - vstage, 1

    def order(self, stage: int) -> list[Action]:
        e = _DualPipeOrder(self.pp, self.m, stage)
        e.ramp_up()
        e.steady()
        e.ramp_down()
        return e.out


class _DualPipeOrder:
    """The actions of one DualPipe stage, phase by phase (``DualPipe.step``'s eight steps).

    ``local`` chunk 0/1 is the stage's own view; the second half of the stages swaps the two
    (``local ^ second``).  Backwards with zero bubble (``zb``) queue their deferred ``W``."""

    def __init__(self, pp: int, m: int, stage: int) -> None:
        self.n = pp
        self.half_ranks = pp // 2
        self.half_chunks = m // 2
        self.h = min(stage, pp - 1 - stage)
        self.second = int(stage >= self.half_ranks)
        self.middle = stage in (self.half_ranks - 1, self.half_ranks)
        self.next_f = [0, 0]
        self.next_b = [0, 0]
        self.w_queue: deque[Action] = deque()
        self.out: list[Action] = []

    def _mb(self, phase: int, idx: int) -> int:
        return idx if phase == 0 else self.half_chunks + idx

    def fwd(self, local: int, overlap: bool = False) -> None:
        ph = local ^ self.second
        self.out.append(Action("F", self._mb(ph, self.next_f[ph]), ph, overlap=overlap))
        self.next_f[ph] += 1

    def bwd(self, local: int, zb: bool = False) -> None:
        ph = local ^ self.second
        act = Action("B", self._mb(ph, self.next_b[ph]), ph, split_w=zb)
        self.next_b[ph] += 1
        self.out.append(act)
        if zb:
            self.w_queue.append(Action("W", act.microbatch, ph))

    def fb(self, f_local: int, b_local: int) -> None:
        self.fwd(f_local, overlap=True)
        self.bwd(b_local)

    def weight(self) -> None:
        self.out.append(self.w_queue.popleft())

    def ramp_up(self) -> None:
        """Steps 1-3: nF0, nF0F1, nB1W1F1 (zero bubble)."""
        h, half = self.h, self.half_ranks
        for _ in range((half - h - 1) * 2):
            self.fwd(0)
        for _ in range(h + 1):
            self.fwd(0)
            self.fwd(1)
        for _ in range(half - h - 1):
            self.bwd(1, zb=True)
            self.weight()
            self.fwd(1)

    def steady(self) -> None:
        """Steps 4-5: nF0B1F1B0 (the main phase, F&B overlapped), nB1F1B0."""
        h = self.h
        for i in range(self.half_chunks - self.n + h + 1):
            if i == 0 and self.middle:
                self.fwd(0)
                self.bwd(1)
            else:
                self.fb(0, 1)
            self.fb(1, 0)
        for _ in range(self.half_ranks - h - 1):
            self.bwd(1)
            self.fb(1, 0)

    def ramp_down(self) -> None:
        """Steps 6-8: nB1B0 (second half with zero bubble), nWB0 (zero bubble), nW."""
        h = self.h
        zb = False
        for i in range(h + 1):
            if i == (h + 1) // 2 and h % 2 == 1:
                zb = True
            self.bwd(1, zb=zb)
            if i == (h + 1) // 2 and h % 2 == 0:
                zb = True
            self.bwd(0, zb=zb)
        for _ in range(self.half_ranks - h - 1):
            self.weight()
            self.bwd(0, zb=True)
        while self.w_queue:
            self.weight()


@register_schedule
class ZeroBubbleH1(Schedule):
    """ZB-H1 (Qi et al., "Zero Bubble Pipeline Parallelism", ICLR 2024, arXiv 2401.10241, section
    2.1; REFERENCE.md section 4 "ZB1P").

    1F1B's order (``p-1-s`` warm-up forwards, then one forward one backward) with every backward
    split into ``B`` (input gradient, on the critical path) and a deferred ``W`` (weight
    gradient).  The paper "adjusts the starting points of W depending on the number of warm-up
    micro-batches" so that all stages keep the same number of micro-batches in flight: stage
    ``s`` (``p-1-s`` warm-up forwards) runs each ``W`` ``s`` backwards after its ``B``, which
    holds ``p`` micro-batches' activations at its peak on every stage (1F1B's stage 0), and the
    ``W`` left over fill the cool-down.  With ``T_F = T_B = T_W`` the bubble is a third of
    1F1B's: ``(p-1)(F + B - 2W)`` with ``B`` the whole backward.
    """

    name = "zb-h1"
    aliases = ("zb1p",)

    def order(self, stage: int) -> list[Action]:
        warm = min(self.pp - stage - 1, self.m)
        lag = stage  # W trails B by this many micro-batches
        out = [Action("F", i) for i in range(warm)]
        done = [0, 0]  # backwards, weight passes emitted

        def backward() -> None:
            out.append(Action("B", done[0], split_w=True))
            done[0] += 1
            if done[0] - done[1] > lag:
                out.append(Action("W", done[1]))
                done[1] += 1

        for i in range(self.m - warm):
            out.append(Action("F", warm + i))
            backward()
        for _ in range(warm):
            backward()
        out += [Action("W", w) for w in range(done[1], self.m)]
        return out
