"""Expert layouts: how a training framework lays the experts of a MoE layer out on the ranks.

Inside a pipeline stage the ``dp * tp`` ranks (local index ``l = d * tp + t``, data-parallel
rank ``d``, tensor-parallel rank ``t``) hold the experts; a layout says, for every rank, its
*expert-parallel* (EP) group (the ranks that exchange tokens and hold different experts), its
*expert tensor-parallel* (ETP) group (the ranks that hold shards of the same experts), its
*expert data-parallel* (EDP) group (the ranks holding the same expert shards, which reduce
their gradients), and whether the ranks of a TP group route the same tokens.  It is named in
the workload (``parallelism.expert_layout``, registry :data:`EXPERT_LAYOUTS`):

``megatron`` (default)
    Megatron-Core's MoE parallel folding (Liu et al., arXiv 2504.14960; Megatron-LM
    ``--expert-model-parallel-size``, ``--expert-tensor-parallel-size``): the expert layers have
    their own grid over the stage's ``dp * tp`` ranks, ETP fastest, then EP, then EDP.  With
    sequence parallelism every rank routes its own ``1/tp`` share of the micro-batch.  An expert
    is split over ``expert_tp`` ranks (default 1: whole experts); its tokens are all-gathered in
    the ETP group after the dispatch all-to-all and reduce-scattered before the combine
    (Megatron-Core ``MoEAlltoAllTokenDispatcher``).
``deepspeed``
    DeepSpeed-MoE (``deepspeed.utils.groups``: E + M + D parallelism): an EP group is ``ep``
    consecutive DP ranks at one TP rank (``expert_parallel_group = [0, 2, 4, 6]`` with model
    parallel 2), experts are whole on every rank, the EDP group is the same EP position in the
    other EP groups at the same TP rank.  The TP ranks of a group hold the same tokens (no
    sequence parallelism in the MoE block) and each runs the experts on its copy.
``mindspore``
    MindSpore's MoE (PanGu-Sigma, LocMoE): the expert weights ``[E, h, f]`` are sharded
    ``(ep, 1, mp)`` (``mindspore.nn.transformer`` ``FeedForward``: experts over the expert-parallel
    share of data parallelism, each expert's FFN over the model-parallel group), so ``expert_tp =
    tp``; EP and EDP groups as DeepSpeed's.  The TP ranks hold the same tokens; every rank of a
    TP group needs all the tokens of its experts (its FFN shard) and their partial outputs are
    reduced over the TP group.

In the two *replicated* layouts the all-to-all of a TP group's ``tp`` EP groups is one
collective over ``ep * tp`` consecutive ranks (:meth:`ExpertLayout.a2a_members`): rank ``(k, t)``
(EP position ``k``, TP rank ``t``) sends what its EP group routes to ``(k', t)``, and
``parallelism.expert_alltoall`` says how the TP copies cross it (``replicated``: every rank sends
its own copy; ``groupwise``: LocMoE's group-wise all-to-all, each sends its ``1/tp`` share and the
destination TP group all-gathers them, :mod:`netsim.collectives.groupwise`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

from netsim.errors import WorkloadError
from netsim.registry import Registry

__all__ = [
    "EXPERT_LAYOUTS",
    "DeepSpeedLayout",
    "ExpertLayout",
    "MegatronLayout",
    "MindSporeLayout",
    "make_expert_layout",
]


class ExpertLayout(ABC):
    """The expert groups of one pipeline stage (local rank indices ``0 .. dp * tp - 1``).

    Args:
        dp, tp: the stage's data- and tensor-parallel sizes.
        ep: expert-parallel size (ranks of an EP group).
        etp: expert tensor-parallel size (ranks one expert is split over).
    """

    name: ClassVar[str]
    #: the TP ranks of a group route the same tokens (the MoE block sees them replicated)
    replicated: ClassVar[bool] = False

    def __init__(self, dp: int, tp: int, ep: int, etp: int) -> None:
        self.dp, self.tp, self.ep, self.etp = dp, tp, ep, etp
        self.size = dp * tp

    def check(self, source: str | None) -> None:  # noqa: B027 - optional hook
        """Raise WorkloadError (naming the field) if the sizes do not suit the layout."""

    @abstractmethod
    def ep_members(self, local: int) -> tuple[int, ...]:
        """The EP group of ``local``, in EP-position order."""

    @abstractmethod
    def ep_position(self, local: int) -> int:
        """The position of ``local`` in its EP group (which experts it holds)."""

    @abstractmethod
    def etp_members(self, local: int) -> tuple[int, ...]:
        """The ranks holding the other shards of ``local``'s experts (itself alone if whole)."""

    @abstractmethod
    def edp_members(self, local: int) -> tuple[int, ...]:
        """The ranks holding the same expert shards as ``local`` (gradient reduction)."""

    def a2a_members(self, local: int) -> tuple[int, ...]:
        """The ranks of ``local``'s all-to-all collective: its EP group, or (replicated layouts)
        the ``tp`` EP groups of its TP groups, ordered (EP position, TP rank)."""
        return self.ep_members(local)

    def routed_by(self, local: int) -> int:
        """The rank whose EP group's routing ``local``'s all-to-all carries (the first rank of
        its all-to-all group)."""
        return self.a2a_members(local)[0]

    def _need(self, ok: bool, what: str, source: str | None, field: str = "parallelism.ep") -> None:
        if not ok:
            raise WorkloadError(f"expert_layout {self.name}: {what}", source=source, field=field)


#: Registry of expert layouts by YAML name (``parallelism.expert_layout``).
EXPERT_LAYOUTS: Registry[type[ExpertLayout]] = Registry("expert layout", field="parallelism.expert_layout")


@EXPERT_LAYOUTS.register("megatron")
class MegatronLayout(ExpertLayout):
    """Megatron-Core parallel folding: ETP fastest, then EP, then EDP over the stage's ranks."""

    name = "megatron"

    def check(self, source: str | None) -> None:
        block = self.ep * self.etp
        self._need(
            self.size % block == 0,
            f"ep * expert_tp = {self.ep} * {self.etp} must divide the ranks of a pipeline stage dp * tp = {self.size}",
            source,
        )

    def ep_members(self, local: int) -> tuple[int, ...]:
        block = self.ep * self.etp
        base = local - local % block + local % self.etp
        return tuple(base + k * self.etp for k in range(self.ep))

    def ep_position(self, local: int) -> int:
        return (local // self.etp) % self.ep

    def etp_members(self, local: int) -> tuple[int, ...]:
        base = local - local % self.etp
        return tuple(range(base, base + self.etp))

    def edp_members(self, local: int) -> tuple[int, ...]:
        block = self.ep * self.etp
        return tuple(local % block + j * block for j in range(self.size // block))


class _AcrossDataParallel(ExpertLayout):
    """EP groups of ``ep`` consecutive DP ranks at one TP rank; EDP: the same position at the
    same TP rank in the other EP groups (DeepSpeed and MindSpore)."""

    replicated = True

    def check(self, source: str | None) -> None:
        self._need(
            self.dp % self.ep == 0,
            f"ep = {self.ep} must divide dp = {self.dp} (expert parallelism is carved out of data parallelism)",
            source,
        )

    def ep_members(self, local: int) -> tuple[int, ...]:
        d, t = divmod(local, self.tp)
        d0 = d - d % self.ep
        return tuple((d0 + k) * self.tp + t for k in range(self.ep))

    def ep_position(self, local: int) -> int:
        return (local // self.tp) % self.ep

    def edp_members(self, local: int) -> tuple[int, ...]:
        d, t = divmod(local, self.tp)
        return tuple((d % self.ep + j * self.ep) * self.tp + t for j in range(self.dp // self.ep))

    def a2a_members(self, local: int) -> tuple[int, ...]:
        d = local // self.tp
        d0 = d - d % self.ep
        return tuple(range(d0 * self.tp, (d0 + self.ep) * self.tp))


@EXPERT_LAYOUTS.register("deepspeed")
class DeepSpeedLayout(_AcrossDataParallel):
    """DeepSpeed-MoE: whole experts on every TP rank."""

    name = "deepspeed"

    def check(self, source: str | None) -> None:
        super().check(source)
        self._need(
            self.etp == 1,
            f"experts are whole on every rank (expert_tp 1, got {self.etp})",
            source,
            "parallelism.expert_tp",
        )

    def etp_members(self, local: int) -> tuple[int, ...]:
        return (local,)


@EXPERT_LAYOUTS.register("mindspore")
class MindSporeLayout(_AcrossDataParallel):
    """MindSpore MoE: each expert's FFN split over the TP (model-parallel) group."""

    name = "mindspore"

    def check(self, source: str | None) -> None:
        super().check(source)
        self._need(
            self.etp == self.tp,
            f"experts are split over the model-parallel group (expert_tp = tp = {self.tp}, got {self.etp})",
            source,
            "parallelism.expert_tp",
        )

    def etp_members(self, local: int) -> tuple[int, ...]:
        base = local - local % self.tp
        return tuple(range(base, base + self.tp))


def make_expert_layout(
    name: str, dp: int, tp: int, ep: int, etp: int | None, *, source: str | None = None
) -> ExpertLayout:
    """The layout ``name`` for a stage of ``dp * tp`` ranks (``etp`` None: the layout's default,
    ``tp`` for mindspore, else 1), checked."""
    cls = EXPERT_LAYOUTS.get(name, source=source)
    if etp is None:
        etp = tp if cls is MindSporeLayout else 1
    layout = cls(dp, tp, ep, etp)
    layout.check(source)
    return layout
