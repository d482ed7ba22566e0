"""Collective models: how faithfully a collective's transfers become network flows.

A collective model is a :class:`CollectiveModel` object registered in :data:`COLLECTIVE_MODELS`
under the name specs and the CLI use (``options.collective_model``, ``--collective-model``).  The
executor (:mod:`netsim.collectives.executor`) and the replay never compare names: they ask the
model whether to build stream plans (:attr:`~CollectiveModel.stream_plans`), whether transfers
that start together move as one coflow (:attr:`~CollectiveModel.coflow`,
:meth:`~CollectiveModel.direct_coflow`) and whether the lockstep instances of a collective run
as one united plan (:attr:`~CollectiveModel.unites_instances`).  A model can be passed in as an
object wherever a name is accepted (``run_collective(..., model=Stream())``).

``auto`` is not a model: it is the rule in :mod:`netsim.auto` that picks one of these from the
run's size.  The measured errors below are those of ``netsim/auto.py``'s docstring
(``benchmarks/collective_models.py``, ``benchmarks/auto_model.py``; docs/sections/benchmarks.md).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from netsim.collectives.plan import CollectiveError
from netsim.registry import Registry

if TYPE_CHECKING:
    from netsim.collectives.cost import CollectiveCall

__all__ = [
    "COFLOW_OPS",
    "COLLECTIVE_MODELS",
    "MODELS",
    "Coflow",
    "CollectiveModel",
    "Exact",
    "Stream",
    "collective_model",
]

#: Collectives whose phases the ``coflow`` model merges (their transfers of a phase finish
#: together when the bottleneck drains; pipelined trees and chains are left to the stream plan).
COFLOW_OPS: frozenset[str] = frozenset({"all_to_all", "all_to_allv"})


class CollectiveModel:
    """How a collective's plan is run (the base runs exact plans, flow by flow).

    ``stream_plans``: build the algorithm's stream plan (a ring phase as one flow per ring link)
    instead of its exact plan.  ``coflow``: transfers of an all-to-all(v) (and the point-to-point
    transfers of a lockstep collective) that start together move as one coflow.
    ``unites_instances``: the lockstep instances of a layer collective over disjoint groups run as
    one execution of the union of their plans (stream plans only: the phase release is shared).
    """

    name: ClassVar[str] = ""
    stream_plans: ClassVar[bool] = False
    coflow: ClassVar[bool] = False

    @property
    def unites_instances(self) -> bool:
        """Whether lockstep instances over disjoint groups run as one united plan."""
        return self.stream_plans

    def direct_coflow(self, op: str, call: CollectiveCall) -> bool:
        """Whether collective ``op`` run as ``call`` is one coflow, without building its plan."""
        return self.coflow and op in COFLOW_OPS and call.algo == "direct"

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


#: The collective models by spec name, in the order ``--help`` and error messages list them.
COLLECTIVE_MODELS: Registry[CollectiveModel] = Registry("collective model", field="collective_model")


def _register(cls: type[CollectiveModel]) -> type[CollectiveModel]:
    COLLECTIVE_MODELS.add(cls.name, cls())
    return cls


@_register
class Exact(CollectiveModel):
    """``exact`` (the reference): the algorithm's exact plan, one flow per step, chunk and link.
    Its cost grows with the flows (about 0.1-0.3 ms of one core per flow in a step replay)."""

    name = "exact"


@_register
class Stream(CollectiveModel):
    """``stream``: stream plans, a ring phase as one flow per ring link (a ring costs two engine
    events instead of ``2(n-1)``); replays within 0.3% of exact."""

    name = "stream"
    stream_plans = True


@_register
class Coflow(CollectiveModel):
    """``coflow``: stream plans, and every all-to-all(v) phase as one coflow (one aggregate flow
    that drains when its most loaded link has drained); replays within 0.5% of exact, under ECMP
    a few percent (a coflow keeps a rank pair's path for the step; the LocMoE study's lab-trace
    replays on 8 x ascend-910a: steps +1.3..+2.3%, all-to-all time 3.5-14.5% short,
    ``reports/locmoe/model_check.csv``)."""

    name = "coflow"
    stream_plans = True
    coflow = True


#: The registered collective model names (what specs and ``--collective-model`` accept besides ``auto``).
MODELS: tuple[str, ...] = tuple(COLLECTIVE_MODELS.names())


def collective_model(model: str | CollectiveModel) -> CollectiveModel:
    """The model object for a registered name (or ``model`` itself when it is an object); an
    unknown name is a one-line :class:`CollectiveError` listing the allowed names."""
    if isinstance(model, CollectiveModel):
        return model
    if model not in COLLECTIVE_MODELS:
        raise CollectiveError(
            f"unknown collective model {model!r}; allowed: {', '.join(MODELS)}", field="collective_model"
        )
    return COLLECTIVE_MODELS.get(model)
